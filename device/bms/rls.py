# Recursive least squares for the ohmic resistance, as a factor on the calibrated R0.
#
# Across one sample the OCV barely moves, so a current step di shows up as
#   dv = -R0 * di - d(v1 + v2)
# with d(v1 + v2) known from the filter's RC states. Estimating the factor
# s = R0_true / R0_table (instead of R0 itself) keeps one number valid over SOC and
# temperature; it feeds the filter's R0 and the resistance part of SOH.
# Updates only on excitation (|di| above a gate), with exponential forgetting.


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
        self._last = None

    def update(self, i_a, v_meas, v_rc, r0_table):
        """Feed one sample: current, measured voltage, filter's v1+v2 (V), and the
        table R0 at the present SOC/temperature. Returns True when it updated."""
        last = self._last
        self._last = (i_a, v_meas, v_rc)
        if last is None or not (v_meas == v_meas):
            return False
        di = i_a - last[0]
        if -self.gate_a < di < self.gate_a:
            return False
        y = -(v_meas - last[1]) - (v_rc - last[2])
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
