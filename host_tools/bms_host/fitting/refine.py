"""Step 4: the tables by least squares around a variable projection over the exchange
current, the diffusion-shift search and the Arrhenius column above the warmest ambient."""
import math

import numpy as np
from scipy.optimize import least_squares

from .. import ecm, use_device_code
from .options import I0_ACTIVATION_K
from .problem import i0_table, LinearProblem

use_device_code()
from bms import model  # noqa: E402


def global_refine(cases, capacity_ah, grid_soc, grid_t, tabs, ocv_c20, opts, log=None,
                  phi0=None):
    """Linear tables (OCV, R0, R0c, R1, R2) by least squares and, around it, the exchange
    current i0 by variable projection: log i0 at a few SOC knots per temperature are the
    only nonlinear parameters (Gauss-Newton, scipy least_squares); for each trial i0 the
    linear tables are re-solved. phi0: a start for log i0 (nt, knots), e.g. from an
    earlier refinement. Returns the tables including i0_a, and info (with "phi")."""
    lp = LinearProblem(cases, capacity_ah, grid_soc, grid_t, tabs, ocv_c20, opts)
    nt = len(grid_t)
    knots = np.asarray(opts["i0_soc_knots"], dtype=float)
    nk = len(knots)
    info = {}
    if opts["kinetic"] and lp.items:
        lo, hi = math.log(opts["i0_range_a"][0]), math.log(opts["i0_range_a"][1])
        # log i0 of the table entries = B @ phi: linear in log i0 along SOC between knots
        ns = len(grid_soc)
        basis = np.array([np.interp(grid_soc, knots, np.eye(nk)[k]) for k in range(nk)]).T
        B = np.zeros((nt * ns, nt * nk))
        for j in range(nt):
            B[j * ns:(j + 1) * ns, j * nk:(j + 1) * nk] = basis
        # regularisation of phi: curvature and (weakly) slope along SOC, and curvature of
        # log i0 against 1/T (Arrhenius: a straight line)
        regs = []
        lam_c, lam_s, lam_t = opts["i0_smooth"], opts["i0_smooth_slope"], opts["i0_smooth_t"]
        for j in range(nt):
            for k in range(nk - 1):
                r = np.zeros(nt * nk)
                r[j * nk + k:j * nk + k + 2] = (-lam_s, lam_s)
                regs.append(r)
            for k in range(1, nk - 1):
                r = np.zeros(nt * nk)
                r[j * nk + k - 1:j * nk + k + 2] = (lam_c, -2 * lam_c, lam_c)
                regs.append(r)
        invT = 1.0 / (np.asarray(grid_t, dtype=float) + 273.15)
        for j in range(1, nt - 1):
            h0, h1 = invT[j] - invT[j - 1], invT[j + 1] - invT[j]
            cf = np.array([1.0 / h0, -(1.0 / h0 + 1.0 / h1), 1.0 / h1]) * (h0 + h1) / 2.0
            cf *= lam_t / abs(cf[1])
            for k in range(nk):
                r = np.zeros(nt * nk)
                for jj, c in zip((j - 1, j, j + 1), cf, strict=True):
                    r[jj * nk + k] = c
                regs.append(r)
        rhs = [0.0] * len(regs)
        # a column beyond the data (extend_temperature): log i0 one Arrhenius step
        # (I0_ACTIVATION_K) above its warmer neighbour, firmly
        for j in opts.get("_i0_tie_t", opts.get("_strong_prior_t", ())):
            for k in range(nk):
                r = np.zeros(nt * nk)
                r[j * nk + k], r[(j - 1) * nk + k] = 1.0, -1.0
                regs.append(r)
                rhs.append(I0_ACTIVATION_K * (invT[j - 1] - invT[j]))
        # columns without data of their own (measured data: between and beyond the
        # ambients): log i0 held firmly at a given row (Arrhenius from the data columns)
        for j, row in opts.get("_i0_prior", {}).items():
            for k in range(nk):
                r = np.zeros(nt * nk)
                r[j * nk + k] = 1.0
                regs.append(r)
                rhs.append(float(row[k]))
        Rphi = np.array(regs) if regs else np.zeros((0, nt * nk))
        rphi = np.array(rhs)

        def resid(phi):
            r = lp.residuals(i0_table(phi.reshape(nt, nk), knots, grid_soc))
            return np.concatenate([r, Rphi @ phi - rphi])

        def jac(phi):
            J = lp.jacobian(i0_table(phi.reshape(nt, nk), knots, grid_soc), B)
            return np.vstack([J, Rphi])

        # start: one i0 per temperature, the best of a coarse scan (all temperatures at
        # once: the rows of one temperature barely see the others')
        if phi0 is None:
            best = None
            for g in np.linspace(math.log(0.1), math.log(30.0), 8):
                c = float(np.sum(resid(np.full(nt * nk, g)) ** 2))
                if best is None or c < best[0]:
                    best = (c, g)
            phi0 = np.full(nt * nk, best[1])
        phi0 = np.clip(np.asarray(phi0, dtype=float).ravel(), lo, hi)
        res = least_squares(resid, phi0, jac=jac, bounds=(lo, hi), x_scale=1.0,
                            max_nfev=opts["i0_max_nfev"], method="trf")
        phi = res.x.reshape(nt, nk)
        info = {"i0_nfev": int(res.nfev), "i0_cost": float(res.cost), "phi": phi}
        i0 = i0_table(phi, knots, grid_soc)
    else:
        i0 = np.full((nt, len(grid_soc)), model.I0_NONE)
    x, _ = lp.solve(i0, bounded=True)
    info["trace_rms_mv"] = 1e3 * lp.trace_rms(i0, x) if lp.items else float("nan")
    new = dict(tabs)
    new.update(lp.tables(x))
    new["i0_a"] = i0
    if log:
        log("fit: i0 (A) at SOC %s: %s" % (
            ",".join("%g" % k for k in knots),
            "; ".join("%g degC %s" % (T, ",".join("%.3g" % v for v in
                                                  np.interp(knots, grid_soc, i0[j])))
                      for j, T in enumerate(grid_t))))
    return new, info


def extend_temperature(temps, tabs, ocv, t_new):
    """Append a table column at t_new above the data: resistances, time constants and the
    exchange current follow Arrhenius (log linear in 1/T) from the two warmest columns,
    never rising (a resistance) and never falling (i0) with temperature; the OCV is held.
    A cell heating past its warmest ambient (a fast charge at 45 degC reaches 65 degC) then
    sees falling resistance instead of the clamped 45 degC values. The fit pulls the column
    firmly to these values (few data reach it)."""
    x = 1.0 / (np.asarray(temps, dtype=float) + 273.15)
    xe = 1.0 / (t_new + 273.15)
    f = (xe - x[-1]) / (x[-1] - x[-2])
    out = {}
    for name, a in tabs.items():
        a = np.asarray(a, dtype=float)
        if name == "ocv_v":
            col = a[-1]
        else:
            # resistances and time constants fall with temperature, i0 rises
            lo, hi = (1.0, 10.0) if name == "i0_a" else (0.2, 1.0)
            col = a[-1] * np.clip((a[-1] / a[-2]) ** f, lo, hi)
        out[name] = np.vstack([a, col])
    ocv = np.asarray(ocv, dtype=float)
    return list(temps) + [float(t_new)], out, np.vstack([ocv, ocv[-1]])


def search_diffusion(cases, cap, grid, temps, tabs, tabs0, ocv_c20, opts, log=None,
                     none_mv=None):
    """Choose the diffusion shift (gains on discharge and charge, time constant at 25 degC,
    activation) among a few candidates: for each, the linear tables are re-solved at the
    exchange currents of the fit without the shift (tabs0), and the candidate scores the
    RMS voltage error of the fit-role traces (at their measured core temperature).
    Held-out traces take no part. none_mv: the score of no shift, when the refinement
    that made tabs0 already has it (the same problem)."""
    def score(dif):
        lp = LinearProblem(cases, cap, grid, temps, tabs, ocv_c20, dict(opts, diffusion=dif))
        x, _ = lp.solve(tabs0["i0_a"], bounded=True)
        return 1e3 * lp.trace_rms(tabs0["i0_a"], x)

    none = dict(ecm.NO_DIFFUSION, activation_k=opts["shift_activation_k"], shift_per_a_chg=0.0)
    results = [(none_mv if none_mv is not None else score(none), none)]
    for cand in opts["shift_candidates"]:
        dif = {"shift_per_a": cand["g"], "tau_s": cand["tau_s"],
               "activation_k": cand.get("e_k", opts["shift_activation_k"]),
               "shift_per_a_chg": cand.get("g_chg", cand["g"])}
        results.append((score(dif), dif))
    scores = ["%s: %.2f mV" % (_dif_str(dif), sc) for sc, dif in results]
    best = min(results, key=lambda r: r[0])
    if log:
        log("fit: diffusion shift candidates (RMS over fit traces) %s; chose %s"
            % ("; ".join(scores), _dif_str(best[1])))
    return best[1]


def _dif_str(dif):
    return "%g/A (charge %g/A) %g s %g K" % (dif["shift_per_a"], dif["shift_per_a_chg"],
                                            dif["tau_s"], dif["activation_k"])
