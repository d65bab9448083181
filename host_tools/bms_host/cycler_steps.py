"""The time axis, the steps and the current's sign of a cycler trace, and what kind of test
it is (rate, pseudo-OCV, GITT, pulses, dynamic, rest). See cycler.py for the interface."""
from dataclasses import dataclass

import numpy as np

SLOW_C = 1.0 / 15.0      # a sweep at or below this rate is a pseudo-OCV (C/20 class)
PULSE_MAX_S = 120.0      # a pulse step lasts at most this long
PULSE_GROUP_MAX_S = 300.0
SWEEP_MIN_DV = 0.3       # a sweep moves the voltage at least this much (V)
SWEEP_MIN_S = 600.0
SWEEP_MIN_FRACTION = 0.5  # ... and moves at least half the reference capacity
GITT_MIN_STEPS = 4


@dataclass
class Step:
    start: int
    stop: int
    sign: int
    duration_s: float
    current_a: float
    charge_ah: float


# ------------------------------------------------------------------ time axis

def _clean_time(t, i, notes):
    """Indices to keep and the adjusted time: strictly increasing. Rows at a repeated time
    stamp whose current differs are kept, moved 1 ms (or half the next gap) later."""
    t = np.array(t, float)
    n = len(t)
    # a restart of the axis (a new file appended, or step time): join it on
    d = np.diff(t)
    pos = d[d > 0]
    typical = float(np.median(pos)) if len(pos) else 1.0
    restarts = np.nonzero(d < -max(10.0 * typical, 60.0))[0]
    if len(restarts):
        for r in restarts:
            t[r + 1:] += t[r] - t[r + 1] + typical
        notes.append("the time axis restarts %d time(s); each restart was joined on %.3g s "
                     "after the row before it" % (len(restarts), typical))
    keep = [0]
    dropped_back = dropped_dup = moved = 0
    last = t[0]
    for k in range(1, n):
        if t[k] > last:
            keep.append(k)
            last = t[k]
            continue
        if t[k] == t[keep[-1]] and i[k] != i[keep[-1]]:
            nxt = t[k + 1] if k + 1 < n and t[k + 1] > last else last + 2e-3
            eps = min(1e-3, 0.5 * (nxt - last))
            if eps > 0:
                t[k] = last + eps
                keep.append(k)
                last = t[k]
                moved += 1
                continue
        if t[k] == t[keep[-1]]:
            dropped_dup += 1
        else:
            dropped_back += 1
    if moved:
        notes.append("%d row(s) repeat the time stamp of the row before with a new current; "
                     "each was kept 1 ms later so that the step is not lost" % moved)
    if dropped_dup:
        notes.append("%d row(s) with a repeated time stamp and the same current were "
                     "dropped" % dropped_dup)
    if dropped_back:
        notes.append("%d row(s) whose time went backwards were dropped" % dropped_back)
    keep = np.array(keep)
    return keep, t[keep]


# ------------------------------------------------------------------ steps and sign

def _threshold(i):
    m = float(np.max(np.abs(i))) if len(i) else 0.0
    return max(0.005 * m, 2e-3)


def find_steps(t, i, v):
    """Runs of rest (0), discharge (+1) and charge (-1) in project-sign current."""
    thr = _threshold(i)
    s = np.where(i > thr, 1, np.where(i < -thr, -1, 0))
    b = np.concatenate(([0], np.nonzero(np.diff(s))[0] + 1, [len(s)]))
    steps = []
    for a, c in zip(b[:-1], b[1:], strict=True):
        t0 = t[a - 1] if a > 0 else t[0]
        dt = np.diff(np.concatenate(([t0], t[a:c])))
        ah = float(np.sum(i[a:c] * dt)) / 3600.0
        dur = float(t[c - 1] - t0)
        steps.append(Step(int(a), int(c), int(s[a]), dur,
                          float(np.mean(i[a:c])), ah))
    return steps


def _sign_score(t, i, v):
    """> 0 when the current counts discharge positive (voltage falls as current rises),
    < 0 when it counts discharge negative; near 0 when the data cannot tell."""
    di = np.diff(i)
    dv = np.diff(v)
    big = np.abs(di) > 0.1 * max(float(np.max(np.abs(i))), 1e-9)
    big &= np.abs(dv) > 2e-4
    if big.any():
        # at a current step the ohmic drop answers at once: sign(di * dv) < 0 when the
        # current is discharge positive
        w = np.abs(di[big])
        score = -float(np.sum(np.sign(di[big] * dv[big]) * w)) / float(np.sum(w))
        if abs(score) > 0.3:
            return score, "steps"
    # no clean steps: the trend under load (discharge lowers the voltage)
    dt = np.diff(t)
    load = np.abs(i[1:]) > _threshold(i)
    if load.sum() > 10:
        slope = dv[load] / np.maximum(dt[load], 1e-9)
        score = -float(np.sum(np.sign(i[1:][load]) * np.sign(slope) * dt[load])) \
            / float(np.sum(dt[load]))
        if abs(score) > 0.3:
            return score, "trend"
    return 0.0, None


def _sign_unsigned(t, i, v, notes):
    """Current never changes sign but the voltage rises under some steps and falls under
    others: sign each step by the voltage's response to it."""
    out = np.array(i, float)
    mag = np.abs(out)
    steps = find_steps(t, mag, v)
    flipped = 0
    for st in steps:
        if st.sign == 0:
            continue
        a, c = st.start, st.stop
        v0 = v[a - 1] if a > 0 else v[a]
        jump = v[min(a, len(v) - 1)] - v0
        trend = v[c - 1] - v[a]
        resp = jump if abs(jump) > 2e-3 else trend
        if resp > 0:
            out[a:c] = -mag[a:c]
            flipped += 1
        else:
            out[a:c] = mag[a:c]
    notes.append("the current never changes sign: each step was taken as a charge or a "
                 "discharge by whether the voltage rose or fell under it (%d charge "
                 "step(s))" % flipped)
    return out


def _apply_sign(t, i, v, state, sign_opt, notes):
    i = np.array(i, float)
    if sign_opt in ("discharge_negative", "negative"):
        notes.append("current sign set by the mapping: negative on discharge in the file")
        return -i
    if sign_opt in ("discharge_positive", "positive"):
        notes.append("current sign set by the mapping: positive on discharge in the file")
        return i
    if state is not None and (np.all(i >= 0) or np.all(i <= 0)):
        st = np.array(state)
        if np.any(st != 0):
            i = np.abs(i) * np.where(st == 0, 1, st)
            notes.append("the current is unsigned in the file: signed by its state column "
                         "(discharge positive)")
    if len(i) < 3 or not np.any(np.abs(i) > _threshold(i)):
        return i
    thr = _threshold(i)
    if (np.all(i >= -thr) or np.all(i <= thr)):
        steps = find_steps(t, np.abs(i), v)
        resp = []
        for st in steps:
            if st.sign:
                a, c = st.start, st.stop
                jump = v[a] - (v[a - 1] if a > 0 else v[a])
                resp.append(jump if abs(jump) > 2e-3 else v[c - 1] - v[a])
        if resp and min(resp) < -2e-3 and max(resp) > 2e-3:
            return _sign_unsigned(t, i, v, notes)
    score, how = _sign_score(t, i, v)
    if how is None:
        notes.append("the voltage response does not tell the current's sign: taken as "
                     "negative on discharge, the usual cycler convention")
        return -i
    if score < 0:
        notes.append("current is negative on discharge in the file (the voltage falls when "
                     "it goes negative): sign flipped to discharge positive")
        return -i
    return i


# ------------------------------------------------------------------ kinds

def _is_sweep(st, v, capacity_ah):
    if st.sign == 0 or st.duration_s < SWEEP_MIN_S:
        return False
    dv = abs(float(v[st.stop - 1] - v[st.start]))
    if dv < SWEEP_MIN_DV:
        return False
    if capacity_ah:
        return abs(st.charge_ah) >= SWEEP_MIN_FRACTION * capacity_ah
    return True


def classify(steps, v, capacity_ah):
    """(kind, rate_c, capacity of the largest discharge sweep) from the steps."""
    if not any(st.sign for st in steps):
        return "rest", None, None
    total = sum(st.duration_s for st in steps) or 1.0
    sweeps = [st for st in steps if _is_sweep(st, v, capacity_ah)]
    # pulse groups: runs of short non-rest steps with rest (or the file's edge) both sides
    groups, first = 0, None
    for k in range(len(steps) + 1):
        st = steps[k] if k < len(steps) else None
        if st is not None and st.sign and st.duration_s <= PULSE_MAX_S:
            first = k if first is None else first
            continue
        if first is not None:
            bounded = (st is None or st.sign == 0) and (first == 0 or steps[first - 1].sign == 0)
            if bounded and sum(r.duration_s for r in steps[first:k]) <= PULSE_GROUP_MAX_S:
                groups += 1
            first = None
    swept = sum(st.duration_s for st in sweeps)
    rest = sum(st.duration_s for st in steps if st.sign == 0)
    rest_frac = rest / max(total - swept, 1e-9)
    dis = [st for st in sweeps if st.sign > 0]
    cap_file = max((abs(st.charge_ah) for st in dis), default=None)
    ref = capacity_ah or cap_file or max((abs(st.charge_ah) for st in sweeps), default=None)
    rate_c = None
    if sweeps and ref:
        main = max(dis or sweeps, key=lambda st: abs(st.charge_ah))
        rate_c = abs(main.current_a) / ref
    if groups >= 1 and rest_frac >= 0.4 and (not sweeps or groups >= 3):
        return "pulse", None, cap_file
    # titration: several mid-size same-sign steps, each followed by a rest at least half
    # as long
    mids = {1: 0, -1: 0}
    for k, st in enumerate(steps[:-1]):
        nxt = steps[k + 1]
        if st.sign and st.duration_s > PULSE_MAX_S and not _is_sweep(st, v, capacity_ah) \
                and nxt.sign == 0 and nxt.duration_s >= 0.5 * st.duration_s:
            if ref is None or abs(st.charge_ah) <= 0.25 * ref:
                mids[st.sign] += 1
    if max(mids.values()) >= GITT_MIN_STEPS and rest_frac >= 0.3:
        return "gitt", None, cap_file
    if sweeps:
        if rate_c is not None and all(abs(st.current_a) / ref <= SLOW_C * 1.05
                                      for st in sweeps):
            return "ocv_c20", rate_c, cap_file
        return "rate", rate_c, cap_file
    return "dynamic", None, cap_file
