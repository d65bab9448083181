"""Voltage hysteresis (device/bms/hysteresis.py) from the C/20 pair and the fit traces.

M, the half gap: the C/20 charge and discharge differ by the C/20 overpotential both
ways plus 2M. Simulating both with the fitted model (which has no hysteresis yet), the
OCV cancels in the difference of the two residuals, leaving M = (r_chg - r_dis) / 2 at
each SOC (less reliable where the OCV is steep: _steep_ends). gamma, how fast a branch
switch goes, and the level of M: from rested voltages on both sides of current reversals
(the minor-loop test), where M*h is all that changes from one rest to the next, and from
rests on the two branches at nearby SOCs where the OCV is flat (_branch_pairs).
"""
import copy
import math

import numpy as np
from scipy.optimize import minimize_scalar

from .. import ecm
from .dataset import case_soc
from .problem import rest_time

GAMMAS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
# below this median M (mV) over the SOC grid's middle there is no hysteresis worth a
# state: a C/20 pair always differs by a little model error both ways
MIN_MEDIAN_MV = 2.0
REST_END_S = 600.0
LOAD_MAX_SOC = 0.02    # rests after loads of up to this much SOC
GROUP_SOC = 0.04
GAMMA_DEFAULT = 50.0   # no trace with rests on both sides of a current reversal
# Where the OCV is steep the pair cannot show M: the model's C/20 curves off by a fraction
# of a point of SOC, times the slope, swamp a 10 mV gap (LFP: the pair's M at 97.5 % SOC
# -3 mV, at 99 % -36, where the cell's is ~6 and ~1). Out from the flattest node M is the
# pair's up to the last node no steeper than RESOLVE_MV_PER_PCT; beyond it M holds that
# value and falls to zero over the last END_TAPER_SOC of the window, where a full or empty
# cell rests on its cut-off (one phase, no gap). Left at the pair's few mV there, the gap
# the cell has near full was missed (LFP aggressive drive from full: 1.2 % SOC RMSE).
RESOLVE_MV_PER_PCT = 5.0
END_TAPER_SOC = 0.05
# Branch pairs (_branch_pairs): a rest this long after a load that left the cell on one
# branch (|h| >= BRANCH_H) is its rested voltage on that branch; a rest on the other branch
# is paired with it where the OCV is at most FLAT_MV_PER_PCT steep. The minor loops alone
# (two SOCs) left M 1-2.6 mV high on the LFP's top plateau, where the C/20 pair's shape
# took over, and the OCV, fitted to rests after discharges (M below), as much too high.
BRANCH_REST_S = 300.0
BRANCH_H = 0.95
FLAT_MV_PER_PCT = 2.5
PAIR_REACH_SOC = 0.02


def _residual(case, tb, cap):
    soc = case_soc(case, cap)
    c = case.cols
    tc = c.get("temp_core_c", c["temperature_c"])
    sim = ecm.simulate(tb, c["time_s"], c["current_a"], c["ambient_c"], soc[0], tc[0],
                       c["temperature_c"][0], temp_core_c=tc,   # load_dataset fills ambient_c
                       hyst0=case.h0)
    return soc[1:], (c["voltage_v"] - sim["voltage_v"])[1:]


def half_gap(cases, tb, cap):
    """(r_chg - r_dis) / 2 (nt, ns) on tb's grid from the C/20 pairs (tb without
    hysteresis), or None without any pair. Rows at temperatures without a pair take the
    nearest row that has one."""
    g = tb.soc
    rows = {}
    for case in cases:
        if case.profile != "pocv_dis" or case.role != "fit":
            continue
        chg = [c for c in cases if c.profile == "pocv_chg" and c.ambient_c == case.ambient_c]
        if not chg:
            continue
        sd, rd = _residual(case, tb, cap)
        sc, rc = _residual(chg[0], tb, cap)
        od, oc = np.argsort(sd), np.argsort(sc)
        m = 0.5 * (np.interp(g, sc[oc], rc[oc]) - np.interp(g, sd[od], rd[od]))
        rows[case.ambient_c] = m
    if not rows:
        return None
    have = np.array(sorted(rows))
    return np.array([rows[have[np.argmin(abs(have - t))]] for t in tb.temp])


def _rest_end_rows(case, min_s):
    """(rows, rest time): the last row of every rest of min_s or more in a case, and each
    row's time at rest (problem.rest_time)."""
    rested = rest_time(case)
    last = np.append(case.cols["current_a"][1:] != 0.0, True)
    return np.nonzero((rested >= min_s) & last)[0], rested


def _rest_ends(cases, tb, cap):
    """The last row of every rest of REST_END_S or more after a short load: per case
    (case, rows, y = V - OCV(soc, T), SOC, core temperature)."""
    out = []
    for case in cases:
        c = case.cols
        k, rested = _rest_end_rows(case, REST_END_S)
        # only rests after a short load: a long one leaves its RC and diffusion tails
        k = k[[_load_ah(c, rested, j) <= LOAD_MAX_SOC * cap for j in k]]
        if len(k) < 2:
            continue
        soc = case_soc(case, cap)
        tc = c.get("temp_core_c", c["temperature_c"])
        y = c["voltage_v"][k] - tb.ocv(soc[k], tc[k])
        out.append((case, k, y, soc[k], tc[k]))
    return out


def _load_ah(cols, rested, j):
    """Charge (Ah, either way) moved by the load before the rest that ends at row j."""
    k = j
    while k > 0 and rested[k] > 0.0:
        k -= 1
    t, i = cols["time_s"], cols["current_a"]
    q = 0.0
    while k > 0 and rested[k] == 0.0:
        q += abs(i[k]) * (t[k] - t[k - 1]) / 3600.0
        k -= 1
    return q


def _groups(soc):
    """A group number per rest: consecutive rests within GROUP_SOC of the group's first."""
    out = np.zeros(len(soc), dtype=int)
    first = soc[0]
    for k in range(1, len(soc)):
        if abs(soc[k] - first) > GROUP_SOC:
            first = soc[k]
            out[k] = out[k - 1] + 1
        else:
            out[k] = out[k - 1]
    return out


def _rest_fit(ends, cap, gamma):
    """Rested voltages against a + b*(soc - its mean) + M*h per group of rests at one SOC
    (_groups) of one trace, a, b and M free per group: the OCV table's error there (level
    and slope) is common to the group, what h does from rest to rest is not (a minor
    loop passes each SOC twice, on different h). Returns (RMS, [(soc, T, M)] of the
    groups), or (None, []) without a group whose h moves."""
    err, got = [], []
    for case, k, y, soc, tc in ends:
        c = case.cols
        h = ecm.hysteresis_path(c["time_s"], c["current_a"], cap, gamma, case.h0)[k]
        group = _groups(soc)
        for g in np.unique(group):
            sel = group == g
            if np.sum(sel) < 5 or np.ptp(h[sel]) < 0.2:
                continue
            ds = soc[sel] - np.mean(soc[sel])
            A = np.column_stack([np.ones(len(ds)), ds, h[sel]])
            coef, *_ = np.linalg.lstsq(A, y[sel], rcond=None)
            err.extend((y[sel] - A @ coef).tolist())
            got.append((float(np.mean(soc[sel])), float(np.mean(tc[sel])), float(coef[2])))
    if not err:
        return None, []
    return float(np.sqrt(np.mean(np.square(err)))), got


def fit_hysteresis(cases, tb, cap, log=print):
    """{"m_v": rows, "gamma": g} for the calibration, or None when the pair shows no
    hysteresis worth modelling (median M < MIN_MEDIAN_MV between 20 and 80 % SOC).

    M's shape along SOC comes from the C/20 pair, but the pair holds the C/20
    overpotential too, which the model (fitted without hysteresis) gets only to a few mV:
    where rests on both sides of a current reversal exist (minor loops), their M sets the
    level, per temperature; rests on both branches at nearby SOCs (_branch_pairs) add
    points along SOC (the pair's M less the difference, linear between the points)."""
    m = half_gap(cases, tb, cap)
    if m is None:
        log("fit: no C/20 pair, no hysteresis fitted")
        return None
    m = np.maximum(m, 0.0)
    mid = (tb.soc >= 0.2) & (tb.soc <= 0.8)
    med_mv = 1000.0 * float(np.median(m[:, mid]))
    if med_mv < MIN_MEDIAN_MV:
        log("fit: C/20 pair half gap beyond the model %.1f mV (median, 20-80 %% SOC): "
            "no hysteresis state" % med_mv)
        return None
    ends = _rest_ends([c for c in cases if c.role == "fit"], tb, cap)
    scores = [_rest_fit(ends, cap, g)[0] for g in GAMMAS]
    scores = [math.inf if v is None else v for v in scores]
    if min(scores) == math.inf:
        log("fit: hysteresis M %.1f mV (median, 20-80 %% SOC, from the C/20 pair); no rests "
            "on both sides of a current reversal: rate gamma %g assumed"
            % (med_mv, GAMMA_DEFAULT))
        return {"m_v": _steep_ends(m, tb), "gamma": GAMMA_DEFAULT}
    k = int(np.argmin(scores))
    # then between the grid's neighbours of the best, in log gamma
    lo, hi = math.log(GAMMAS[max(k - 1, 0)]), math.log(GAMMAS[min(k + 1, len(GAMMAS) - 1)])
    best = minimize_scalar(lambda lg: _rest_fit(ends, cap, math.exp(lg))[0] or math.inf,
                           bounds=(lo, hi), method="bounded", options={"xatol": 0.02})
    gamma = round(math.exp(best.x), 1)
    _, groups = _rest_fit(ends, cap, gamma)
    pairs = _branch_pairs([c for c in cases if c.role == "fit"], tb, cap, gamma)
    # the C/20 pair's M less its error, per temperature row: at the SOCs of the points
    # (minor-loop groups and branch pairs), linear between them, held beyond
    pts = {}
    for soc, tc, mg in groups + pairs:
        j = int(np.argmin(abs(tb.temp - tc)))
        pts.setdefault(j, []).append((soc, float(ecm.interp2(tb.soc, tb.temp, m, soc, tc)) - mg))
    have = np.array(sorted(pts))
    corr = np.zeros(m.shape)
    m = np.array(m, dtype=float)
    for j in range(len(tb.temp)):
        p = sorted(pts[have[np.argmin(abs(have - j))]])
        corr[j] = np.interp(tb.soc, [q[0] for q in p], [q[1] for q in p])
        # beyond the outermost points M holds (the pair's shape there bends with the OCV:
        # LFP 8.3 -> 7.3 mV over 94-95 % SOC, where the cell's is 10), to _steep_ends' taper
        m[j] -= corr[j]
        lo, hi = p[0][0], p[-1][0]
        m[j] = np.where(tb.soc < lo, np.interp(lo, tb.soc, m[j]),
                        np.where(tb.soc > hi, np.interp(hi, tb.soc, m[j]), m[j]))
    m = _steep_ends(np.maximum(m, 0.0), tb)
    log("fit: hysteresis M %.1f mV (median, 20-80 %% SOC; the C/20 pair's less %s mV "
        "(mean), from %d groups of rests and %d branch pairs), gamma %g (rests %.2f mV RMS; "
        "on the grid %s)"
        % (1000.0 * float(np.median(m[:, mid])),
           "/".join("%.1f" % (1000 * v) for v in corr.mean(axis=1)), len(groups), len(pairs),
           gamma, 1000 * best.fun,
           ", ".join("%g: %.2f" % (g, 1000 * s) for g, s in zip(GAMMAS, scores, strict=True))))
    return {"m_v": m, "gamma": gamma}


def _branch_rests(cases, tb, cap, gamma):
    """Rests of BRANCH_REST_S or more that end with the cell on one branch (|h| >=
    BRANCH_H): per ambient, [(SOC, core temperature, h sign, V - OCV(soc, T))]."""
    out = {}
    for case in cases:
        c = case.cols
        k = _rest_end_rows(case, BRANCH_REST_S)[0]
        if len(k) == 0:
            continue
        h = ecm.hysteresis_path(c["time_s"], c["current_a"], cap, gamma, case.h0)[k]
        k, h = k[abs(h) >= BRANCH_H], h[abs(h) >= BRANCH_H]
        soc = case_soc(case, cap)[k]
        tc = c.get("temp_core_c", c["temperature_c"])[k]
        y = c["voltage_v"][k] - tb.ocv(soc, tc)
        out.setdefault(case.ambient_c, []).extend(zip(soc, tc, np.sign(h), y, strict=True))
    return out


def _branch_pairs(cases, tb, cap, gamma):
    """M where rests on both branches meet: each rest's V - OCV against the other
    branch's, interpolated to its SOC (or the nearest within PAIR_REACH_SOC), halved.
    Only where the OCV is flat (FLAT_MV_PER_PCT): on a slope a rest of a few minutes has
    not relaxed and an SOC error is read as voltage. [(soc, T, M)]"""
    got = []
    for rests in _branch_rests(cases, tb, cap, gamma).values():
        for sign in (1.0, -1.0):
            mine = [r for r in rests if r[2] == sign]
            other = sorted((r for r in rests if r[2] == -sign), key=lambda r: r[0])
            if not mine or not other:
                continue
            so = np.array([r[0] for r in other])
            yo = np.array([r[3] for r in other])
            for soc, tc, _, y in mine:
                if not (so[0] - PAIR_REACH_SOC <= soc <= so[-1] + PAIR_REACH_SOC):
                    continue
                ds = 0.01
                slope = 10.0 * abs(float(tb.ocv(np.array([soc + ds]), np.array([tc]))[0]
                                         - tb.ocv(np.array([soc - ds]), np.array([tc]))[0])
                                   / (2 * ds))       # mV per % SOC
                if slope > FLAT_MV_PER_PCT:
                    continue
                got.append((float(soc), float(tc), 0.5 * sign * (y - np.interp(soc, so, yo))))
    return got


def _steep_ends(m, tb):
    """M (nt, ns) with the nodes beyond the steep ends of each OCV row replaced (see
    RESOLVE_MV_PER_PCT)."""
    g = tb.soc
    out = np.array(m, dtype=float)
    inner = (g >= 0.2) & (g <= 0.8)
    for j, row in enumerate(tb.tab["ocv_v"]):
        slope = 10.0 * np.gradient(row, g)     # mV per % SOC
        mid = int(np.argmin(np.where(inner, slope, np.inf)))
        for step, end in ((1, len(g) - 1), (-1, 0)):
            k = mid
            while k != end and slope[k + step] <= RESOLVE_MV_PER_PCT:
                k += step
            w = min(END_TAPER_SOC, abs(g[k] - g[end]))
            for n in range(k + step, end + step, step):
                out[j, n] = out[j, k] * min(1.0, abs(g[n] - g[end]) / w)
    return out


def without_hysteresis(cases, tb, cap, hyst):
    """Copies of the cases with M*h taken off their voltage, for a refit of the other
    tables with the hysteresis known."""
    out = []
    tb = copy.copy(tb)          # the caller's tables keep no hysteresis
    tb.hyst = {"m_v": np.asarray(hyst["m_v"]), "gamma": hyst["gamma"]}
    for case in cases:
        c = dict(case.cols)
        tc = c.get("temp_core_c", c["temperature_c"])
        c["voltage_v"] = c["voltage_v"] - tb.hyst_v(c["time_s"], c["current_a"],
                                                    case_soc(case, cap), tc, case.h0)
        twin = copy.copy(case)
        twin.cols = c
        out.append(twin)
    return out
