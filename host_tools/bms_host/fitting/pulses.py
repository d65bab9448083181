"""Step 3: first estimates of R0, R0c, R1, tau1, R2, tau2 per HPPC step and temperature."""
import math

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import lfilter

from .. import ecm, UserError
from .dataset import case_soc
from .options import TAU1_RANGE, TAU2_RANGE


def hppc_blocks(case, min_rest_s=300.0):
    """(start, end) row ranges: each from the end of a long rest to the end of the next."""
    t, i = case.cols["time_s"], case.cols["current_a"]
    n = len(t)
    rest = i == 0.0
    edges = []  # row index where a long rest ends
    k = 1
    while k < n:
        if rest[k]:
            e = k
            while e + 1 < n and rest[e + 1]:
                e += 1
            if t[e] - t[k - 1] >= min_rest_s:
                edges.append(e)
            k = e + 1
        else:
            k += 1
    blocks = []
    start = 0
    for e in edges:
        if np.any(i[start + 1:e + 1] != 0.0):
            blocks.append((start, e + 1))
        start = e
    return blocks


def _filt(a, u):
    return lfilter([1.0 - a], [1.0, -a], u)


def local_fit(t, i, v, ocv, tau1_range=TAU1_RANGE, tau2_range=TAU2_RANGE):
    """Constant-parameter ECM on one block: returns dict r0, r0c, r1, tau1, r2, tau2, dv."""
    dt = float(np.median(np.diff(t)))
    y = ocv - v
    ipos = np.where(i > 0, i, 0.0)
    ineg = np.where(i < 0, i, 0.0)
    ones = np.ones_like(i)
    has_chg = np.any(i < 0)

    def design(lt):
        a1 = math.exp(-dt / math.exp(lt[0]))
        a2 = math.exp(-dt / math.exp(lt[1]))
        cols = [ipos, _filt(a1, i), _filt(a2, i), -ones]
        if has_chg:
            cols.insert(1, ineg)
        return np.column_stack(cols)

    def solve(lt):
        X = design(lt)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        return coef, y - X @ coef

    best = None
    for t1 in np.geomspace(1.0, 40.0, 6):
        for t2 in np.geomspace(60.0, 2000.0, 6):
            lt = np.log([t1, t2])
            r = solve(lt)[1]
            c = float(r @ r)
            if best is None or c < best[0]:
                best = (c, lt)
    lb = np.log([tau1_range[0], tau2_range[0]])
    ub = np.log([tau1_range[1], tau2_range[1]])
    res = least_squares(lambda lt: solve(lt)[1], np.clip(best[1], lb + 1e-6, ub - 1e-6),
                        bounds=(lb, ub), x_scale=1.0, diff_step=1e-4, max_nfev=60)
    coef, r = solve(res.x)
    tau1, tau2 = np.exp(res.x)
    if has_chg:
        r0, r0c, r1, r2, dv = coef
    else:
        r0, r1, r2, dv = coef
        r0c = r0
    return {"r0": r0, "r0c": r0c, "r1": r1, "tau1": tau1, "r2": r2, "tau2": tau2, "dv": dv,
            "rms": float(np.sqrt(np.mean(r * r)))}


def initial_tables(cases, capacity_ah, soc_grid, temps, ocv_tab, tau1_range=TAU1_RANGE,
                   tau2_range=TAU2_RANGE):
    """First estimate of every table from per-block fits of the HPPC traces (the time
    constants stay these for the rest of the fit)."""
    g = np.asarray(soc_grid)
    out = {k: np.zeros((len(temps), len(g))) for k in
           ("r0_ohm", "r0c_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s")}
    found = []
    per_temp = {}
    for c in cases:
        if c.profile != "hppc" or c.role != "fit":
            continue
        soc = case_soc(c, capacity_ah)
        tc = c.cols.get("temp_core_c", c.cols["temperature_c"])
        pts = []
        for a, b in hppc_blocks(c):
            sl = slice(a, b)
            ocv = ecm.interp2(g, temps, ocv_tab, soc[sl], tc[sl])
            try:
                f = local_fit(c.cols["time_s"][sl], c.cols["current_a"][sl],
                              c.cols["voltage_v"][sl], ocv, tau1_range, tau2_range)
            except (ValueError, np.linalg.LinAlgError):
                continue
            if min(f["r0"], f["r1"], f["r2"]) <= 0:
                continue
            f["soc"] = float(np.mean(soc[sl]))
            f["temp"] = float(np.mean(tc[sl]))
            pts.append(f)
        if pts:
            per_temp[c.ambient_c] = pts
            found.append(c.ambient_c)
    if not per_temp:
        raise UserError("no usable HPPC pulse was found in the fit traces")
    # interpolate each temperature's block results onto the soc grid; temperatures of the
    # grid without HPPC take the nearest HPPC temperature with an Arrhenius-like scaling
    have = sorted(per_temp)
    for j, T in enumerate(temps):
        src = min(have, key=lambda h: abs(h - T))
        pts = sorted(per_temp[src], key=lambda f: f["soc"])
        s = np.array([f["soc"] for f in pts])
        scale = math.exp(0.04 * (src - T)) if src != T else 1.0
        for key, name in (("r0", "r0_ohm"), ("r0c", "r0c_ohm"), ("r1", "r1_ohm"),
                          ("r2", "r2_ohm")):
            vals = np.array([f[key] for f in pts])
            out[name][j] = np.exp(np.interp(g, s, np.log(np.maximum(vals, 1e-5)))) * scale
        for key, name, rng in (("tau1", "tau1_s", tau1_range), ("tau2", "tau2_s", tau2_range)):
            vals = np.log(np.array([f[key] for f in pts]))
            sm = _smooth(vals, 1)
            out[name][j] = np.clip(np.exp(np.interp(g, s, sm)), *rng)
    return out, per_temp


def _smooth(v, w):
    if len(v) < 3:
        return v
    p = np.pad(v, w, mode="edge")
    k = np.ones(2 * w + 1) / (2 * w + 1)
    return np.convolve(p, k, mode="valid")
