# Unscented Kalman filter step, pure Python: the reference backend (plain lists, runs on
# stock MicroPython). The ulab and native (C) backends implement exactly this.
#
# Choices for float32 (the boards compute in single precision):
# - State in scaled units so the covariance is well conditioned:
#     x = [soc %, v1 mV, v2 mV, T_core degC, T_surf degC, current-sensor bias mA]
#   (sigmas of order 0.1..30 instead of 1e-4 V next to 1 degC).
# - Sigma-point weights all positive (alpha = 1, beta = 0, lambda = KAPPA > 0): the
#   predicted covariance is a sum of outer products with positive weights, so it is
#   positive semi-definite by construction. (alpha = 1e-3 gives W0 ~ -1e6 and loses
#   definiteness in float32 within seconds.)
# - After the update P is symmetrised and its diagonal floored; a failed Cholesky is
#   retried once with jitter, then reported as an error (caller re-initialises).
#
# Measurements: terminal voltage (mV) and surface temperature (degC). The voltage noise
# adapts to the innovations (covariance matching, bounded) because model error, not
# the ADC, dominates: this keeps the SOC sigma honest.
import math

from bms import model

NX = 6
NZ = 2
NSIG = 2 * NX + 1
SOC, V1, V2, TC, TS, BIAS = range(NX)
SCALE = (100.0, 1000.0, 1000.0, 1.0, 1.0, 1000.0)  # physical -> filter units
KAPPA = 1.0

# cfg layout (flat floats, shared with the other backends):
#   [0:6] process noise std per sqrt(second) of each state (filter units)
#   [6] voltage noise std floor mV  [7] temperature noise std degC
#   [8] voltage noise std ceiling mV [9] adaptation rate (0 = fixed noise)
#   [10] adaptive voltage noise variance mV^2 (updated in place)
#   [11] innovation gate (sigmas; a voltage innovation beyond it is clipped)
CFG_SIZE = 12
# out layout: [0] predicted voltage V  [1] predicted surface temperature degC
#   [2] voltage innovation mV  [3] normalised innovation squared  [4] status
OUT_SIZE = 5

OK = 0
ERR_NONFINITE = 1
ERR_NOT_PD = 2


def default_cfg():
    # v2's process noise is the largest: it lets the slow RC pair take up the model's
    # slowly varying voltage error (minutes) that would otherwise be read as SOC
    return [
        0.0002, 0.05, 0.15, 0.02, 0.02, 0.001,
        5.0, 0.3, 40.0, 0.002, 100.0, 6.0,
    ]


def cholesky(a, n, out):
    """Lower Cholesky factor of the n x n row-major list a into out. False if not PD."""
    for j in range(n):
        s = a[j * n + j]
        for k in range(j):
            s -= out[j * n + k] * out[j * n + k]
        if not s > 0.0:
            return False
        d = math.sqrt(s)
        out[j * n + j] = d
        for i in range(j + 1, n):
            s = a[i * n + j]
            for k in range(j):
                s -= out[i * n + k] * out[j * n + k]
            out[i * n + j] = s / d
        for i in range(j):
            out[i * n + j] = 0.0
    return True


def _finite(v):
    return v == v and -1e30 < v < 1e30


class Workspace:
    """Buffers made once per filter: no allocation per step on the device."""

    def __init__(self):
        self.L = [0.0] * (NX * NX)
        self.X = [0.0] * (NSIG * NX)
        self.Z = [0.0] * (NSIG * NZ)
        self.tab = [0.0] * model.NTAB
        self.xm = [0.0] * NX
        self.pxz = [0.0] * (NX * NZ)
        self.K = [0.0] * (NX * NZ)


def weights():
    lam = KAPPA
    w0 = lam / (NX + lam)
    wi = 0.5 / (NX + lam)
    return w0, wi, math.sqrt(NX + lam)


_W0, _WI, _GAMMA = weights()


def step(x, P, p, cfg, i_a, ta_c, dt_s, v_meas, ts_meas, out, ws):
    """One predict + update. x (NX) and P (NX*NX) are updated in place. v_meas or
    ts_meas may be NaN (sensor missing): that measurement is skipped. Returns status."""
    if not (_finite(i_a) and _finite(ta_c) and _finite(dt_s) and dt_s > 0.0):
        out[4] = ERR_NONFINITE
        return ERR_NONFINITE
    n = NX
    L = ws.L
    X = ws.X
    Z = ws.Z
    tab = ws.tab
    xm = ws.xm
    K = ws.K
    if not cholesky(P, n, L):
        for k in range(n):
            P[k * n + k] += 1e-6 + 1e-4 * P[k * n + k]
        if not cholesky(P, n, L):
            out[4] = ERR_NOT_PD
            return ERR_NOT_PD
    # Sigma points, propagated through the model in physical units.
    for s in range(NSIG):
        o = s * n
        for k in range(n):
            v = x[k]
            if s >= 1 and s <= n:
                v += _GAMMA * L[k * n + s - 1]
            elif s > n:
                v -= _GAMMA * L[k * n + s - 1 - n]
            X[o + k] = v
        soc = X[o] / SCALE[SOC]
        v1 = X[o + V1] / SCALE[V1]
        v2 = X[o + V2] / SCALE[V2]
        i_true = i_a - X[o + BIAS] / SCALE[BIAS]
        soc, v1, v2, tc, ts = model.step(p, soc, v1, v2, X[o + TC], X[o + TS], i_true, ta_c,
                                         dt_s, tab)
        X[o] = soc * SCALE[SOC]
        X[o + V1] = v1 * SCALE[V1]
        X[o + V2] = v2 * SCALE[V2]
        X[o + TC] = tc
        X[o + TS] = ts
        Z[s * NZ] = model.voltage(p, soc, v1, v2, tc, i_true, tab) * 1000.0
        Z[s * NZ + 1] = ts
    # Predicted mean and covariance (positive weights only), plus process noise.
    for k in range(n):
        acc = _W0 * X[k]
        for s in range(1, NSIG):
            acc += _WI * X[s * n + k]
        xm[k] = acc
    zv = _W0 * Z[0]
    zt = _W0 * Z[1]
    for s in range(1, NSIG):
        zv += _WI * Z[s * NZ]
        zt += _WI * Z[s * NZ + 1]
    for a in range(n):
        for b in range(a + 1):
            acc = 0.0
            for s in range(NSIG):
                w = _W0 if s == 0 else _WI
                acc += w * (X[s * n + a] - xm[a]) * (X[s * n + b] - xm[b])
            if a == b:
                acc += cfg[a] * cfg[a] * dt_s
            P[a * n + b] = acc
            P[b * n + a] = acc
    # Innovation covariance and cross covariance.
    svv = 0.0
    svt = 0.0
    stt = 0.0
    pxz = ws.pxz
    for k in range(n):
        pxz[k * 2] = 0.0
        pxz[k * 2 + 1] = 0.0
    for s in range(NSIG):
        w = _W0 if s == 0 else _WI
        dv = Z[s * NZ] - zv
        dt = Z[s * NZ + 1] - zt
        svv += w * dv * dv
        svt += w * dv * dt
        stt += w * dt * dt
        for k in range(n):
            dx = X[s * n + k] - xm[k]
            pxz[k * 2] += w * dx * dv
            pxz[k * 2 + 1] += w * dx * dt
    out[0] = zv / 1000.0
    out[1] = zt
    rv = cfg[10]
    rt = cfg[7] * cfg[7]
    use_v = _finite(v_meas)
    use_t = _finite(ts_meas)
    ev = (v_meas * 1000.0 - zv) if use_v else 0.0
    et = (ts_meas - zt) if use_t else 0.0
    out[2] = ev
    # Gate: a voltage innovation far outside the predicted spread is clipped, so one
    # glitch cannot yank the SOC.
    gate = cfg[11] * math.sqrt(svv + rv)
    if ev > gate:
        ev = gate
    elif ev < -gate:
        ev = -gate
    if not use_v:
        svt = 0.0
        for k in range(n):
            pxz[k * 2] = 0.0
        s11 = 1.0
    else:
        s11 = svv + rv
    if not use_t:
        svt = 0.0
        for k in range(n):
            pxz[k * 2 + 1] = 0.0
        s22 = 1.0
    else:
        s22 = stt + rt
    det = s11 * s22 - svt * svt
    if not det > 0.0:
        out[4] = ERR_NOT_PD
        return ERR_NOT_PD
    i11 = s22 / det
    i22 = s11 / det
    i12 = -svt / det
    out[3] = ev * (i11 * ev + i12 * et) + et * (i12 * ev + i22 * et)
    # K = Pxz S^-1 ; x += K e ; P -= K S K^T = K Pxz^T
    for k in range(n):
        k1 = pxz[k * 2] * i11 + pxz[k * 2 + 1] * i12
        k2 = pxz[k * 2] * i12 + pxz[k * 2 + 1] * i22
        x[k] = xm[k] + k1 * ev + k2 * et
        K[k * 2] = k1
        K[k * 2 + 1] = k2
    for a in range(n):
        for b in range(a + 1):
            v = P[a * n + b] - (K[a * 2] * pxz[b * 2] + K[a * 2 + 1] * pxz[b * 2 + 1])
            vs = P[b * n + a] - (K[b * 2] * pxz[a * 2] + K[b * 2 + 1] * pxz[a * 2 + 1])
            v = 0.5 * (v + vs)
            P[a * n + b] = v
            P[b * n + a] = v
    for k in range(n):
        floor = cfg[k] * cfg[k] * 1e-2
        if P[k * n + k] < floor:
            P[k * n + k] = floor
    # Adaptive voltage noise: covariance matching on the innovation, bounded.
    if use_v and cfg[9] > 0.0:
        target = ev * ev - svv
        lo = cfg[6] * cfg[6]
        hi = cfg[8] * cfg[8]
        rv = rv + cfg[9] * (target - rv)
        cfg[10] = lo if rv < lo else (hi if rv > hi else rv)
    # SOC stays in a physical window; the bias cannot grow without bound.
    if x[SOC] < -5.0:
        x[SOC] = -5.0
    elif x[SOC] > 105.0:
        x[SOC] = 105.0
    for k in range(n):
        if not _finite(x[k]):
            out[4] = ERR_NONFINITE
            return ERR_NONFINITE
    for k in range(n * n):
        if not _finite(P[k]):
            out[4] = ERR_NONFINITE
            return ERR_NONFINITE
    out[4] = OK
    return OK
