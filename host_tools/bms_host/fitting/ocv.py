"""Steps 1-2: capacity from the C/20 discharge, OCV(soc, T) from the C/20 pairs."""
import numpy as np

from .. import UserError
from .dataset import case_soc


def fit_capacity(cases):
    dis = [c for c in cases if c.profile == "pocv_dis" and c.role == "fit"]
    best = min(dis, key=lambda c: abs(c.ambient_c - 25.0))
    t, i = best.cols["time_s"], best.cols["current_a"]
    return float(np.sum(i[1:] * np.diff(t)) / 3600.0), best.ambient_c


def fit_ocv(cases, capacity_ah, soc_grid):
    """OCV table (nt, ns) and temperature grid from the C/20 pairs."""
    temps = sorted({c.ambient_c for c in cases if c.profile == "pocv_dis" and c.role == "fit"}
                   & {c.ambient_c for c in cases if c.profile == "pocv_chg" and c.role == "fit"})
    if not temps:
        raise UserError("no temperature has both a C/20 discharge and a C/20 charge trace")
    g = np.asarray(soc_grid)
    rows = []
    for T in temps:
        d = next(c for c in cases if c.profile == "pocv_dis" and c.ambient_c == T)
        ch = next(c for c in cases if c.profile == "pocv_chg" and c.ambient_c == T)
        sd, vd = case_soc(d, capacity_ah), d.cols["voltage_v"]
        sc, vc = case_soc(ch, capacity_ah), ch.cols["voltage_v"]
        rest_full = vd[0] if d.cols["current_a"][0] == 0 else None
        rest_empty = vc[0] if ch.cols["current_a"][0] == 0 else None
        s_full, s_empty = sd[0], sc[0]
        # loaded parts of the curves (row 0 is the rested state)
        sd, vd = sd[1:][::-1], vd[1:][::-1]      # increasing soc
        sc, vc = sc[1:], vc[1:]
        lo = max(sd[0], sc[0])
        hi = min(sd[-1], sc[-1])
        if hi <= lo:
            raise UserError("C/20 charge and discharge at %g degC do not overlap in SOC" % T)
        Vd = np.interp(g, sd, vd)
        Vc = np.interp(g, sc, vc)
        ocv = 0.5 * (Vd + Vc)
        half_lo = 0.5 * (np.interp(lo, sc, vc) - np.interp(lo, sd, vd))
        half_hi = 0.5 * (np.interp(hi, sc, vc) - np.interp(hi, sd, vd))
        below = g < lo
        above = g > hi
        # one-sided ends: the curve that exists, shifted by the half gap at the overlap edge
        ocv[below] = np.where(g[below] >= sc[0], Vc[below] - half_lo, Vd[below] + half_lo)
        ocv[above] = np.where(g[above] <= sd[-1], Vd[above] + half_hi, Vc[above] - half_hi)
        # rested anchors: a rested full / empty cell sits on its OCV
        if rest_full is not None:
            k = np.argmin(abs(g - s_full))
            if abs(g[k] - s_full) < 0.006:
                ocv[k] = rest_full
        if rest_empty is not None:
            k = np.argmin(abs(g - s_empty))
            if abs(g[k] - s_empty) < 0.006:
                ocv[k] = rest_empty
        rows.append(monotone(ocv))
    return np.array(temps), np.array(rows)


def monotone(v, step=1e-5):
    v = np.array(v, dtype=float)
    for k in range(1, len(v)):
        if v[k] < v[k - 1] + step:
            v[k] = v[k - 1] + step
    return v
