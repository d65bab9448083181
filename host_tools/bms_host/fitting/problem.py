"""Step 4's least-squares problem: with the time constants fixed, the terminal voltage is
linear in the OCV, R0, R0c, R1, R2 and R2c tables; design rows, weights and regularisation."""
import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import lsq_linear

from .. import ecm
from .dataset import case_shift, case_soc
from .ocv import monotone
from .options import REST_OCV_S


LIN = ("ocv_v", "r0_ohm", "r0c_ohm", "r1_ohm", "r2_ohm", "r2c_ohm")


def bilinear(grid_soc, grid_t, soc, tc):
    """Flat table indices (n, 4) and bilinear weights (n, 4) at (soc, tc) per row."""
    ns, nt = len(grid_soc), len(grid_t)
    si, sw = ecm.bracket(grid_soc, soc)
    tj, tw = ecm.bracket(grid_t, tc)
    si1 = np.minimum(si + 1, ns - 1)
    tj1 = np.minimum(tj + 1, nt - 1)
    idx = np.stack([tj * ns + si, tj * ns + si1, tj1 * ns + si, tj1 * ns + si1], axis=1)
    wts = np.stack([(1 - sw) * (1 - tw), sw * (1 - tw), (1 - sw) * tw, sw * tw], axis=1)
    return idx, wts


def _ocv_weights(grid_soc, grid_t, soc, tc):
    """Flat indices and weights (n, 8) of the OCV nodes per row, read as model.lookup
    does: bilinear, and past the top of the SOC grid rising with the mean slope of the
    grid's top span (ecm.top_span; weight 1 + e on the top, -e on the point a span below)."""
    idx, wts = bilinear(grid_soc, grid_t, soc, tc)
    top = grid_soc[-1]
    if not np.any(soc > top):
        return idx, wts
    span = ecm.top_span(grid_soc)
    e = (np.maximum(soc - top, 0.0) / span)[:, None]
    lidx, lwts = bilinear(grid_soc, grid_t, np.full(len(soc), top - span), tc)
    return np.hstack([idx, lidx]), np.hstack([wts * (1.0 + e), -lwts * e])


def _weights_matrix(idx, wts, loc, q):
    n = len(idx)
    W = np.zeros((n, q))
    for c in range(idx.shape[1]):
        np.add.at(W, (np.arange(n), loc[idx[:, c]]), wts[:, c])
    return W


def _regressors(case, soc, grid_soc, grid_t, tau1, tau2, row_sel, shift=None):
    """Rows (selected) of the design matrix of V for one trace, at measured core temperature.
    shift: the diffusion shift per row (the OCV columns are read at soc - shift).

    Returns (X, cols, v): X (m, q) over the global parameter indices cols; the model voltage
    is X @ theta[cols] with theta = concat of LIN tables (each nt*ns, row-major)."""
    ns, nt = len(grid_soc), len(grid_t)
    npar = ns * nt
    t = case.cols["time_s"]
    i = case.cols["current_a"]
    tc = case.cols.get("temp_core_c", case.cols["temperature_c"])
    n = len(t)
    dt = ecm.dts(t)
    # bilinear weights as 4 (index, weight) pairs per row
    idx, wts = bilinear(grid_soc, grid_t, soc, tc)
    active = np.unique(idx[wts > 0])
    loc = np.full(npar, -1)
    loc[active] = np.arange(len(active))
    q = len(active)
    W = _weights_matrix(idx, wts, loc, q)
    # taus at the pre-step state (row k-1), as the model does
    t1 = (W @ tau1.ravel()[active])
    t2 = (W @ tau2.ravel()[active])
    a1 = np.ones(n)
    a2 = np.ones(n)
    a1[1:] = np.exp(-dt[1:] / t1[:-1])
    a2[1:] = np.exp(-dt[1:] / t2[:-1])
    U = np.zeros((n, q))
    U[1:] = W[:-1] * i[1:, None]
    F1 = _ltv_cols(a1, U * (1.0 - a1)[:, None])
    # the slow RC pair takes R2 on discharge steps and R2c on charge steps (the model
    # chooses by the sign of the step's current): two sets of columns, one time constant
    chg = np.zeros(n, dtype=bool)
    chg[1:] = i[1:] < 0.0
    U2 = U * (1.0 - a2)[:, None]
    F2d = _ltv_cols(a2, np.where(chg[:, None], 0.0, U2))
    F2c = _ltv_cols(a2, np.where(chg[:, None], U2, 0.0))
    ipos = np.where(i > 0, i, 0.0)[:, None]
    ineg = np.where(i < 0, i, 0.0)[:, None]
    r = row_sel
    ocv_cols = active
    Wo = W[r]
    # the OCV columns: at the shifted SOC, rising past the top of the grid (model.lookup)
    so = soc[r] if shift is None else soc[r] - shift[r]
    if np.any(so != soc[r]) or np.any(so > grid_soc[-1]):
        oidx, owts = _ocv_weights(grid_soc, grid_t, so, tc[r])
        ocv_cols = np.unique(oidx[owts != 0.0])
        oloc = np.full(npar, -1)
        oloc[ocv_cols] = np.arange(len(ocv_cols))
        Wo = _weights_matrix(oidx, np.where(oloc[oidx] >= 0, owts, 0.0), oloc,
                             len(ocv_cols))
    blocks = [Wo, -(W[r] * ipos[r]), -(W[r] * ineg[r]), -F1[r], -F2d[r], -F2c[r]]
    X = np.hstack(blocks)
    cols = np.concatenate([ocv_cols] + [active + k * npar for k in range(1, len(LIN))])
    return X, cols


def _ltv_cols(a, U):
    """x_k = a_k x_{k-1} + U_k, all columns at once, restricted to each column's support."""
    n, q = U.shape
    X = np.zeros((n, q))
    if q == 0:
        return X
    nz = np.nonzero(np.any(U != 0.0, axis=1))[0]
    if len(nz) == 0:
        return X
    al = a.tolist()
    x = np.zeros(q)
    start = nz[0]
    for k in range(start, n):
        x = al[k] * x + U[k]
        X[k] = x
    return X


def rest_time(case):
    """Seconds each row has rested (0 under load)."""
    t = case.cols["time_s"]
    i = case.cols["current_a"]
    since = np.zeros(len(t))
    last = t[0]
    for k in range(len(t)):
        if i[k] != 0.0:
            last = t[k]
        since[k] = t[k] - last
    return since


def _rest_gaps(support_row):
    """Nodes of one temperature's SOC grid that no rest reaches but that lie between two
    that one does."""
    have = np.nonzero(support_row >= 1.0)[0]
    gap = np.zeros(len(support_row), dtype=bool)
    if len(have) >= 2:
        gap[have[0]:have[-1] + 1] = support_row[have[0]:have[-1] + 1] < 1.0
    return gap


def _below_rests(support_row):
    """Nodes of one temperature's SOC grid below the lowest that a rest reaches."""
    have = np.nonzero(support_row >= 1.0)[0]
    below = np.zeros(len(support_row), dtype=bool)
    if len(have):
        below[:have[0]] = True
    return below


def _relaxed_voltage(case):
    """Terminal voltage with each long rest's rows rested REST_OCV_S or more moved to the
    voltage the rest relaxes to. A cold rest still drifts at its end (LG M50 at 0 degC,
    30 min after a pulse: 15-30 mV/h, 4-9 mV short of the OCV), and those rows weigh as
    the OCV: extrapolating the tail, v = v_inf + b exp(-t/tau) fitted over the rest's
    second half, takes about half of that gap off. tau is held within that half, so a
    drift the tail cannot resolve is extrapolated no further than its own length."""
    since = rest_time(case)
    v = case.cols["voltage_v"]
    out = np.array(v, dtype=float)
    rest = case.cols["current_a"] == 0.0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rest.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        dur = since[b - 1]
        if dur < REST_OCV_S:
            continue
        k = np.arange(a, b)
        tail = k[since[k] >= 0.5 * dur]
        if len(tail) < 5:
            continue
        dt = since[tail] - dur
        best = None
        for tau in np.geomspace(0.05 * dur, 0.5 * dur, 40):
            A = np.column_stack([np.ones(len(tail)), np.exp(-dt / tau)])
            c = np.linalg.lstsq(A, v[tail], rcond=None)[0]
            sse = float(np.sum((A @ c - v[tail]) ** 2))
            if best is None or sse < best[0]:
                best = (sse, c[1], tau)
        _, amp, tau = best
        late = k[since[k] >= REST_OCV_S]
        out[late] -= amp * np.exp((dur - since[late]) / tau)
    return out


def _trace_rows(case, rows, mult, norm):
    """The row count a trace's weight is divided by: "rows", every selected row (the
    rested ones rest_weight times over, so long rests dilute the trace's pulses); "loaded",
    its rows under load (each trace's loaded rows count the same, and the rests come on
    top: an HPPC trace, a fifth of its selected rows under load, then weighs its pulses as
    a DST trace does)."""
    if norm == "loaded":
        return max(1, int(np.count_nonzero(case.cols["current_a"][rows])))
    return int(np.sum(mult))


def _row_selection(case, rest_weight=1):
    """Rows used in the least squares and how many times each counts: all rows under load
    and the first minute of every rest, then every 10th row of long rests (they change
    slowly). Rows rested 10 minutes or more are the OCV as the filter sees it at rest: they
    count rest_weight times (a row weight, not repeated rows: the same least squares)."""
    since = rest_time(case)
    n = len(since)
    keep = (since <= 60.0) | (np.arange(n) % 10 == 0)
    keep[0] = True
    rows = np.nonzero(keep)[0]
    mult = np.where(since[rows] >= REST_OCV_S, float(max(1, int(rest_weight))), 1.0)
    return rows, mult


def _wmean(a, m):
    """Mean of a's rows (or entries), row k counted m[k] times."""
    return (m @ a) / m.sum()


def i0_table(phi, knots, grid_soc):
    """Exchange-current table (nt, ns) from log i0 at the SOC knots of each temperature
    (phi: (nt, nk)), linear in log i0 along SOC."""
    phi = np.asarray(phi, dtype=float)
    return np.exp(np.array([np.interp(grid_soc, knots, row) for row in phi]))


class LinearProblem:
    """Step 4: with the time constants fixed and a given exchange-current table, the
    terminal voltage is linear in the OCV, R0, R0c, R1 and R2 tables:
        V = X theta - eta(i, i0(soc, Tc), Tc)

    so the kinetic term only moves the right-hand side (y + eta). The normal matrix, the
    bias rows and the regularisation are built once; `solve(i0)` is then cheap, which makes
    variable projection over i0 (a handful of nonlinear parameters) affordable."""
    def __init__(self, cases, capacity_ah, grid_soc, grid_t, tabs, ocv_c20, opts):
        self.grid_soc = np.asarray(grid_soc, dtype=float)
        self.grid_t = np.asarray(grid_t, dtype=float)
        ns, nt = len(grid_soc), len(grid_t)
        self.ns, self.nt = ns, nt
        npar = ns * nt
        self.npar = npar
        P = npar * len(LIN)
        self.P = P
        AtA = np.zeros((P, P))
        support = np.zeros(P)
        rest_support = np.zeros(npar)   # rested rows per OCV node (bilinear weights)
        # C/20 traces are left to the OCV step unless asked for: ls_pocv takes both,
        # ls_pocv_chg only the charge one (sustained charge: R2 on charge)
        skip = () if opts.get("ls_pocv") else \
            ("pocv_dis",) if opts.get("ls_pocv_chg") else ("pocv_dis", "pocv_chg")
        fit_cases = [c for c in cases if c.role == "fit" and c.profile not in skip]
        w_bias = opts["bias_weight"]
        self.items = []
        for c in fit_cases:
            soc = case_soc(c, capacity_ah)
            rows, m = _row_selection(c, opts.get("rest_weight", 1))
            X, cols = _regressors(c, soc, grid_soc, grid_t, tabs["tau1_s"], tabs["tau2_s"],
                                  rows, case_shift(c, opts.get("diffusion")))
            # rested rows: the voltage the rest relaxes to, if asked (rest_relax)
            y = (_relaxed_voltage(c) if opts.get("rest_relax") else c.cols["voltage_v"])[rows]
            # traces count the same, times an optional weight per profile (on its bias
            # rows too)
            pw = opts.get("profile_weights", {}).get(c.profile, 1.0)
            w = math.sqrt(pw / _trace_rows(c, rows, m, opts.get("trace_norm", "rows")))
            wb = w_bias * math.sqrt(pw)
            # per row: the trace's weight and the row's multiplicity (squared: rw * rw)
            rw = w * np.sqrt(m)
            Xw = X * rw[:, None]
            AtA[np.ix_(cols, cols)] += Xw.T @ Xw
            support[cols] += m @ (X != 0)
            i = c.cols["current_a"][rows]
            bias = []
            for mask in (i > 0, i < 0, i == 0):
                if m[mask].sum() < 5:
                    continue
                g = _wmean(X[mask], m[mask]) * wb
                AtA[np.ix_(cols, cols)] += np.outer(g, g)
                bias.append((mask, g))
            tc = c.cols.get("temp_core_c", c.cols["temperature_c"])[rows]
            idx, wts = bilinear(grid_soc, grid_t, soc[rows], tc)
            rested = rest_time(c)[rows] >= REST_OCV_S
            np.add.at(rest_support, idx[rested].ravel(), (wts * m[:, None])[rested].ravel())
            self.items.append({"case": c, "X": X, "cols": cols, "y": y, "rw": rw, "m": m,
                               "i": i, "tc": tc, "idx": idx, "wts": wts, "bias": bias,
                               "w_bias": wb})
        R, rhs = _regularisation(grid_soc, grid_t, tabs, ocv_c20, opts, support, P,
                                 rest_support)
        self.R = R
        self.rhs = rhs
        AtA += R.T @ R
        self.AtA = AtA
        self.Rtr = R.T @ rhs
        self.cho = cho_factor(AtA + 1e-14 * np.eye(P), lower=True)
        nr = len(LIN) - 1
        self.lb = np.concatenate([np.full(npar, 0.5)] + [np.full(npar, 2e-5)] * nr)
        self.ub = np.concatenate([np.full(npar, 5.0)] + [np.full(npar, 5.0)] * nr)
        self.x0 = np.concatenate([ocv_c20.ravel()]
                                 + [tabs.get(n, tabs["r2_ohm"]).ravel() for n in LIN[1:]])

    def _targets(self, i0_tab):
        """Per item: the target y + eta (the kinetic term moves to the data side)."""
        flat = np.asarray(i0_tab, dtype=float).ravel()
        out = []
        for it in self.items:
            i0 = np.sum(it["wts"] * flat[it["idx"]], axis=1)
            out.append(it["y"] + ecm.kinetic_np(it["i"], i0, it["tc"]))
        return out

    def _rhs(self, targets):
        Atb = self.Rtr.copy()
        for it, b in zip(self.items, targets, strict=True):
            Atb[it["cols"]] += it["X"].T @ (b * it["rw"] ** 2)
            for mask, g in it["bias"]:
                Atb[it["cols"]] += g * (_wmean(b[mask], it["m"][mask]) * it["w_bias"])
        return np.asarray(Atb)

    def solve(self, i0_tab, bounded=False):
        """theta (all LIN tables, flat) for this exchange-current table."""
        targets = self._targets(i0_tab)
        Atb = self._rhs(targets)
        x = cho_solve(self.cho, Atb)
        if bounded and ((x < self.lb).any() or (x > self.ub).any()):
            x = self._bounded(Atb)
        return x, targets

    def _bounded(self, Atb):
        L = self.cho[0]
        L = np.tril(L)
        z = solve_triangular(L, Atb, lower=True)
        # trf, not bvls: the same optimum (tables equal to their rounding, checked on both
        # cells) without bvls's one-variable-at-a-time active set: the LFP fit 48 -> 37 s
        res = lsq_linear(L.T, z, bounds=(self.lb, self.ub), method="trf",
                         lsq_solver="exact", tol=1e-12, max_iter=200)
        return res.x if res.status >= 0 else np.clip(self.x0, self.lb, self.ub)

    def residuals(self, i0_tab, x=None):
        """Weighted residual vector of the whole linear problem at its optimum."""
        if x is None:
            x, targets = self.solve(i0_tab)
        else:
            targets = self._targets(i0_tab)
        out = []
        for it, b in zip(self.items, targets, strict=True):
            e = it["X"] @ x[it["cols"]] - b
            out.append(e * it["rw"])
            for mask, _ in it["bias"]:
                out.append(np.array([_wmean(e[mask], it["m"][mask]) * it["w_bias"]]))
        out.append(self.R @ x - self.rhs)
        return np.concatenate(out)

    def trace_rms(self, i0_tab, x):
        """RMS over the traces of each trace's RMS voltage error (V), rows as selected."""
        targets = self._targets(i0_tab)
        ms = [float(_wmean((it["X"] @ x[it["cols"]] - b) ** 2, it["m"]))
              for it, b in zip(self.items, targets, strict=True)]
        return math.sqrt(sum(ms) / len(ms))

    def jacobian(self, i0_tab, dlog):
        """Exact Jacobian of `residuals` with respect to parameters p that move log i0 of
        the table entries by dlog (npar, np): the design matrix does not depend on i0, so
        the linear optimum moves by S = (A'A)^-1 A' db/dp and the residual by A S - db/dp
        (variable projection with a fixed design)."""
        flat = np.asarray(i0_tab, dtype=float).ravel()
        # d i0 (entries) / dp = i0 * dlog
        di0 = flat[:, None] * dlog
        Ds = []
        AtD = np.zeros((self.P, dlog.shape[1]))
        for it in self.items:
            i0 = np.sum(it["wts"] * flat[it["idx"]], axis=1)
            deta = ecm.kinetic_di0(it["i"], i0, it["tc"])
            drow = np.zeros((len(i0), dlog.shape[1]))
            for c in range(4):
                drow += it["wts"][:, c, None] * di0[it["idx"][:, c]]
            D = deta[:, None] * drow          # d target / dp, rows x np
            Ds.append(D)
            AtD[it["cols"]] += it["X"].T @ (D * (it["rw"] ** 2)[:, None])
            for mask, g in it["bias"]:
                AtD[it["cols"]] += np.outer(g, _wmean(D[mask], it["m"][mask]) * it["w_bias"])
        S = cho_solve(self.cho, AtD)
        out = []
        for it, D in zip(self.items, Ds, strict=True):
            E = it["X"] @ S[it["cols"]] - D
            out.append(E * it["rw"][:, None])
            for mask, _ in it["bias"]:
                out.append(_wmean(E[mask], it["m"][mask])[None, :] * it["w_bias"])
        out.append(self.R @ S)
        return np.vstack(out)

    def tables(self, x):
        new = {}
        for k, name in enumerate(LIN):
            new[name] = x[k * self.npar:(k + 1) * self.npar].reshape(self.nt, self.ns)
        new["ocv_v"] = np.array([monotone(r) for r in new["ocv_v"]])
        return new


def _regularisation(grid_soc, grid_t, tabs, ocv_c20, opts, support, P, rest_support=None):
    """Regularisation rows (units: volts of RMS error they are worth):
    OCV: pull to the C/20 OCV, prior_ocv_gap times firmer at nodes between two rested
    SOCs that no rest reaches, from prior_ocv_gap_from up (there the C/20 curve is the best
    interpolant of the rested OCV, and loaded rows would bend it; beyond the outermost
    rests it is left to them), and smoothness of the departure from it along SOC;
    R tables: smoothness along SOC and temperature relative to the row's size, and a weak
    pull to the HPPC first estimate (strong where the data do not reach)."""
    ns, nt = len(grid_soc), len(grid_t)
    npar = ns * nt
    prior = {"ocv_v": ocv_c20, "r0_ohm": tabs["r0_ohm"], "r0c_ohm": tabs["r0c_ohm"],
             "r1_ohm": tabs["r1_ohm"], "r2_ohm": tabs["r2_ohm"],
             "r2c_ohm": tabs.get("r2c_ohm", tabs["r2_ohm"])}
    regs = []
    rhs = []
    for k, name in enumerate(LIN):
        off = k * npar
        pr = prior[name]
        if name == "ocv_v":
            lam_s, lam_p, lam_t = opts["smooth_ocv"], opts["prior_ocv"], 0.0
            sc = np.ones(nt)
        else:
            lam_s, lam_p, lam_t = opts["smooth_r"], opts["prior_r"], opts["smooth_r_temp"]
            sc = np.mean(pr, axis=1)
        for j in range(nt):
            gap = _rest_gaps(rest_support[j * ns:(j + 1) * ns]) if name == "ocv_v" \
                and rest_support is not None else np.zeros(ns, dtype=bool)
            below = _below_rests(rest_support[j * ns:(j + 1) * ns]) if name == "ocv_v" \
                and rest_support is not None else np.zeros(ns, dtype=bool)
            for s in range(1, ns - 1):
                r = np.zeros(P)
                r[off + j * ns + s - 1:off + j * ns + s + 2] = np.array([1.0, -2.0, 1.0])
                r *= lam_s / sc[j]
                regs.append(r)
                rhs.append(float(r[off + j * ns + s - 1:off + j * ns + s + 2]
                                 @ pr[j, s - 1:s + 2]) if name == "ocv_v" else 0.0)
            strong = j in opts.get("_strong_prior_t", ())
            for s in range(ns):
                if name == "r2c_ohm" and opts.get("r2c_tie", 0.0) > 0 and not strong:
                    break  # held by its tie to R2 instead (below)
                gi = off + j * ns + s
                # strong_prior: how much firmer a column without data is held
                lam = lam_p * (opts.get("strong_prior", 30.0) if strong
                               else 30.0 if support[gi] < 20 else 1.0)
                if gap[s] and grid_soc[s] >= opts["prior_ocv_gap_from"]:
                    lam *= opts["prior_ocv_gap"]
                if name == "ocv_v" and s == ns - 1:
                    lam *= opts.get("prior_ocv_full", 1.0)
                if name == "ocv_v" and below[s]:
                    lam *= opts.get("prior_ocv_low", 1.0)
                r = np.zeros(P)
                r[gi] = lam / sc[j]
                regs.append(r)
                rhs.append(lam / sc[j] * pr[j, s])
        if lam_t > 0 and nt > 2:
            for j in range(1, nt - 1):
                for s in range(ns):
                    r = np.zeros(P)
                    for jj, cf in ((j - 1, 1.0), (j, -2.0), (j + 1, 1.0)):
                        r[off + jj * ns + s] = cf * lam_t / sc[jj]
                    regs.append(r)
                    rhs.append(0.0)
    # R2 on charge: tied to R2 on discharge (relative difference), so that it departs
    # from it only where charge data ask for it
    lam_tie = opts.get("r2c_tie", 0.0)
    if lam_tie > 0 and "r2c_ohm" in LIN:
        o2, oc = LIN.index("r2_ohm") * npar, LIN.index("r2c_ohm") * npar
        sc = np.mean(prior["r2_ohm"], axis=1)
        for j in range(nt):
            for s in range(ns):
                r = np.zeros(P)
                r[oc + j * ns + s] = lam_tie / sc[j]
                r[o2 + j * ns + s] = -lam_tie / sc[j]
                regs.append(r)
                rhs.append(0.0)
    return np.array(regs), np.array(rhs)
