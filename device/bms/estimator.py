# One cell's estimator: the UKF (through a backend), RLS for R0, SOH and SOP.
# Everything the 100 ms estimator tick needs per cell, with buffers made once.
import math

from bms import backends, model, rls, soh, sop, ukf

# Initial uncertainty (filter units: %, mV, mV, degC, degC, mA).
SIGMA_SOC_REST = 5.0      # SOC from OCV at rest
SIGMA_SOC_LOADED = 15.0   # SOC from a loaded voltage
SIGMA_SOC_GIVEN = 25.0    # a start value given by a person: trust it little
SIGMA0 = (None, 10.0, 10.0, 2.0, 1.0, 50.0)


class CellEstimator:
    def __init__(self, cal, backend=None, cfg=None):
        self.cal = cal
        self.limits = cal["limits"]
        self.backend = backend if backend is not None else backends.make()
        b = self.backend
        self.nominal_ah = cal["cell"]["capacity_ah"]
        self.p = b.alloc(model.pack(cal))
        self.cfg = b.alloc(cfg if cfg is not None else ukf.default_cfg())
        self.cfg0 = [float(v) for v in self.cfg]
        self.x = b.alloc([0.0] * ukf.NX)
        self.P = b.alloc([0.0] * (ukf.NX * ukf.NX))
        self.out = b.alloc([0.0] * ukf.OUT_SIZE)
        self.tab = [0.0] * model.NTAB
        self.rls = rls.R0Estimator()
        self.cap = soh.CapacityEstimator(self.nominal_ah)
        self.ah = 0.0             # charge moved (Ah, discharge positive), for SOH
        self.ready = False
        self.errors = 0
        self.status = ukf.OK
        self.i_dis = [0.0] * len(sop.HORIZONS_S)
        self.i_chg = [0.0] * len(sop.HORIZONS_S)

    # -- start-up -------------------------------------------------------------
    def init(self, soc, temp_c, soc_sigma=None):
        x, P, n = self.x, self.P, ukf.NX
        for k in range(n * n):
            P[k] = 0.0
        x[ukf.SOC] = soc * 100.0
        x[ukf.V1] = 0.0
        x[ukf.V2] = 0.0
        x[ukf.TC] = temp_c
        x[ukf.TS] = temp_c
        x[ukf.BIAS] = 0.0
        sig = list(SIGMA0)
        sig[0] = (soc_sigma * 100.0) if soc_sigma is not None else SIGMA_SOC_GIVEN
        for k in range(n):
            P[k * n + k] = sig[k] * sig[k]
        self.cfg[10] = self.cfg0[10]
        self.ready = True

    def init_from_measurement(self, i_a, v, temp_c):
        """Boot: SOC from the OCV curve, compensating the ohmic drop if under load."""
        model.lookup(self.p, 0.5, temp_c, self.tab)
        r0 = self.tab[model.R0] if i_a >= 0 else self.tab[model.R0C]
        soc = model.soc_from_ocv(self.p, v + r0 * i_a, temp_c, self.tab)
        rest = abs(i_a) < 0.05 * self.nominal_ah
        self.init(soc, temp_c, (SIGMA_SOC_REST if rest else SIGMA_SOC_LOADED) / 100.0)

    # -- the estimator tick ---------------------------------------------------
    def step(self, i_a, v_meas, ts_meas, ta_c, dt_s):
        """One filter step. NaN measurements are skipped; a numerical failure
        re-initialises the filter around its last good SOC with a wide sigma."""
        if not self.ready:
            if v_meas == v_meas and ts_meas == ts_meas:
                self.init_from_measurement(i_a, v_meas, ts_meas)
            return self.status
        if dt_s <= 0.0:
            return self.status
        self.p[model.R0_SCALE] = self.rls.scale
        self.p[model.CAP_AS] = self.capacity_ah() * 3600.0
        soc_before = self.x[ukf.SOC]
        st = self.backend.step(self.x, self.P, self.p, self.cfg, i_a, ta_c, dt_s, v_meas,
                               ts_meas, self.out)
        self.status = st
        if st != ukf.OK:
            self.errors += 1
            t = self.x[ukf.TS] if self.x[ukf.TS] == self.x[ukf.TS] else ta_c
            s = soc_before / 100.0 if soc_before == soc_before else 0.5
            self.init(s, t, SIGMA_SOC_LOADED / 100.0)
            return st
        self.ah += i_a * dt_s / 3600.0
        # RLS on R0 uses the filter's RC states and the table R0 at this point.
        soc = self.x[ukf.SOC] / 100.0
        tc = self.x[ukf.TC]
        model.lookup(self.p, soc, tc, self.tab)
        r0_tab = self.tab[model.R0] if i_a >= 0 else self.tab[model.R0C]
        self.rls.update(i_a, v_meas, (self.x[ukf.V1] + self.x[ukf.V2]) / 1000.0, r0_tab)
        self.cap.update(soc, self.soc_sigma(), self.ah)
        return st

    def update_sop(self, ta_c):
        st = (self.x[ukf.SOC] / 100.0, self.x[ukf.V1] / 1000.0, self.x[ukf.V2] / 1000.0,
              self.x[ukf.TC], self.x[ukf.TS])
        for k in range(len(sop.HORIZONS_S)):
            self.i_dis[k], self.i_chg[k] = sop.limits(self.p, st, ta_c, self.limits,
                                                      sop.HORIZONS_S[k], self.tab)

    # -- results --------------------------------------------------------------
    def soc(self):
        return self.x[ukf.SOC] / 100.0

    def soc_sigma(self):
        v = self.P[0]
        return math.sqrt(v) / 100.0 if v > 0 else 0.0

    def temp_core_c(self):
        return self.x[ukf.TC]

    def voltage_pred_v(self):
        return self.out[0]

    def bias_a(self):
        return self.x[ukf.BIAS] / 1000.0

    def r0_ohm(self):
        """Present R0 (discharge) at the filter's SOC and core temperature."""
        model.lookup(self.p, self.soc(), self.temp_core_c(), self.tab)
        return self.tab[model.R0] * self.rls.scale

    def capacity_ah(self):
        # Feed the learned capacity back only once it is well determined.
        c = self.cap
        return c.capacity_ah if c.sigma_ah < 0.03 * self.nominal_ah else self.nominal_ah

    def soh(self):
        return self.cap.soh()
