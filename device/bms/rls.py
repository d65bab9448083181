# Recursive least squares for the ohmic resistance, as a factor on the calibrated R0.
#
# Across one sample the OCV barely moves, so a current step di shows up as
#   dv = -R0 * di - d(v1 + v2) - d(eta)
# with d(v1 + v2) known from the filter's RC states and d(eta) the calibration's
# Butler-Volmer overpotential (model.kinetic_v; unscaled in the model, so known here):
# without it the kinetic drop of a step is counted as R0 (a factor of ~2.4 on a fresh
# LG M50 whose calibration carries i0, seen). Estimating the factor
# s = R0_true / R0_table (instead of R0 itself) keeps one number valid over SOC and
# temperature; it feeds the filter's R0 and the resistance part of SOH.
# Updates only on excitation (|di| above a gate), with exponential forgetting, and only
# across short samples: over seconds the RC pairs, the diffusion shift and the filter's
# own corrections move the voltage as much as R0 does (10 s samples put the factor near
# 3 on a fresh cell, seen on the PyBaMM LG M50).
from bms import model, ukf

MAX_DT_S = 2.0


class R0Estimator:
    def __init__(self, gate_a=0.5, forget=0.98, p0=0.25, lo=0.3, hi=5.0):
        self.gate_a = gate_a
        self.forget = forget
        self.lo = lo
        self.hi = hi
        self.p0 = p0
        self.reset()

    def reset(self, scale=1.0):
        self.scale = scale
        self.p = self.p0  # variance of the scale estimate
        self.updates = 0
        self.last = None      # (current, voltage, RC voltage) of the previous sample

    def update(self, i_a, v_meas, v_rc, r0_table, dt_s=0.0, est=None):
        """Feed one sample: current, measured voltage, filter's v1+v2 (V), the table R0
        at the present SOC/temperature and the sample's length; est (a CellEstimator)
        gives the kinetic term on a step (its tab is used as scratch). Returns True when
        it updated."""
        last = self.last
        self.last = (i_a, v_meas, v_rc)
        if last is None or not (v_meas == v_meas) or dt_s > MAX_DT_S:
            return False
        di = i_a - last[0]
        if -self.gate_a < di < self.gate_a:
            return False
        drop = -(v_meas - last[1])
        # a voltage that barely moves (or moves the wrong way) on a current step was read
        # before the step reached it (a cycler's row at the instant of the change, a
        # monitor that samples voltage and current in turn): no resistance to learn (the
        # LG M50's 2C discharge end set the factor to its floor for the next charge:
        # held-out 25 degC 2C SOC RMSE 1.54 -> 1.34 %, max 2.99 -> 2.09 %)
        if drop * di < self.lo * r0_table * di * di:
            return False
        y = drop - (v_rc - last[2])
        if est is not None:
            x, tab = est.x, est.tab
            tc = x[ukf.TC]
            model.lookup(est.p, x[ukf.SOC] * 0.01, tc, tab, model.I0 + 1)
            i0 = tab[model.I0]
            y -= model.kinetic_v(i_a, i0, tc) - model.kinetic_v(last[0], i0, tc)
        phi = di * r0_table
        # Scalar RLS with forgetting.
        denom = self.forget + phi * self.p * phi
        k = self.p * phi / denom
        s = self.scale + k * (y - phi * self.scale)
        self.p = (self.p - k * phi * self.p) / self.forget
        if self.p > self.p0:
            self.p = self.p0
        self.scale = self.lo if s < self.lo else (self.hi if s > self.hi else s)
        self.updates += 1
        return True
