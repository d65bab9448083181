"""The refit's input: a device's telemetry records as Segments (one per boot, cell and
stretch without gaps), their split into fitted and held-back rows, their rests and
current steps. See refit.py for the method."""
import json

import numpy as np

from . import UserError, store

MIN_RECORDS = 60
GAP_S = 60.0              # a longer gap between records starts a new segment
HOLDOUT_EVERY = 3         # held-back blocks: every HOLDOUT_EVERY-th (refit.BLOCK_S long)
STEP_C = 0.1              # a current step, in C
REST_S = 300.0            # a rest this long ends in a voltage near the OCV


class Segment:
    """One boot's records for one cell, in sequence order, without gaps."""

    def __init__(self, t_s, i_a, v, temp, soc, r0=None, cap=None):
        self.t = np.asarray(t_s, float)
        self.i = np.asarray(i_a, float)
        self.v = np.asarray(v, float)
        self.ts = np.asarray(temp, float)
        self.soc = np.asarray(soc, float)
        self.r0 = None if r0 is None else np.asarray(r0, float)
        self.cap = None if cap is None else np.asarray(cap, float)
        dt = np.diff(self.t, prepend=self.t[0])
        dt[0] = 0.0
        self.dt = dt
        n = len(self.t)
        self.hold = np.zeros(n, bool)
        # a record whose current differs from the one before: its current and voltage
        # may straddle the step; simulated through, never scored
        self.step = np.zeros(n, bool)
        self.step[0] = True
        self.mark_steps(0.0)

    def mark_steps(self, min_a):
        """Flag the records whose current moved more than min_a (sensor noise is less)."""
        self.step[1:] = np.abs(np.diff(self.i)) > min_a
        self.set_phase(0.5)

    def set_phase(self, phi):
        """The current over (t[k-1], t[k]] (iq): a record reads the current at its
        instant, so across a step the old one flowed for a part phi of the interval.
        Where the steps fall between records is a property of the recording (the
        device's sampling), fitted with the initial SOC for old and new alike."""
        self.phi = phi
        self.iq = self.i.copy()
        self.iq[1:] = [phi * a + (1.0 - phi) * b if st else b
                       for a, b, st in zip(self.i[:-1], self.i[1:], self.step[1:], strict=True)]

    def split(self, block_s, cap_ah):
        """Hold back every HOLDOUT_EVERY-th block, and every second long rest whole (its
        end is where the SOC is checked)."""
        k = np.floor((self.t - self.t[0]) / block_s).astype(int)
        self.hold = (k % HOLDOUT_EVERY) == HOLDOUT_EVERY - 1
        for n, (a, b) in enumerate(self.rests(cap_ah)):
            self.hold[a:b + 1] = n % 2 == 1

    def rests(self, cap_ah):
        """(first, last) record of each rest of REST_S or more."""
        still = np.abs(self.i) < 0.02 * cap_ah
        out, start = [], None
        for k in range(len(self.t)):
            if not still[k]:
                start = None
                continue
            start = k if start is None else start
            if (k + 1 == len(self.t) or not still[k + 1]) \
                    and self.t[k] - self.t[start] >= REST_S:
                out.append((start, k))
        return out

    @property
    def fit_rows(self):
        return ~self.hold & ~self.step

    @property
    def hold_rows(self):
        return self.hold & ~self.step


def _steps(seg, rows, cap_ah):
    """Current steps of STEP_C or more that end on one of the given rows."""
    big = np.zeros(len(seg.i), bool)
    big[1:] = np.abs(np.diff(seg.i)) >= STEP_C * cap_ah
    # the record after the step is the first one scored
    after = np.zeros(len(seg.i), bool)
    after[1:] = big[:-1]
    return int(np.sum(after & rows))


def _rest_ends(seg, cap_ah):
    """Indices of held-back records that end a rest of REST_S or more."""
    return np.array([b for _, b in seg.rests(cap_ah) if seg.hold[b]], int)


# ---- records

def _per_cell(recs, name, c, strict=True):
    """Cell c's value of a per-cell field in every record, or None when a record lacks it
    (strict) or when none has it."""
    vals = [r.get(name) for r in recs]
    ok = [isinstance(x, list) and len(x) > c and isinstance(x[c], (int, float)) for x in vals]
    if (strict and not all(ok)) or not any(ok):
        return None
    return [x[c] if good else None for x, good in zip(vals, ok, strict=True)]


def load_segments(db_path, device_id):
    """Per cell: list of Segments (one per boot and stretch without gaps)."""
    db = store.open_store(db_path, create=False)   # a SQLite file or a postgresql:// URL
    try:
        rows = db.query("SELECT boot, json FROM records WHERE device_id=%s "
                        "ORDER BY boot, seq" % db.ph, (device_id,))
    finally:
        db.close()
    if not rows:
        raise UserError("no records for device %r in %s" % (device_id, store.display(db_path)))
    boots = {}
    for boot, text in rows:
        try:
            boots.setdefault(boot, []).append(json.loads(text))
        except ValueError:
            continue

    def usable(r, c):
        v, tc = r.get("v"), r.get("temp_c")
        return (isinstance(v, list) and len(v) > c and isinstance(v[c], (int, float))
                and isinstance(r.get("i_a"), (int, float)) and isinstance(r.get("t_ms"), int)
                and isinstance(tc, list) and tc
                and all(isinstance(x, (int, float)) for x in tc))

    per_cell = {}
    for recs in boots.values():
        cells = max((len(r.get("v") or []) for r in recs), default=0)
        for c in range(cells):
            good = [r for r in recs if usable(r, c)]
            if not good:
                continue
            t = np.array([r["t_ms"] / 1000.0 for r in good])
            cut = [0] + [k + 1 for k in np.nonzero(np.diff(t) > GAP_S)[0]] + [len(good)]
            for a, b in zip(cut[:-1], cut[1:], strict=True):
                part = good[a:b]
                if len(part) < MIN_RECORDS:
                    continue
                temp = _per_cell(part, "cell_temp_c", c) or \
                    [sum(r["temp_c"]) / len(r["temp_c"]) for r in part]
                soc = [x if isinstance(x, (int, float)) else 0.5
                       for x in (_per_cell(part, "soc", c, strict=False) or [0.5] * len(part))]
                per_cell.setdefault(c, []).append(
                    Segment([r["t_ms"] / 1000.0 for r in part], [r["i_a"] for r in part],
                            [r["v"][c] for r in part], temp, soc,
                            _per_cell(part, "r0_ohm", c), _per_cell(part, "capacity_ah", c)))
    if not per_cell:
        raise UserError("device %r has no stretch of %d records with voltage, current and "
                        "temperature in %s: record longer"
                        % (device_id, MIN_RECORDS, store.display(db_path)))
    return per_cell
