"""What a folder of cycler exports holds and what it lacks, one sentence each: the fit of
measured data prints both and writes them into its report."""
from collections import Counter

import numpy as np

from .measured import FIT_KINDS, T_COLD_C, T_HOT_C, table_temps


def _pct(x):
    return "%.0f %%" % (100.0 * x)


def _fmt_t(x):
    return "%g degC" % x


def describe(test, case=None, cap=None):
    """One sentence on one file: its kind, conditions and what it holds."""
    where = "" if test.ambient_c is None else " at %s" % _fmt_t(test.ambient_c)
    n = len(test.t)
    if test.kind == "ocv_table":
        hyst = "" if test.hysteresis_v is None else ", with the hysteresis"
        return "%s: OCV table%s, SOC %s to %s in %d points%s" % (
            test.name, where, _pct(min(test.soc)), _pct(max(test.soc)), len(test.soc), hyst)
    if test.ambient_c is None and test.kind in FIT_KINDS:
        return ("%s: %s test with no ambient temperature in its name, folder or mapping: "
                "not used (give ambient_c in cycler.json)" % (test.name, test.kind))
    dis = [s for s in test.steps if s.sign > 0]
    chg = [s for s in test.steps if s.sign < 0]
    rests = [s for s in test.steps if s.sign == 0 and s.duration_s > 0]
    s0 = "" if case is None else " from %s SOC" % _pct(case.cols["soc_true"][0])
    if test.kind == "rate":
        big = max(dis, key=lambda s: s.charge_ah) if dis else None
        parts = ["%s: rate test%s" % (test.name, where)]
        if big is not None:
            parts.append(": %.2fC discharge (%.2f A) of %.3f Ah%s" % (
                test.rate_c or 0.0, big.current_a, big.charge_ah, s0))
        if rests:
            parts.append(", rests up to %.0f s" % max(s.duration_s for s in rests))
        if chg:
            parts.append(", %.2f A charge" % abs(max(chg, key=lambda s: abs(s.charge_ah))
                                               .current_a))
        return "".join(parts) + "; %d rows" % n
    if test.kind == "pulse":
        d = dis[0] if dis else (chg[0] if chg else None)
        if d is None:
            return "%s: pulse file%s without a pulse" % (test.name, where)
        before = rests[0].duration_s if rests and rests[0].start < d.start else 0.0
        what = "discharge" if d.sign > 0 else "charge"
        soc = "" if case is None else " at %s SOC" % _pct(case.cols["soc_true"][d.start])
        return "%s: %d pulse%s%s: %.2f A %s for %.0f s%s, %s; %d rows" % (
            test.name, len(dis) + len(chg), "s" if len(dis) + len(chg) > 1 else "", where,
            abs(d.current_a), what, d.duration_s, soc,
            "rests %.0f s after" % max(s.duration_s for s in rests) if rests
            else "no rest after", n) + ("" if before == 0 else " (%.0f s rest before)" % before)
    if test.kind == "ocv_c20":
        return "%s: C/20 OCV test%s: %d discharge and %d charge sweeps%s; %d rows" % (
            test.name, where, len(dis), len(chg), s0, n)
    if test.kind == "gitt":
        return "%s: GITT%s: %d steps with rests%s; %d rows" % (
            test.name, where, len(dis) + len(chg), s0, n)
    if test.kind == "dynamic":
        return "%s: drive cycle%s, %.1f h%s; %d rows" % (
            test.name, where, (test.t[-1] - test.t[0]) / 3600.0, s0, n)
    return "%s: no current (%s): not used" % (test.name, test.kind)


def found(folder, cases):
    """Sentences: one per file, then each reader note that several files share, once."""
    by = {c.test.name: c for c in cases}
    lines = [describe(t, by.get(t.name)) for t in folder]
    notes = Counter(n for t in folder for n in t.notes)
    shared = ["%d files: %s" % (k, n) for n, k in notes.most_common() if k > 1]
    single = ["%s: %s" % (t.name, n) for t in folder for n in t.notes if notes[n] == 1]
    return lines + shared + single + list(getattr(folder, "notes", []))


def missing(folder, cases, info):
    """What the folder lacks and what that costs the calibration, one sentence each."""
    out = []
    data_t = sorted({c.ambient_c for c in cases})
    temps = table_temps(data_t)
    if len(data_t) == 1:
        out.append("tests at one ambient only (%s): the other temperatures follow an "
                   "assumed activation energy (33 kJ/mol), not this cell's"
                   % _fmt_t(data_t[0]))
    if data_t[0] > T_COLD_C + 5.0:
        out.append("no test below %s: the cold tables (down to %s) are extrapolated"
                   % (_fmt_t(data_t[0]), _fmt_t(T_COLD_C)))
    if data_t[-1] < T_HOT_C - 5.0:
        out.append("no test above %s: the hot tables (up to %s, where a fast charge heats "
                   "the core) are extrapolated" % (_fmt_t(data_t[-1]), _fmt_t(T_HOT_C)))
    between = [T for T in temps if data_t[0] < T < data_t[-1]
               and not any(abs(T - d) < 1e-6 for d in data_t)]
    if between:
        out.append("no test at %s: the columns there lie on the Arrhenius line of the "
                   "measured ones" % ", ".join(_fmt_t(T) for T in between))
    ocv_t = sorted({t.ambient_c if t.ambient_c is not None else 25.0 for t in folder
                    if t.kind in ("ocv_table", "ocv_c20", "gitt")})
    other = [d for d in data_t if not any(abs(d - o) < 1e-6 for o in ocv_t)]
    if not ocv_t:
        out.append("no OCV table, C/20 or GITT test: the OCV comes from the rested ends "
                   "of the other tests, only a few points of the curve")
    elif other:
        out.append("OCV measured at %s only: the tables at %s start from that curve (its "
                   "shift with temperature, a few mV, is left to the loaded fit)"
                   % (", ".join(_fmt_t(o) for o in ocv_t), ", ".join(_fmt_t(o) for o in other)))
    pulses = [c for c in cases if c.profile == "pulse"]
    no_p = [d for d in data_t if not any(c.ambient_c == d for c in pulses)]
    if not pulses:
        out.append("no pulse or HPPC test: the resistances start from the first minute of "
                   "each rate test's load and come from the rate tests alone (held out: "
                   "pulse voltage 45-65 mV instead of 25-35 mV, bms-host bench real)")
    elif no_p:
        out.append("no pulses at %s: its resistances come from the rate tests and the "
                   "Arrhenius line" % ", ".join(_fmt_t(d) for d in no_p))
    if pulses:
        chg = [c for c in pulses if np.any(c.cols["current_a"] < 0.0)]
        if not chg:
            out.append("no charge pulses: the charge resistances come from the CC-CV "
                       "charges of the rate tests only")
        longest = max(s.duration_s for c in pulses for s in c.test.steps if s.sign != 0)
        if longest < 60.0:
            out.append("pulses of %.0f s only: the slow RC pair and the diffusion shift "
                       "come from the rate tests' relaxations" % longest)
    rates = [c.test.rate_c for c in cases if c.profile == "rate" and c.test.rate_c]
    if rates and max(rates) < 1.9:
        out.append("no rate test at 2C: above %.1fC the kinetic term is extrapolated"
                   % max(rates))
    for d in data_t:
        at = [c.test.rate_c for c in cases if c.profile == "rate" and c.ambient_c == d
              and c.test.rate_c]
        if at and max(at) < max(rates) - 0.4:
            out.append("at %s the fastest rate test is %.1fC: higher currents there rest "
                       "on the other temperatures" % (_fmt_t(d), max(at)))
    if not any(c.profile == "dynamic" for c in cases):
        out.append("no drive-cycle test: nothing checks the model on changing loads "
                   "beyond the pulses (bms-host bench real holds temperatures out instead)")
    if not any("temp_core_c" in c.cols for c in cases):
        out.append("one thermocouple on the can: the core temperature is the thermal "
                   "model's, and the heat is i*(OCV - V) (no ohmic heat table of its own)")
    return out
