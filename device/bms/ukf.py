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
#
# step() runs the stages of the C core (device/native/bms_native/ukf_core.c) under the
# same names, so the two read side by side: factor, sigma_points, propagate, moments,
# update (innovation, gate, gain, state), update_covariance, adapt_noise, finish.
import math

from bms import model

NX = 6
NZ = 2
NSIG = 2 * NX + 1
SOC, V1, V2, TC, TS, BIAS = range(NX)
SCALE = (100.0, 1000.0, 1000.0, 1.0, 1.0, 1000.0)  # physical -> filter units
KAPPA = 1.0

# The layouts of the flat vectors every backend shares (ukf_core.h has the same as
# BMS_U_*, BMS_CFG_*, BMS_OUT_*). Bump ABI whenever one of them, the params header
# (model.py) or a function's arguments change: the native backend refuses a module of
# another ABI (ukf_native.py).
ABI = 2

# u: the step's inputs, written by the caller before every step (read only here).
U_I = 0          # cell current A (discharge positive)
U_TA = 1         # ambient temperature degC
U_DT = 2         # time since the last step s (> 0)
U_V = 3          # measured terminal voltage V (NaN: not measured, skipped)
U_TS = 4         # measured surface temperature degC (NaN: skipped)
U_CAP = 5        # this cell's capacity A*s (> 0)
U_R0 = 6         # this cell's R0 factor (1.0 = as calibrated)
U_SHIFT = 7      # this cell's diffusion shift over this step (SOC fraction, model.py)
U_SIZE = 8

# cfg: the filter's tuning, flat floats.
CFG_Q = 0        # [0:NX] process noise std per sqrt(second) of each state (filter units)
CFG_V_FLOOR = 6  # voltage noise std floor mV
CFG_T_NOISE = 7  # temperature noise std degC
CFG_V_CEIL = 8   # voltage noise std ceiling mV
CFG_ADAPT = 9    # adaptation rate of the voltage noise (0 = fixed noise)
CFG_RV = 10      # adaptive voltage noise variance mV^2 (updated in place by step)
CFG_GATE = 11    # innovation gate (sigmas; a voltage innovation beyond it is clipped)
CFG_SIZE = 12

# out: what a step reports.
OUT_V = 0        # predicted terminal voltage V
OUT_TS = 1       # predicted surface temperature degC
OUT_INNOV = 2    # voltage innovation mV (before the gate)
OUT_NIS = 3      # normalised innovation squared
OUT_STATUS = 4   # the returned status
OUT_SIZE = 5

OK = 0
ERR_NONFINITE = 1
ERR_NOT_PD = 2

# What a native module must report (ukf_native.py): its ABI and these sizes.
LAYOUT = (NX, U_SIZE, CFG_SIZE, OUT_SIZE, model.HEADER, model.NTAB)


def default_cfg():
    # v2's process noise is the largest: it lets the slow RC pair take up the model's
    # slowly varying voltage error (minutes) that would otherwise be read as SOC
    return [
        0.0002, 0.05, 0.15, 0.02, 0.02, 0.001,
        5.0, 0.3, 40.0, 0.002, 100.0, 6.0,
    ]


def make_u(i_a, ta_c, dt_s, v_meas, ts_meas, cap_as, r0s=1.0, shift=0.0):
    """An input vector (a list; a backend's alloc turns it into its own type)."""
    u = [0.0] * U_SIZE
    u[U_I] = i_a
    u[U_TA] = ta_c
    u[U_DT] = dt_s
    u[U_V] = v_meas
    u[U_TS] = ts_meas
    u[U_CAP] = cap_as
    u[U_R0] = r0s
    u[U_SHIFT] = shift
    return u


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
        # the predicted measurement and its moments (moments): voltage mV, temperature
        self.zv = 0.0
        self.zt = 0.0
        self.svv = 0.0
        self.svt = 0.0
        self.stt = 0.0


def weights():
    lam = KAPPA
    w0 = lam / (NX + lam)
    wi = 0.5 / (NX + lam)
    return w0, wi, math.sqrt(NX + lam)


_W0, _WI, _GAMMA = weights()


def inputs_ok(u):
    """The inputs the model divides by or integrates are finite (dt and capacity > 0)."""
    return (_finite(u[U_I]) and _finite(u[U_TA]) and _finite(u[U_DT]) and u[U_DT] > 0.0
            and _finite(u[U_CAP]) and u[U_CAP] > 0.0 and _finite(u[U_R0])
            and _finite(u[U_SHIFT]))


def factor(P, ws):
    """Cholesky factor of P into ws.L, retried once with diagonal jitter (added to P)."""
    n = NX
    if cholesky(P, n, ws.L):
        return True
    for k in range(n):
        P[k * n + k] += 1e-6 + 1e-4 * P[k * n + k]
    return cholesky(P, n, ws.L)


def sigma_points(x, ws):
    """x +- GAMMA * each column of L into ws.X (point 0 is x)."""
    n = NX
    L = ws.L
    X = ws.X
    for s in range(NSIG):
        o = s * n
        for k in range(n):
            v = x[k]
            if s >= 1 and s <= n:
                v += _GAMMA * L[k * n + s - 1]
            elif s > n:
                v -= _GAMMA * L[k * n + s - 1 - n]
            X[o + k] = v


def propagate(p, u, ws):
    """Each sigma point through model.step in physical units, and its predicted
    measurement (model.voltage in mV, the surface temperature) into ws.Z."""
    n = NX
    X = ws.X
    Z = ws.Z
    tab = ws.tab
    i_a = u[U_I]
    ta_c = u[U_TA]
    dt_s = u[U_DT]
    cap_as = u[U_CAP]
    r0s = u[U_R0]
    shift = u[U_SHIFT]
    for s in range(NSIG):
        o = s * n
        soc = X[o] / SCALE[SOC]
        v1 = X[o + V1] / SCALE[V1]
        v2 = X[o + V2] / SCALE[V2]
        i_true = i_a - X[o + BIAS] / SCALE[BIAS]
        soc, v1, v2, tc, ts = model.step(p, soc, v1, v2, X[o + TC], X[o + TS], i_true, ta_c,
                                         dt_s, tab, cap_as, r0s)
        X[o] = soc * SCALE[SOC]
        X[o + V1] = v1 * SCALE[V1]
        X[o + V2] = v2 * SCALE[V2]
        X[o + TC] = tc
        X[o + TS] = ts
        Z[s * NZ] = model.voltage(p, soc, v1, v2, tc, i_true, tab, r0s, shift) * 1000.0
        Z[s * NZ + 1] = ts


def moments(P, cfg, dt_s, ws):
    """Predicted mean ws.xm and covariance P (positive weights only, plus the process
    noise), the predicted measurement ws.zv, ws.zt, its covariance ws.svv, svt, stt and
    the cross covariance ws.pxz."""
    n = NX
    X = ws.X
    Z = ws.Z
    xm = ws.xm
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
                acc += cfg[CFG_Q + a] * cfg[CFG_Q + a] * dt_s
            P[a * n + b] = acc
            P[b * n + a] = acc
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
    ws.zv = zv
    ws.zt = zt
    ws.svv = svv
    ws.svt = svt
    ws.stt = stt


def update(x, cfg, v_meas, ts_meas, out, ws):
    """Innovation, gate, Kalman gain ws.K and the new state x = xm + K e. A missing
    measurement (NaN) is skipped. Returns the gated voltage innovation (mV), or None
    when the innovation covariance is not positive definite."""
    n = NX
    pxz = ws.pxz
    zv = ws.zv
    zt = ws.zt
    svv = ws.svv
    svt = ws.svt
    out[OUT_V] = zv / 1000.0
    out[OUT_TS] = zt
    rv = cfg[CFG_RV]
    rt = cfg[CFG_T_NOISE] * cfg[CFG_T_NOISE]
    use_v = _finite(v_meas)
    use_t = _finite(ts_meas)
    ev = (v_meas * 1000.0 - zv) if use_v else 0.0
    et = (ts_meas - zt) if use_t else 0.0
    out[OUT_INNOV] = ev
    # Gate: a voltage innovation far outside the predicted spread is clipped, so one
    # glitch cannot yank the SOC.
    gate = cfg[CFG_GATE] * math.sqrt(svv + rv)
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
        s22 = ws.stt + rt
    det = s11 * s22 - svt * svt
    if not det > 0.0:
        return None
    i11 = s22 / det
    i22 = s11 / det
    i12 = -svt / det
    out[OUT_NIS] = ev * (i11 * ev + i12 * et) + et * (i12 * ev + i22 * et)
    # K = Pxz S^-1 ; x = xm + K e
    K = ws.K
    xm = ws.xm
    for k in range(n):
        k1 = pxz[k * 2] * i11 + pxz[k * 2 + 1] * i12
        k2 = pxz[k * 2] * i12 + pxz[k * 2 + 1] * i22
        x[k] = xm[k] + k1 * ev + k2 * et
        K[k * 2] = k1
        K[k * 2 + 1] = k2
    return ev


def update_covariance(P, cfg, ws):
    """P -= K S K^T = K Pxz^T, symmetrised, the diagonal floored at 1 % of the process
    noise."""
    n = NX
    K = ws.K
    pxz = ws.pxz
    for a in range(n):
        for b in range(a + 1):
            v = P[a * n + b] - (K[a * 2] * pxz[b * 2] + K[a * 2 + 1] * pxz[b * 2 + 1])
            vs = P[b * n + a] - (K[b * 2] * pxz[a * 2] + K[b * 2 + 1] * pxz[a * 2 + 1])
            v = 0.5 * (v + vs)
            P[a * n + b] = v
            P[b * n + a] = v
    for k in range(n):
        floor = cfg[CFG_Q + k] * cfg[CFG_Q + k] * 1e-2
        if P[k * n + k] < floor:
            P[k * n + k] = floor


def adapt_noise(cfg, ev, svv):
    """Adaptive voltage noise: covariance matching on the (gated) innovation ev,
    bounded by the floor and the ceiling; cfg[CFG_RV] updated."""
    if cfg[CFG_ADAPT] > 0.0:
        rv = cfg[CFG_RV]
        target = ev * ev - svv
        lo = cfg[CFG_V_FLOOR] * cfg[CFG_V_FLOOR]
        hi = cfg[CFG_V_CEIL] * cfg[CFG_V_CEIL]
        rv = rv + cfg[CFG_ADAPT] * (target - rv)
        cfg[CFG_RV] = lo if rv < lo else (hi if rv > hi else rv)


def finish(x, P):
    """SOC kept in a physical window; OK, or ERR_NONFINITE when x or P is not finite."""
    n = NX
    if x[SOC] < -5.0:
        x[SOC] = -5.0
    elif x[SOC] > 105.0:
        x[SOC] = 105.0
    for k in range(n):
        if not _finite(x[k]):
            return ERR_NONFINITE
    for k in range(n * n):
        if not _finite(P[k]):
            return ERR_NONFINITE
    return OK


def _status(out, st):
    out[OUT_STATUS] = st
    return st


def step(x, P, p, cfg, u, out, ws):
    """One predict + update. x (NX) and P (NX*NX) are updated in place, cfg[CFG_RV]
    adapted; u (U_SIZE, read) holds the inputs. A NaN u[U_V] or u[U_TS] (sensor
    missing) skips that measurement. Returns the status (also in out[OUT_STATUS])."""
    if not inputs_ok(u):
        return _status(out, ERR_NONFINITE)
    if not factor(P, ws):
        return _status(out, ERR_NOT_PD)
    sigma_points(x, ws)
    propagate(p, u, ws)
    moments(P, cfg, u[U_DT], ws)
    ev = update(x, cfg, u[U_V], u[U_TS], out, ws)
    if ev is None:
        return _status(out, ERR_NOT_PD)
    update_covariance(P, cfg, ws)
    if _finite(u[U_V]):
        adapt_noise(cfg, ev, ws.svv)
    return _status(out, finish(x, P))
