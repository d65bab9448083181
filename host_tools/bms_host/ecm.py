"""Host simulator of exactly the device model (device/bms/model.py), fast enough for fitting.

Same equations, same order of evaluation as `model.Simulator`: zero-order hold, parameters
of the RC and heat update looked up at the state before the step (soc, core temperature),
terminal voltage at the state after it, backward Euler on the two thermal nodes. What makes
it fast: SOC does not depend on the rest of the state, so its bracket and the interpolation
along SOC of every table are done for all samples at once with numpy; only the
interpolation along temperature and the RC / thermal recursions run sample by sample, on
plain floats (about 1-2 us per sample).

Row 0 of a trace is the initial state: no step is taken; its voltage is the model's
voltage at the initial state with row 0's current.
"""
import bisect
import math

import numpy as np
from scipy.signal import lfilter

from . import use_device_code

use_device_code()
# the device model: its table order, constants, defaults (model.pack) and kinetic term
from bms import hysteresis, model  # noqa: E402

# the diffusion block a fit writes when the shift is off (gain 0: model.pack's defaults)
NO_DIFFUSION = {"shift_per_a": 0.0, "tau_s": 100.0, "activation_k": 0.0}


def charge_gain(diffusion):
    """The shift's gain on charge: shift_per_a_chg, or the discharge gain without it."""
    return diffusion.get("shift_per_a_chg", diffusion["shift_per_a"])


def shift_path(time_s, current_a, temp_c, diffusion):
    """The diffusion shift d (SOC fraction) per row for a current and a core temperature
    path (row k's shift uses the temperature of row k-1, as model.shift_ahead)."""
    g = diffusion["shift_per_a"]
    gc = charge_gain(diffusion)
    n = len(current_a)
    d = np.zeros(n)
    if g == 0.0 and gc == 0.0:
        return d
    f = np.exp(diffusion["activation_k"] * (1.0 / (np.asarray(temp_c, dtype=float) + 273.15)
                                            - 1.0 / 298.15))
    dt = dts(time_s)
    a = np.ones(n)
    a[1:] = np.exp(-dt[1:] / (diffusion["tau_s"] * f[:-1]))
    u = np.zeros(n)
    i = np.asarray(current_a, dtype=float)[1:]
    u[1:] = (1.0 - a[1:]) * np.where(i >= 0.0, g, gc) * f[:-1] * i
    x = 0.0
    al, ul = a.tolist(), u.tolist()
    for k in range(1, n):
        x = al[k] * x + ul[k]
        d[k] = x
    return d


def first_branch(current_a):
    """The hysteresis a trace starts on when nothing says otherwise: the one its first
    current leaves (a discharge from full follows a charge, a charge from empty a
    discharge); 0 for a trace that never moves."""
    i = np.asarray(current_a, dtype=float)
    moving = np.nonzero(np.abs(i) > 0.0)[0]
    if len(moving) == 0:
        return 0.0
    return 1.0 if i[moving[0]] > 0.0 else -1.0


def hysteresis_path(time_s, current_a, capacity_ah, gamma, h0=None):
    """The hysteresis state h per row (the device's hysteresis.Branch, row k from the
    current of row k), starting from h0 (first_branch when None)."""
    i = np.asarray(current_a, dtype=float)
    b = hysteresis.Branch(gamma, hysteresis.REST_C * capacity_ah)
    b.reset(first_branch(i) if h0 is None else float(h0), 0.0)
    out = np.empty(len(i))
    out[0] = b.h
    cap_as = capacity_ah * 3600.0
    dl = dts(time_s).tolist()
    il = i.tolist()
    advance = b.advance
    for k in range(1, len(il)):
        out[k] = advance(il[k], dl[k], cap_as)
    return out


def kinetic_np(i_a, i0_a, tc):
    """model.kinetic_v over arrays (equal to it within rounding)."""
    x = np.asarray(i_a, dtype=float) / (2.0 * np.asarray(i0_a, dtype=float))
    return model.KIN_B * (np.asarray(tc, dtype=float) + 273.15) * np.arcsinh(x)


def kinetic_di0(i_a, i0_a, tc):
    """Derivative of kinetic_np with respect to the exchange current (V per A)."""
    i0 = np.asarray(i0_a, dtype=float)
    x = np.asarray(i_a, dtype=float) / (2.0 * i0)
    return model.KIN_B * (np.asarray(tc, dtype=float) + 273.15) * (-x / i0) / np.sqrt(1.0 + x * x)


class Tables:
    """Calibration tables as numpy arrays: soc (ns), temp (nt), tab[name] (nt, ns) for
    every name of model.TABLES; heat_v1, heat_v2 (the heated fractions k1, k2) and
    heat_rh (the ohmic heat takes rh_ohm, else R0). What the calibration leaves out
    (r0c, r2c, rh, i0, k1, k2) is filled as the device fills it: read back from
    model.pack's array."""

    def __init__(self, soc, temp_c, tables, thermal, capacity_ah, diffusion=None,
                 hyst=None):
        self.soc = np.asarray(soc, dtype=float)
        self.temp = np.asarray(temp_c, dtype=float)
        ns, nt = len(self.soc), len(self.temp)
        given = {n: np.asarray(tables[n], dtype=float).reshape(nt, ns) for n in model.TABLES
                 if tables.get(n) is not None}
        p = np.array(model.pack({"tables": dict(given, soc=self.soc, temp_c=self.temp),
                                 "thermal": thermal, "cell": {"capacity_ah": capacity_ah}}))
        base = model.HEADER + ns + nt
        self.tab = {n: p[base + k * ns * nt:base + (k + 1) * ns * nt].reshape(nt, ns)
                    for k, n in enumerate(model.TABLES)}
        self.thermal = dict(thermal)
        self.heat_v1 = float(p[model.HEAT_V1])
        self.heat_v2 = float(p[model.HEAT_V2])
        self.heat_rh = bool(p[model.HEAT_RH])
        self.capacity_ah = float(capacity_ah)
        # solid-diffusion shift (model.py): gain 0 = none
        self.diffusion = dict(NO_DIFFUSION, **(diffusion or {}))
        # voltage hysteresis (hysteresis.py): {"m_v": (nt, ns), "gamma": g} or None
        self.hyst = None if not hyst else {"m_v": np.asarray(hyst["m_v"], dtype=float)
                                           .reshape(nt, ns), "gamma": float(hyst["gamma"])}

    @classmethod
    def from_cal(cls, cal, capacity_ah=None):
        t = cal["tables"]
        return cls(t["soc"], t["temp_c"], t, cal["thermal"],
                   capacity_ah if capacity_ah is not None else cal["cell"]["capacity_ah"],
                   cal.get("diffusion"), cal.get("hysteresis"))

    def hyst_v(self, time_s, current_a, soc, temp_c, h0=None):
        """M*h per row (V): what the hysteresis adds to the terminal voltage."""
        if self.hyst is None:
            return np.zeros(len(current_a))
        h = hysteresis_path(time_s, current_a, self.capacity_ah, self.hyst["gamma"], h0)
        top = self.soc[-1]
        return h * interp2(self.soc, self.temp, self.hyst["m_v"], np.minimum(soc, top), temp_c)

    def ocv(self, soc, temp_c):
        """OCV, rising past the top of the SOC grid as on the device (model.lookup)."""
        soc = np.asarray(soc, dtype=float)
        above = np.maximum(soc - self.soc[-1], 0.0)
        slope = np.interp(temp_c, self.temp, self.ocv_top_slopes())
        return interp2(self.soc, self.temp, self.tab["ocv_v"], soc, temp_c) + slope * above

    def ocv_top_slopes(self):
        """Per temperature row, the OCV's mean slope (V per SOC) over the top
        model.OCV_TOP_SPAN of the grid: its rise past the top."""
        g = self.soc
        if len(g) == 1:
            return np.zeros(len(self.temp))
        span = top_span(g)
        o = self.tab["ocv_v"]
        lo = np.array([np.interp(g[-1] - span, g, row) for row in o])
        return (o[:, -1] - lo) / span

    def lookup(self, name, soc, temp_c):
        return interp2(self.soc, self.temp, self.tab[name], soc, temp_c)

    def soc_from_ocv(self, v, temp_c):
        """Invert OCV at temp_c by bisection, as the device does."""
        lo, hi = self.soc[0], self.soc[-1]
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if float(self.ocv(np.array([mid]), np.array([temp_c]))[0]) < v:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


def top_span(grid):
    """The SOC span below the grid's top whose mean OCV slope continues past the top
    (model.lookup)."""
    return min(model.OCV_TOP_SPAN, grid[-1] - grid[0])


def bracket(grid, x):
    """Vectorised model._bracket: index j in 0..n-2 and weight w in [0, 1]."""
    grid = np.asarray(grid, dtype=float)
    x = np.asarray(x, dtype=float)
    n = len(grid)
    if n == 1:
        return np.zeros(x.shape, dtype=int), np.zeros(x.shape)
    j = np.clip(np.searchsorted(grid, x, side="left") - 1, 0, n - 2)
    w = (x - grid[j]) / (grid[j + 1] - grid[j])
    lo = x <= grid[0]
    hi = x >= grid[-1]
    j = np.where(hi, n - 2, j)
    w = np.where(lo, 0.0, np.where(hi, 1.0, w))
    return j, w


def interp2(soc_grid, temp_grid, table, soc, temp_c):
    """Bilinear lookup (clamped) of one table at arrays soc, temp_c."""
    i, ws = bracket(soc_grid, soc)
    j, wt = bracket(temp_grid, temp_c)
    ns = len(soc_grid)
    i1 = np.minimum(i + 1, ns - 1)
    j1 = np.minimum(j + 1, len(temp_grid) - 1)
    t = table
    return ((1 - ws) * (1 - wt) * t[j, i] + ws * (1 - wt) * t[j, i1]
            + (1 - ws) * wt * t[j1, i] + ws * wt * t[j1, i1])


def soc_path(soc0, current_a, dt_s, capacity_ah):
    """SOC after each sample (row 0 = soc0), as the device counts it."""
    d = current_a * dt_s / (capacity_ah * 3600.0)
    d[0] = 0.0
    return soc0 - np.cumsum(d)


def dts(time_s):
    t = np.asarray(time_s, dtype=float)
    return np.concatenate([[0.0], np.diff(t)])


def simulate(tables, time_s, current_a, ambient_c, soc0, temp0_c, temp_surf0_c=None,
             temp_core_c=None, r0_scale=1.0, hyst0=None):
    """Open-loop simulation; returns dict voltage_v, temp_core_c, temp_surface_c, soc,
    v1, v2, heat_w (arrays, one per row). hyst0: the hysteresis state at row 0
    (first_branch when None).

    If temp_core_c (an array) is given, the tables are looked up at that measured core
    temperature instead of the model's own (the thermal model still runs)."""
    tb = tables
    i_a = np.asarray(current_a, dtype=float)
    n = len(i_a)
    dt = dts(time_s)
    amb = np.broadcast_to(np.asarray(ambient_c, dtype=float), (n,))
    soc = soc_path(float(soc0), i_a, dt, tb.capacity_ah)
    si, sw = bracket(tb.soc, soc)
    si1 = np.minimum(si + 1, len(tb.soc) - 1)
    # Every table interpolated along SOC: (n, nt) each, as nested lists for the loop.
    S = []
    slopes = tb.ocv_top_slopes()
    above = np.maximum(soc - tb.soc[-1], 0.0)
    for k, name in enumerate(model.TABLES):
        t = tb.tab[name]
        s_tab = (1.0 - sw)[:, None] * t[:, si].T + sw[:, None] * t[:, si1].T
        if k == model.OCV:   # past the top of the grid it keeps rising (model.lookup)
            s_tab = s_tab + above[:, None] * slopes[None, :]
        S.append(s_tab.tolist())
    s_ocv, s_r0, s_r0c, s_r1, s_tau1 = S[model.OCV], S[model.R0], S[model.R0C], S[model.R1], \
        S[model.TAU1]
    s_r2, s_tau2, s_i0, s_r2c, s_rh = S[model.R2], S[model.TAU2], S[model.I0], S[model.R2C], \
        S[model.RH]
    heat_rh = tb.heat_rh
    tg = tb.temp.tolist()
    nt = len(tg)
    th = tb.thermal
    g1 = 1.0 / th["r_core_surf_k_per_w"]
    g2 = 1.0 / th["r_surf_amb_k_per_w"]
    c_core = th["c_core_j_per_k"]
    c_surf = th["c_surf_j_per_k"]
    k1 = tb.heat_v1
    k2 = tb.heat_v2
    il = i_a.tolist()
    dl = dt.tolist()
    al = amb.tolist()
    # the diffusion shift: OCV is read at soc - d (bisect along the SOC grid per row)
    dif = tb.diffusion
    sg, se, stau = dif["shift_per_a"], dif["activation_k"], dif["tau_s"]
    sgc = charge_gain(dif)
    socl = soc.tolist()
    grid = tb.soc.tolist()
    ocv_rows = tb.tab["ocv_v"].tolist()
    dsh = 0.0
    forced = None if temp_core_c is None else np.asarray(temp_core_c, dtype=float).tolist()

    out_v = [0.0] * n
    out_tc = [0.0] * n
    out_ts = [0.0] * n
    out_v1 = [0.0] * n
    out_v2 = [0.0] * n
    out_q = [0.0] * n
    tc = float(temp0_c)
    ts = float(temp0_c if temp_surf0_c is None else temp_surf0_c)
    v1 = 0.0
    v2 = 0.0
    exp = math.exp
    t_lo = tg[0]
    t_hi = tg[-1]
    # looked up at row k, used by the step into row k + 1
    r0d = r0c = r1 = r2d = r2c = rh = 0.0
    tau1 = tau2 = 1.0
    i0 = model.I0_NONE
    tk = tc   # temperature of the kinetic term: the lookup temperature of the last row
    kinetic_v = model.kinetic_v
    for k in range(n):
        if k > 0:
            # step k: parameters at the state before it (lk, the lookup of row k-1)
            i = il[k]
            d = dl[k]
            a1 = exp(-d / tau1)
            a2 = exp(-d / tau2)
            r0 = (r0d if i >= 0.0 else r0c) * r0_scale
            # kinetic term at the pre-step state (i0 and core temperature of row k-1)
            eta = kinetic_v(i, i0, tk)
            ro = rh * r0_scale if heat_rh else r0
            heat = i * (ro * i + k1 * v1 + eta) + k2 * i * v2
            if sg != 0.0 or sgc != 0.0:
                f = exp(se * (1.0 / (tk + 273.15) - 1.0 / 298.15))
                a = exp(-d / (stau * f))
                dsh = a * dsh + (1.0 - a) * (sg if i >= 0.0 else sgc) * f * i
            r2 = r2d if i >= 0.0 else r2c
            v1 = a1 * v1 + r1 * (1.0 - a1) * i
            v2 = a2 * v2 + r2 * (1.0 - a2) * i
            kc = c_core / d
            ks = c_surf / d
            a11 = kc + g1
            a22 = ks + g1 + g2
            b1 = kc * tc + heat
            b2 = ks * ts + g2 * al[k]
            det = a11 * a22 - g1 * g1
            tc = (b1 * a22 + g1 * b2) / det
            ts = (a11 * b2 + g1 * b1) / det
            out_q[k] = heat
        # lookup at the state after the step (row k)
        tl = tc if forced is None else forced[k]
        if nt == 1 or tl <= t_lo:
            j, wt = 0, 0.0
        elif tl >= t_hi:
            j, wt = nt - 2, 1.0
        else:
            j = 0
            while tg[j + 1] < tl:
                j += 1
            wt = (tl - tg[j]) / (tg[j + 1] - tg[j])
        j1 = j + 1 if nt > 1 else j
        u = 1.0 - wt
        if dsh == 0.0:
            row = s_ocv[k]
            ocv = u * row[j] + wt * row[j1]
        else:
            ocv = _ocv_at(grid, ocv_rows, socl[k] - dsh, j, j1, u, wt, slopes)
        row = s_r0[k]
        r0d = u * row[j] + wt * row[j1]
        row = s_r0c[k]
        r0c = u * row[j] + wt * row[j1]
        row = s_r1[k]
        r1 = u * row[j] + wt * row[j1]
        row = s_tau1[k]
        tau1 = u * row[j] + wt * row[j1]
        row = s_r2[k]
        r2d = u * row[j] + wt * row[j1]
        row = s_r2c[k]
        r2c = u * row[j] + wt * row[j1]
        row = s_tau2[k]
        tau2 = u * row[j] + wt * row[j1]
        row = s_i0[k]
        i0 = u * row[j] + wt * row[j1]
        row = s_rh[k]
        rh = u * row[j] + wt * row[j1]
        i = il[k]
        eta = kinetic_v(i, i0, tl)
        tk = tl
        out_v[k] = ocv - v1 - v2 - (r0d if i >= 0.0 else r0c) * r0_scale * i - eta
        out_tc[k] = tc
        out_ts[k] = ts
        out_v1[k] = v1
        out_v2[k] = v2
    out_v = np.array(out_v)
    if tb.hyst is not None:
        tl = np.array(out_tc) if forced is None else np.asarray(forced)
        out_v += tb.hyst_v(time_s, i_a, soc, tl, hyst0)
    return {"voltage_v": out_v, "temp_core_c": np.array(out_tc),
            "temp_surface_c": np.array(out_ts), "soc": soc, "v1": np.array(out_v1),
            "v2": np.array(out_v2), "heat_w": np.array(out_q)}


def _ocv_at(grid, rows, s, j, j1, u, wt, slopes):
    """OCV at SOC s (bracketed along the grid: clamped, but rising past the top with the
    rows' slopes, Tables.ocv_top_slopes) and temperature weights j, j1, u, wt."""
    n = len(grid)
    rise = 0.0
    if s <= grid[0]:
        i, w = 0, 0.0
    elif s >= grid[-1]:
        i, w = n - 2, 1.0
        rise = (u * slopes[j] + wt * slopes[j1]) * (s - grid[-1])
    else:
        i = bisect.bisect_left(grid, s) - 1
        w = (s - grid[i]) / (grid[i + 1] - grid[i])
    r0, r1 = rows[j], rows[j1]
    return ((1.0 - w) * u * r0[i] + w * u * r0[i + 1] + (1.0 - w) * wt * r1[i]
            + w * wt * r1[i + 1]) + rise


def simulate_thermal(time_s, heat_w, ambient_c, thermal, tc0, ts0):
    """The model's backward-Euler thermal network driven by a given heat (row k's heat acts
    over (t_{k-1}, t_k]). Returns (core, surface) arrays. Vectorised with lfilter over runs
    of equal sample period (modal decomposition of the 2x2 step matrix)."""
    t = np.asarray(time_s, dtype=float)
    n = len(t)
    q = np.asarray(heat_w, dtype=float)
    amb = np.broadcast_to(np.asarray(ambient_c, dtype=float), (n,))
    dt = dts(t)
    g1 = 1.0 / thermal["r_core_surf_k_per_w"]
    g2 = 1.0 / thermal["r_surf_amb_k_per_w"]
    cc = thermal["c_core_j_per_k"]
    cs = thermal["c_surf_j_per_k"]
    tc = np.empty(n)
    ts = np.empty(n)
    tc[0] = tc0
    ts[0] = ts0
    x = np.array([tc0, ts0], dtype=float)
    # runs of (nearly) equal dt
    k = 1
    while k < n:
        d = dt[k]
        e = k + 1
        while e < n and abs(dt[e] - d) <= 1e-9 * d:
            e += 1
        kc, ks = cc / d, cs / d
        M = np.array([[kc + g1, -g1], [-g1, ks + g1 + g2]])
        Mi = np.linalg.inv(M)
        A = Mi @ np.diag([kc, ks])
        B = Mi  # input vector [heat, g2 * ambient]
        lam, V = np.linalg.eig(A)
        lam = lam.real
        V = V.real
        Vi = np.linalg.inv(V)
        U = B @ np.vstack([q[k:e], g2 * amb[k:e]])   # (2, m)
        Z = Vi @ U
        z0 = Vi @ x
        zs = np.empty_like(Z)
        for m in range(2):
            zs[m], _ = lfilter([1.0], [1.0, -lam[m]], Z[m], zi=[lam[m] * z0[m]])
        X = V @ zs
        tc[k:e] = X[0]
        ts[k:e] = X[1]
        x = X[:, -1]
        k = e
    return tc, ts

