"""A textbook peer of the device filter for benchmarks: filterpy's UnscentedKalmanFilter
on the same cell model, scaled state, sigma-point weights, Q and R, in float64.

What it deliberately lacks (the device filter's float32 and robustness features): no
innovation gate, no adaptive voltage noise (R stays at cfg[ukf.CFG_RV] as given), no covariance
floor, no jitter retry, no SOC clamp. A missing measurement (NaN) gets a huge variance
for that step instead of being dropped, since filterpy's filter has a fixed dim_z.
"""
import math

import numpy as np
from filterpy.kalman import MerweScaledSigmaPoints, UnscentedKalmanFilter

from bms_host import use_device_code

use_device_code()
from bms import estimator, model, ukf  # noqa: E402

# Merwe's lambda = alpha^2 (n + kappa) - n: alpha = 1, kappa = ukf.KAPPA gives the
# device's lambda = KAPPA, hence its weights (W0 = 1/7, Wi = 1/14, all positive) and
# spread sqrt(n + 1); beta = 0 keeps the covariance weight W0 equal to the mean weight.
ALPHA = 1.0
BETA = 0.0
KAPPA = ukf.KAPPA
_MISSING_VAR = 1e12


class FilterpyPeer:
    def __init__(self, params_flat, cfg, x0, P0):
        """params_flat: model.pack() output; cfg: ukf cfg (12 floats); x0 (6) in filter
        units (soc %, mV, mV, degC, degC, mA); P0: 36 floats row-major or a 6 x 6 array."""
        self.p = [float(v) for v in params_flat]
        self.cfg = [float(v) for v in cfg]
        self.tab = [0.0] * model.NTAB
        n = ukf.NX
        points = MerweScaledSigmaPoints(n, alpha=ALPHA, beta=BETA, kappa=KAPPA)
        self.f = UnscentedKalmanFilter(dim_x=n, dim_z=ukf.NZ, dt=1.0, hx=self._hx,
                                       fx=self._fx, points=points)
        self.f.x = np.array([float(v) for v in x0])
        self.f.P = np.array(P0, dtype=float).reshape((n, n))
        self.r_v = self.cfg[ukf.CFG_RV]
        self.r_t = self.cfg[ukf.CFG_T_NOISE] * self.cfg[ukf.CFG_T_NOISE]
        self.cap_as = self.p[model.CAP_AS]   # the calibration's capacity, R0 as calibrated
        self.shift = 0.0

    def _fx(self, x, dt, i_a, ta_c):
        sc = ukf.SCALE
        i_true = i_a - x[ukf.BIAS] / sc[ukf.BIAS]
        soc, v1, v2, tc, ts = model.step(self.p, x[ukf.SOC] / sc[ukf.SOC], x[ukf.V1] / sc[ukf.V1],
                                         x[ukf.V2] / sc[ukf.V2], x[ukf.TC], x[ukf.TS], i_true,
                                         ta_c, dt, self.tab, self.cap_as, 1.0)
        return np.array([soc * sc[ukf.SOC], v1 * sc[ukf.V1], v2 * sc[ukf.V2], tc, ts,
                         x[ukf.BIAS]])

    def _hx(self, x, i_a):
        sc = ukf.SCALE
        i_true = i_a - x[ukf.BIAS] / sc[ukf.BIAS]
        v = model.voltage(self.p, x[ukf.SOC] / sc[ukf.SOC], x[ukf.V1] / sc[ukf.V1],
                          x[ukf.V2] / sc[ukf.V2], x[ukf.TC], i_true, self.tab, 1.0, self.shift)
        return np.array([v * 1000.0, x[ukf.TS]])

    def step(self, i_a, ta_c, dt_s, v_meas, ts_meas, r_v=None):
        """One predict + update; r_v: this step's voltage noise variance (mV^2), else the
        fixed one from cfg. Returns (soc as a fraction, its sigma as a fraction)."""
        f = self.f
        q = self.cfg[ukf.CFG_Q:ukf.CFG_Q + ukf.NX]
        f.Q = np.diag([s * s * dt_s for s in q])
        # the diffusion shift is the model's input, advanced as our estimator does it
        i_true = i_a - f.x[ukf.BIAS] / ukf.SCALE[ukf.BIAS]
        self.shift = model.shift_ahead(self.p, self.shift, i_true, f.x[ukf.TC], dt_s)
        f.predict(dt=dt_s, i_a=i_a, ta_c=ta_c)
        use_v = v_meas == v_meas
        use_t = ts_meas == ts_meas
        if use_v or use_t:
            z = np.array([v_meas * 1000.0 if use_v else 0.0, ts_meas if use_t else 0.0])
            R = np.diag([(self.r_v if r_v is None else r_v) if use_v else _MISSING_VAR,
                         self.r_t if use_t else _MISSING_VAR])
            f.update(z, R=R, i_a=i_a)
        # the SOC kept inside the OCV table's range, as our estimator does
        f.x[ukf.SOC] = min(max(f.x[ukf.SOC], estimator.SOC_LO_PCT), estimator.SOC_HI_PCT)
        return f.x[ukf.SOC] / 100.0, math.sqrt(max(f.P[0, 0], 0.0)) / 100.0
