"""Step 5: the core-surface-ambient network and the ohmic heat's own table."""
import math

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from .. import ecm
from .dataset import case_shift, case_soc
from .problem import bilinear


def fit_thermal(cases, tables, capacity_ah, opts):
    """c_core, c_surf, r_cs, r_sa by least squares on the fit traces' temperatures."""
    runs = []
    tw = opts.get("thermal_weights", {})
    for c in cases:
        if c.role != "fit" or tw.get(c.profile, 1.0) <= 0.0:
            continue
        soc = case_soc(c, capacity_ah)
        tcm = c.cols.get("temp_core_c", c.cols["temperature_c"])
        if opts["thermal_heat"] == "data":
            # the heat the data imply (irreversible: i * (OCV - V)), so that the thermal
            # parameters do not absorb the electrical model's error
            i = c.cols["current_a"]
            # OCV at the diffusion-shifted SOC: the particles' concentration polarisation
            # is not dissipated (as in the model's heat)
            d = case_shift(c, tables.diffusion)
            ocv = tables.ocv(soc if d is None else soc - d, tcm)
            v = c.cols["voltage_v"]
            heat = np.zeros(len(i))
            heat[1:] = i[1:] * (0.5 * (ocv[1:] + ocv[:-1]) - v[1:])
        else:
            heat = ecm.simulate(tables, c.cols["time_s"], c.cols["current_a"],
                                c.cols["ambient_c"], soc[0], tcm[0], c.cols["temperature_c"][0],
                                temp_core_c=tcm)["heat_w"]
        # the part of that heat that is the slow RC pair's i*v2 (model v2 before the step,
        # driven at the measured core temperature): heat = q - (1 - k2) * q2
        q2 = np.zeros(len(soc))
        if opts.get("fit_heat_v2", True):
            sim = ecm.simulate(tables, c.cols["time_s"], c.cols["current_a"],
                               c.cols["ambient_c"], soc[0], tcm[0], c.cols["temperature_c"][0],
                               temp_core_c=tcm)
            q2[1:] = c.cols["current_a"][1:] * sim["v2"][:-1]
        sel = np.arange(0, len(soc), max(1, len(soc) // 4000))
        runs.append((c, heat, q2, sel, math.sqrt(tw.get(c.profile, 1.0) / len(sel))))
    names = ("c_core_j_per_k", "c_surf_j_per_k", "r_core_surf_k_per_w", "r_surf_amb_k_per_w")
    fit_k2 = bool(opts.get("fit_heat_v2", True))
    x0 = np.log([70.0, 5.0, 2.0, 10.0])
    if fit_k2:
        x0 = np.concatenate([x0, [0.5]])
    w_core = opts["core_temp_weight"]

    def resid(x):
        th = dict(zip(names, np.exp(x[:4]), strict=True))
        k2 = x[4] if fit_k2 else 1.0
        out = []
        for c, q0, q2, sel, w in runs:
            q = q0 - (1.0 - k2) * q2
            ts_m = c.cols["temperature_c"]
            tc_m = c.cols.get("temp_core_c")
            tc, ts = ecm.simulate_thermal(c.cols["time_s"], q, c.cols["ambient_c"], th,
                                          tc_m[0] if tc_m is not None else ts_m[0], ts_m[0])
            out.append((ts[sel] - ts_m[sel]) * w)
            if tc_m is not None and w_core > 0:
                out.append((tc[sel] - tc_m[sel]) * w * w_core)
        return np.concatenate(out)

    lb = np.log([1.0, 0.1, 0.01, 0.1])
    ub = np.log([2000.0, 500.0, 100.0, 500.0])
    if fit_k2:
        lb = np.concatenate([lb, [0.0]])
        ub = np.concatenate([ub, [1.0]])
    res = least_squares(resid, x0, bounds=(lb, ub), x_scale=1.0, diff_step=1e-3, max_nfev=200)
    out = {k: float(v) for k, v in zip(names, np.exp(res.x[:4]), strict=True)}
    if fit_k2:
        out["heat_v2_fraction"] = float(min(1.0, max(0.0, res.x[4])))
    return out


def fit_heat_table(cases, tables, capacity_ah, opts, c_core):
    """The heat with an ohmic part of its own, heat = i^2 Rh(soc, T) + i*eta + k1 i v1 +
    k2 i v2, and the network, from the fit traces' core and surface temperatures by
    equation error (backward Euler, as the model steps): the surface node alone gives
    a = 1 / (C_s R_cs) and b = 1 / (C_s R_sa) by linear regression; then, with the core's
    heat capacity held at c_core (heat and network scale together: temperatures alone do
    not fix the scale), the core node is linear in 1/R_cs, Rh, k1 and k2. Why: R0 is shaped
    for the voltage (it takes up polarisation that the cell does not dissipate, e.g. at
    the end-of-discharge knee), so heat from R0 runs the cold discharge's surface 0.7 degC
    off whatever the network. Returns (rh table (nt, ns), thermal dict), or None when a
    fit trace has no core temperature."""
    tw = opts.get("thermal_weights", {})
    runs = [c for c in cases if c.role == "fit" and tw.get(c.profile, 1.0) > 0.0]
    if not runs or any("temp_core_c" not in c.cols for c in runs):
        return None
    grid_s, grid_t = tables.soc, tables.temp
    ns, nt = len(grid_s), len(grid_t)
    npar = ns * nt
    xa, ya, rows = [], [], []
    for c in runs:
        t, i = c.cols["time_s"], c.cols["current_a"]
        tc, ts, ta = c.cols["temp_core_c"], c.cols["temperature_c"], c.cols["ambient_c"]
        soc = case_soc(c, capacity_ah)
        sim = ecm.simulate(tables, t, i, ta, soc[0], tc[0], ts[0], temp_core_c=tc)
        dt = np.diff(t)
        sel = np.arange(0, len(dt), max(1, len(dt) // 3000))
        w = math.sqrt(tw.get(c.profile, 1.0) / len(sel))
        # surface node: dTs/dt = a (Tc - Ts) - b (Ts - Ta), at the step's end
        xa.append(np.array([tc[1:] - ts[1:], ts[1:] - ta[1:]]).T[sel] * w)
        ya.append((np.diff(ts) / dt)[sel] * w)
        # core node; the step into row k takes its parameters at row k - 1
        idx, wts = bilinear(grid_s, grid_t, soc[:-1], tc[:-1])
        ik = i[1:]
        eta = ik * ecm.kinetic_np(ik, tables.lookup("i0_a", soc[:-1], tc[:-1]), tc[:-1])
        B = np.zeros((len(sel), npar))
        np.add.at(B, (np.repeat(np.arange(len(sel)), 4), idx[sel].ravel()),
                  (wts[sel] * (ik[sel] ** 2)[:, None]).ravel())
        X = np.hstack([(tc[1:] - ts[1:])[sel, None], -B, -(ik * sim["v1"][:-1])[sel, None],
                       -(ik * sim["v2"][:-1])[sel, None]])
        rows.append((X * w, (eta - c_core * np.diff(tc) / dt)[sel] * w))
    (a, b), *_ = np.linalg.lstsq(np.vstack(xa), np.concatenate(ya), rcond=None)
    b = -b
    if not (a > 0.0 and b > 0.0):
        return None
    # regularisation: smooth along SOC, a weak pull to R0 (firm where no row reaches)
    r0 = np.asarray(tables.tab["r0_ohm"], dtype=float)
    sc = float(np.mean(r0))
    support = np.zeros(npar)
    for X, _ in rows:
        support += np.sum(X[:, 1:1 + npar] != 0, axis=0)
    regs, rhs = [], []
    lam_s, lam_p = opts["heat_smooth"], opts["heat_prior"]
    for j in range(nt):
        for k in range(1, ns - 1):
            r = np.zeros(npar + 3)
            r[1 + j * ns + k - 1:1 + j * ns + k + 2] = np.array([1.0, -2.0, 1.0]) * lam_s / sc
            regs.append(r)
            rhs.append(0.0)
        for k in range(ns):
            gi = j * ns + k
            lam = lam_p * (30.0 if support[gi] < 20 else 1.0) / sc
            r = np.zeros(npar + 3)
            r[1 + gi] = lam
            regs.append(r)
            rhs.append(lam * r0[j, k])
    A = np.vstack([X for X, _ in rows] + [np.array(regs)])
    y = np.concatenate([v for _, v in rows] + [np.array(rhs)])
    lb = np.concatenate([[1e-3], np.full(npar, 1e-5), [0.0, 0.0]])
    ub = np.concatenate([[100.0], np.full(npar, 1.0), [1.0, 1.0]])
    # the same least squares on the triangle of A's QR (138 columns, not 60k rows):
    # the bounded solver's iterations then cost nothing
    q, r = np.linalg.qr(A)
    res = lsq_linear(r, q.T @ y, bounds=(lb, ub), method="bvls")
    g = float(res.x[0])
    c_surf = g / a
    thermal = {"c_core_j_per_k": float(c_core), "c_surf_j_per_k": float(c_surf),
               "r_core_surf_k_per_w": 1.0 / g, "r_surf_amb_k_per_w": float(1.0 / (b * c_surf)),
               "heat_v1_fraction": float(res.x[-2]), "heat_v2_fraction": float(res.x[-1])}
    return res.x[1:1 + npar].reshape(nt, ns), thermal
