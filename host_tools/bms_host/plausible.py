"""Is a trace in the units the tools read (A, V, degC, s, current positive on discharge)?

A trace in mA, mV, K or ms, or with the current's sign flipped, parses fine and gives
nonsense downstream (SOC pinned at a bound, a model that diverges). Each check compares
the trace with the calibrated cell it is run against and, when a column is off, raises
one sentence naming the likely mistake. `--allow-implausible` skips the checks for a
deliberate case (a cell abused on purpose, a calibration for a different cell).
"""
import numpy as np

from . import UserError

OVERRIDE = "--allow-implausible"
# plausible surface, ambient or core temperature of a working cell, degC
T_LO_C, T_HI_C = -40.0, 90.0
# a cell's current beyond this many C (or this many times its calibrated limit) is a unit slip
C_RATE_MAX = 10.0
LIMIT_FACTOR = 3.0
# charge moved between the trace's fullest and emptiest moment, in calibrated capacities:
# a cell cannot give more than about one; two leaves room for a capacity that is off
SWING_MAX = 2.0
DT_MAX_S = 600.0  # a median sample interval longer than this reads as milliseconds


def add_option(p):
    p.add_argument(OVERRIDE, action="store_true",
                   help="skip the unit and sign checks of the trace against the calibration "
                   "(for a deliberate out-of-range case)")


def _refuse(path, sentence):
    raise UserError("trace %s: %s (if this is deliberate, pass %s)" % (path, sentence, OVERRIDE))


def _row(arr, pred):
    """Data line (1-based, after the header) of the first value where pred holds."""
    k = np.nonzero(pred(arr))[0]
    return int(k[0]) + 2 if len(k) else None


def check(cols, cal, path):
    """Raise UserError (one sentence) when a column of the trace is not in the units and
    sign the tools read, judged against the calibration `cal` (a dict)."""
    cap = float(cal["cell"]["capacity_ah"])
    lim = cal["limits"]
    t = np.asarray(cols["time_s"], dtype=float)
    i = np.asarray(cols["current_a"], dtype=float)
    _current(i, cap, lim, path)
    if "voltage_v" in cols:
        _voltage(np.asarray(cols["voltage_v"], dtype=float), lim, path)
    for name in ("temperature_c", "ambient_c", "temp_core_c"):
        if name in cols:
            _temperature(np.asarray(cols[name], dtype=float), name, path)
    _time(t, i, cap, path)
    if "voltage_v" in cols:
        _sign(i, np.asarray(cols["voltage_v"], dtype=float), cap, path)


def _current(i, cap, lim, path):
    hi = max(C_RATE_MAX * cap, LIMIT_FACTOR * max(lim["i_discharge_max_a"], lim["i_charge_max_a"]))
    big = float(np.max(np.abs(i))) if len(i) else 0.0
    if big <= hi:
        return
    row = _row(i, lambda a: np.abs(a) > hi)
    if big / 1000.0 <= hi:
        _refuse(path, "current_a reaches %g (line %d), more than a %.3g Ah cell can carry: "
                "the current looks like milliamperes; convert it to amperes" % (big, row, cap))
    _refuse(path, "current_a reaches %g A (line %d), far beyond the %g A a %.3g Ah cell can "
            "carry: is it a different unit or a different cell?" % (big, row, hi, cap))


def _voltage(v, lim, path):
    lo, hi = max(0.0, lim["v_min"] - 1.0), lim["v_max"] + 0.5
    bad = (v < lo) | (v > hi)
    if not bad.any():
        return
    row = int(np.nonzero(bad)[0][0]) + 2
    med = float(np.median(v))
    if 1000.0 * lo <= med <= 1000.0 * hi:
        _refuse(path, "voltage_v is around %g, not %g..%g V: the voltage looks like "
                "millivolts; convert it to volts" % (med, lo, hi))
    n = med / (0.5 * (lim["v_min"] + lim["v_max"]))
    if med > hi and n >= 1.5:
        _refuse(path, "voltage_v is around %g V, about %d cells in series: the tools read one "
                "cell's voltage, not the pack's" % (med, int(n + 0.5)))
    _refuse(path, "voltage_v %g (line %d) is outside %g..%g V, where this cell's voltage lies"
            % (float(v[row - 2]), row, lo, hi))


def _temperature(x, name, path):
    bad = (x < T_LO_C) | (x > T_HI_C)
    if not bad.any():
        return
    row = int(np.nonzero(bad)[0][0]) + 2
    med = float(np.median(x))
    if T_LO_C + 273.15 <= med <= T_HI_C + 273.15:
        _refuse(path, "%s is around %g, which is %.1f degC if it is kelvin: the temperature "
                "looks like kelvin; subtract 273.15" % (name, med, med - 273.15))
    _refuse(path, "%s %g (line %d) is outside %g..%g degC, where a working cell's temperature "
            "lies" % (name, float(x[row - 2]), row, T_LO_C, T_HI_C))


def _time(t, i, cap, path):
    if len(t) < 2:
        return
    dt = np.diff(t)
    q = np.concatenate(([0.0], np.cumsum(i[1:] * dt))) / 3600.0
    swing = float(q.max() - q.min())
    med = float(np.median(dt))
    if swing > SWING_MAX * cap:
        if swing / 1000.0 <= SWING_MAX * cap and med >= 1.0:
            _refuse(path, "counting its current over time_s moves %.4g Ah through a %.3g Ah "
                    "cell: time_s looks like milliseconds; convert it to seconds"
                    % (swing, cap))
        _refuse(path, "counting its current over time_s moves %.4g Ah through a %.3g Ah cell, "
                "more than the cell holds: is the current or the time in another unit, or is "
                "it a different cell?" % (swing, cap))
    if med > DT_MAX_S:
        _refuse(path, "time_s advances %g per sample: time_s looks like milliseconds; "
                "convert it to seconds" % med)


def _sign(i, v, cap, path):
    """When the current steps up the voltage steps down (current positive on discharge,
    the drop across the cell's resistance). Steps of at least C/20 vote; the voltage step
    is taken across the current step's row and the next, so a logger that samples the
    voltage one row late votes the same way."""
    if len(i) < 3:
        return
    di = i[1:-1] - i[:-2]
    dv = v[2:] - v[:-2]
    step = np.abs(di) >= 0.05 * cap
    moved = np.abs(dv) > 1e-4
    keep = step & moved
    n = int(keep.sum())
    if n < 5:
        return
    agree = float(np.mean(di[keep] * dv[keep] > 0.0))
    if agree > 0.75:
        _refuse(path, "in %d of %d current steps the voltage moves with the current, not "
                "against it: the current's sign looks flipped (the tools read current "
                "positive on discharge); negate current_a" % (int(agree * n + 0.5), n))
