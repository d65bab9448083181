"""Read battery-cycler exports as they are: a folder of CSV/text files from Arbin, Neware,
BioLogic (EC-Lab text), Maccor or a home-made logger, into one small object per test.

Interface (what the fitting code relies on)
-------------------------------------------
``read_folder(path, mapping=None) -> Folder`` reads every data file under ``path``
(``.csv .txt .tsv .dat .mpt``, subfolders too, sorted by relative path) and returns a
``Folder``: a list of ``CyclerTest`` with two extra attributes, ``capacity_ah`` (the
reference capacity used for C-rates: the mapping's, else the slowest discharge sweep
nearest 25 degC, a capacity test) and
``notes`` (folder-level sentences: files skipped and why). ``read_file(path, mapping=None,
capacity_ah=None)`` reads one file the same way.

``CyclerTest`` fields:

- ``name``: path relative to the folder, with ``/`` (the file name for ``read_file``);
- ``path``: the file's full path;
- ``kind``: one of ``KINDS``:
  ``rate`` (constant-current sweep over most of the capacity: capacity and rate tests),
  ``ocv_c20`` (sweep(s) at C/15 or slower: a pseudo-OCV, one or both directions),
  ``gitt`` (many same-sign charge steps, each followed by a rest),
  ``pulse`` (short pulses between rests: HPPC or single pulse windows, any rest length),
  ``ocv_table`` (a table of OCV against SOC, no time axis),
  ``dynamic`` (anything else with current: drive cycles), ``rest`` (no current at all);
- ``ambient_c``: chamber temperature (degC): the mapping's entry for the file, else the
  file or folder name (``25C``, ``m10C``, ``-10degC``, ``25°C``; a token equal to the
  sweep's C-rate, as the ``1C`` of ``0C_1C.csv``, is passed over), else the mapping's
  folder-wide ``ambient_c``, else the data's first temperature sample; ``None`` when
  nothing tells;
- ``t``: seconds from the file's first sample, float64, strictly increasing;
- ``current``: amperes, POSITIVE ON DISCHARGE (the project's convention, traces.py);
  row k's current applies over (t[k-1], t[k]];
- ``voltage``: volts (for an ``ocv_table``: the OCV column);
- ``temperature``: degC (the cell's thermocouple) or ``None`` when the file has none;
- ``notes``: one sentence each: what was assumed, converted or dropped;
- ``rate_c``: sweeps only, the discharge sweep's mean current over the reference capacity
  (the folder's; for ``read_file`` without one, the file's own discharge), the charge
  sweep's if there is no discharge one; else ``None``;
- ``capacity_ah``: the charge of this file's largest discharge sweep (``None`` if none);
- ``steps``: list of ``Step`` (``start``, ``stop`` row indices, half-open; ``sign`` +1
  discharge, -1 charge, 0 rest; ``duration_s``; ``current_a`` mean; ``charge_ah``);
- ``soc`` / ``hysteresis_v``: ``ocv_table`` only (SOC as a fraction 0..1); ``t``,
  ``current`` are then empty;
- ``as_trace()``: the columns of a trace CSV (``time_s``, ``current_a``, ``voltage_v``,
  ``temperature_c``, ``ambient_c``) as the synthetic pipeline reads them.

Mapping (``cycler.json`` in the folder, or a dict / path passed in) overrides what is
guessed, all keys optional::

    {"capacity_ah": 4.94, "ambient_c": 25,            # folder defaults
     "sign": "discharge_negative",                     # or "discharge_positive", "auto"
     "columns": {"time": "Zeit (s)", "current": "I", "voltage": "U", "temperature": "T1"},
     "files": {"rate/*.csv": {"kind": "rate"},         # glob on the relative path or name
               "odd.csv": {"kind": "skip"},
               "pulse/x.csv": {"kind": "pulse", "ambient_c": 0, "sign": "auto"}}}

Recognised headers (case-insensitive; unit in ``(..)``, ``[..]``, after ``/`` or as a
``_s``-style suffix): time ``Test_Time(s)``, ``Test Time (sec)``, ``Total Time``,
``time/s``, ``Time [s]``, ``time_s``, ``Step Time`` (reassembled), date-time columns;
current ``Current(A)``, ``I/mA``, ``<I>/mA``, ``Current [mA]``; voltage ``Voltage(V)``,
``Ewe/V``, ``Ecell/V``, ``U [V]``, ``Voltage (mV)``; temperature ``Temperature(C)``,
``Aux_Temperature_1 (C)``, ``T1(℃)``, ``Temp 1``, ``Temperature/°C``, kelvin and
fahrenheit; a Maccor/Neware state column (``MD``, ``State``, ``Step Type`` with
C/D/R or CC_DChg...) signs an unsigned current. Time units s/ms/min/h and ``hh:mm:ss``.
Delimiters comma, semicolon or tab; decimal commas; text before the header is skipped.

Sign: the current's sign is read from the voltage response (a step that makes the voltage
drop is a discharge), not from the vendor; the mapping can force it. Repeated time stamps:
where the current changes at one time stamp both rows are kept (the second moved 1 ms
later: the voltage jump is what resistance fits need), exact repeats are dropped; small
backward jumps are dropped, a restart of the time axis is joined on. Uneven sampling is
kept as it is.
"""
import fnmatch
import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import UserError
from .cycler_steps import Step as Step  # re-exported: CyclerTest.steps holds Steps
from .cycler_steps import _apply_sign, _clean_time, classify, find_steps
from .cycler_text import (
    _CURRENT_UNITS,
    _SOC_UNITS,
    _TEMP_UNITS,
    _TIME_UNITS,
    _VOLTAGE_UNITS,
    _ambient,
    _column,
    _duration,
    _number,
    _state_sign,
    _table,
    _timestamp,
)

KINDS = ("rate", "ocv_c20", "gitt", "pulse", "ocv_table", "dynamic", "rest")
DATA_EXTENSIONS = (".csv", ".txt", ".tsv", ".dat", ".mpt")
MAPPING_NAME = "cycler.json"


@dataclass
class CyclerTest:
    name: str
    path: str
    kind: str
    ambient_c: float | None
    t: object
    current: object
    voltage: object
    temperature: object = None
    notes: list = field(default_factory=list)
    rate_c: float | None = None
    capacity_ah: float | None = None
    steps: list = field(default_factory=list)
    soc: object = None
    hysteresis_v: object = None

    def __repr__(self):
        return "CyclerTest(%s, %s, %s degC, %d rows)" % (
            self.name, self.kind, self.ambient_c, len(self.voltage))

    def as_trace(self):
        """The columns of a trace CSV (traces.py): time_s, current_a, voltage_v,
        temperature_c (the ambient where the file has none) and ambient_c."""
        if self.soc is not None:
            raise ValueError("%s is an OCV table, not a time series" % self.name)
        amb = np.full(len(self.t), np.nan if self.ambient_c is None else self.ambient_c)
        temp = self.temperature if self.temperature is not None else amb.copy()
        return {"time_s": self.t, "current_a": self.current, "voltage_v": self.voltage,
                "temperature_c": temp, "ambient_c": amb}


class Folder(list):
    """The tests of a folder, plus the reference capacity and folder-level notes."""

    def __init__(self, tests=(), capacity_ah=None, notes=None):
        super().__init__(tests)
        self.capacity_ah = capacity_ah
        self.notes = list(notes or [])


# ------------------------------------------------------------------ mapping

def load_mapping(mapping, folder=None):
    """The mapping as a dict: a dict as given, a path to JSON, or the folder's cycler.json."""
    if mapping is None and folder is not None:
        p = os.path.join(str(folder), MAPPING_NAME)
        mapping = p if os.path.isfile(p) else {}
    if isinstance(mapping, (str, os.PathLike)):
        p = str(mapping)
        try:
            with open(p, encoding="utf-8") as f:
                mapping = json.load(f)
        except OSError as e:
            raise UserError("cannot read the cycler mapping %s (%s)" % (p, e.strerror or e)) \
                from None
        except ValueError as e:
            raise UserError("cycler mapping %s is not valid JSON (%s); fix or delete it"
                            % (p, e)) from None
    if not isinstance(mapping, dict):
        raise UserError("the cycler mapping must be a JSON object (see bms_host/cycler.py)")
    files = mapping.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise UserError("the cycler mapping's \"files\" must map file patterns to objects "
                        "such as {\"kind\": \"rate\"}")
    for pat, opts in files.items():
        k = opts.get("kind")
        if k is not None and k not in KINDS + ("skip", "hppc"):
            raise UserError("the cycler mapping gives %s the kind %r; use one of %s or skip"
                            % (pat, k, ", ".join(KINDS)))
    return mapping


def _file_options(mapping, relpath):
    out = {k: mapping[k] for k in ("sign", "columns") if k in mapping}
    base = os.path.basename(relpath)
    for pat, opts in mapping.get("files", {}).items():
        if fnmatch.fnmatch(relpath, pat) or fnmatch.fnmatch(base, pat):
            out.update(opts)
    if out.get("kind") == "hppc":
        out["kind"] = "pulse"
    return out


# ------------------------------------------------------------------ one file

def _unit_factor(table, unit, what, path, notes, values=None):
    u = unit.lower().replace(" ", "")
    if u in table:
        return table[u]
    if u:
        raise UserError("%s: the %s column's unit '%s' is not one this reader knows; name "
                        "the column in a cycler.json mapping or convert it" % (path, what, unit))
    return None


def read_file(path, mapping=None, capacity_ah=None, name=None):
    """One cycler export as a CyclerTest (see the module docstring). Raises UserError with
    one sentence when the file has no recognisable voltage and time (or SOC) columns."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError("cycler file %s does not exist" % path)
    mapping = load_mapping(mapping or {})
    relpath = name or os.path.basename(path)
    opts = _file_options(mapping, relpath)
    capacity_ah = capacity_ah or mapping.get("capacity_ah")
    notes = []
    try:
        tab = _table(path, opts.get("columns"))
    except OSError as e:
        raise UserError("cannot read cycler file %s (%s)" % (path, e.strerror or e)) from None
    if tab is None:
        raise UserError("%s has no header naming a voltage column and a time (or SOC) column "
                        "(e.g. Test_Time(s),Current(A),Voltage(V)); name them in a cycler.json "
                        "mapping" % path)
    header, roles, rows, dec = tab
    if not rows:
        raise UserError("%s has a header but no data rows" % path)
    if dec:
        notes.append("decimal commas read as decimal points")

    def num(role):
        return np.array(_column(rows, roles[role][0], lambda c: _number(c, dec)), float)

    # voltage
    v = num("voltage")
    vf = _unit_factor(_VOLTAGE_UNITS, roles["voltage"][1], "voltage", path, notes)
    if vf is None:
        vf = 1e-3 if np.nanmedian(v) > 100 else 1.0
        if vf != 1.0:
            notes.append("the voltage column has no unit and reads in the thousands: taken "
                         "as millivolts")
    v = v * vf

    # OCV table: SOC and voltage, no time and no current
    if "soc" in roles and "time" not in roles and "current" not in roles:
        return _ocv_table(path, relpath, roles, rows, dec, v, opts, notes)

    # time
    if "time" in roles:
        k, unit = roles["time"]
        t = np.array(_column(rows, k, _duration), float)
        tf = _unit_factor(_TIME_UNITS, unit, "time", path, notes)
        t = t * (tf or 1.0)
    elif "step_time" in roles:
        k, unit = roles["step_time"]
        t = np.array(_column(rows, k, _duration), float)
        t = t * (_unit_factor(_TIME_UNITS, unit, "time", path, notes) or 1.0)
        notes.append("only a step time column: the test time was reassembled step by step")
    else:
        t = np.array(_column(rows, roles["datetime"][0], _timestamp), float)
        notes.append("time taken from the date-time column")
    if "current" not in roles:
        raise UserError("%s has no current column (e.g. Current(A), I/mA); name it in a "
                        "cycler.json mapping" % path)
    i = num("current")
    cf = _unit_factor(_CURRENT_UNITS, roles["current"][1], "current", path, notes)
    if cf is None:
        cf = 1.0
        if np.nanmax(np.abs(i)) > 500:
            cf = 1e-3
            notes.append("the current column has no unit and reaches past 500: taken as "
                         "milliamperes")
    i = i * cf
    temp = None
    if "temperature" in roles:
        k, unit = roles["temperature"]
        temp = num("temperature")
        kind_t = _TEMP_UNITS.get(unit.lower().replace(" ", ""))
        if unit and kind_t is None:
            raise UserError("%s: the temperature unit '%s' is not C, K or F" % (path, unit))
        if kind_t is None:
            kind_t = "K" if np.nanmedian(temp) > 150 else "C"
            if kind_t == "K":
                notes.append("the temperature column has no unit and reads above 150: taken "
                             "as kelvin")
        if kind_t == "K":
            temp = temp - 273.15
        elif kind_t == "F":
            temp = (temp - 32.0) / 1.8
        if np.all(np.isnan(temp)):
            temp = None
            notes.append("the temperature column is empty: no temperature")
    state = None
    if "state" in roles:
        state = np.array([_state_sign(r[roles["state"][0]]) if roles["state"][0] < len(r)
                          else 0 for r in rows])

    # rows without time, current or voltage
    ok = np.isfinite(t) & np.isfinite(i) & np.isfinite(v)
    if not ok.all():
        bad = int((~ok).sum())
        if bad > max(2, 0.05 * len(ok)):
            k = int(np.nonzero(~ok)[0][0])
            raise UserError("%s: %d of %d rows have no number for time, current or voltage "
                            "(first at data row %d); check the delimiter or the columns"
                            % (path, bad, len(ok), k + 1))
        notes.append("%d row(s) without a number for time, current or voltage were dropped"
                     % bad)
        t, i, v = t[ok], i[ok], v[ok]
        temp = None if temp is None else temp[ok]
        state = None if state is None else state[ok]
    if temp is not None and np.isnan(temp).any():
        good = np.isfinite(temp)
        temp = np.interp(np.arange(len(temp)), np.nonzero(good)[0], temp[good])
        notes.append("missing temperature samples were filled from their neighbours")
    if len(t) < 2:
        raise UserError("%s has fewer than two usable rows" % path)
    if "step_time" in roles and "time" not in roles:
        d = np.diff(t)
        pos = d[d > 0]
        typ = float(np.median(pos)) if len(pos) else 1.0
        for r in np.nonzero(d < 0)[0]:
            t[r + 1:] += t[r] - t[r + 1] + typ
    keep, t = _clean_time(t, i, notes)
    i, v = i[keep], v[keep]
    temp = None if temp is None else temp[keep]
    state = None if state is None else state[keep]
    if t[0] != 0.0:
        if abs(t[0]) > 1.0:
            notes.append("time shifted to start at 0 (the file starts at %.6g s)" % t[0])
        t = t - t[0]
    i = _apply_sign(t, i, v, state, opts.get("sign", "auto"), notes)
    i = np.where(np.abs(i) < 1e-12, 0.0, i)
    test = CyclerTest(relpath, path, "", None, np.ascontiguousarray(t),
                      np.ascontiguousarray(i), np.ascontiguousarray(v),
                      None if temp is None else np.ascontiguousarray(temp), notes,
                      steps=find_steps(t, i, v))
    return _describe(test, opts, mapping, capacity_ah)


def _describe(test, opts, mapping, capacity_ah):
    """Kind, C-rate and ambient of a read test (again when the reference capacity is
    known); the notes these add replace the ones of an earlier call."""
    base = getattr(test, "_read_notes", None)
    if base is None:
        base = test._read_notes = list(test.notes)
    notes = list(base)
    kind, rate_c, cap_file = classify(test.steps, test.voltage, capacity_ah)
    if opts.get("kind"):
        if opts["kind"] != kind:
            notes.append("kind set to %s by the mapping (the current profile looks like %s)"
                         % (opts["kind"], kind))
        kind = opts["kind"]
    temp = test.temperature
    amb = opts.get("ambient_c")
    if amb is None:
        amb = _ambient(test.name, temp, rate_c, notes, mapping.get("ambient_c"))
    if temp is not None and amb is not None and abs(float(temp[0]) - amb) > 8.0:
        notes.append("the cell starts at %.1f degC, %.0f K from the %g degC ambient: check "
                     "the name or the mapping" % (temp[0], abs(temp[0] - amb), amb))
    test.kind = kind
    test.ambient_c = None if amb is None else float(amb)
    test.rate_c = None if rate_c is None else round(float(rate_c), 4)
    test.capacity_ah = cap_file
    test.notes = notes
    return test


def _ocv_table(path, relpath, roles, rows, dec, v, opts, notes):
    soc = np.array(_column(rows, roles["soc"][0], lambda c: _number(c, dec)), float)
    unit = roles["soc"][1].lower()
    scale = _SOC_UNITS.get(unit)
    if scale is None:
        scale = 100.0 if np.nanmax(soc) > 1.5 else 1.0
    if scale != 1.0:
        notes.append("SOC read in percent")
    soc = soc / scale
    hyst = None
    if "hysteresis" in roles:
        hyst = np.array(_column(rows, roles["hysteresis"][0], lambda c: _number(c, dec)), float)
        hf = _unit_factor(_VOLTAGE_UNITS, roles["hysteresis"][1], "hysteresis", path, notes)
        hyst = hyst * (hf or (1e-3 if np.nanmax(np.abs(hyst)) > 5 else 1.0))
    ok = np.isfinite(soc) & np.isfinite(v)
    if not ok.all():
        notes.append("%d row(s) without SOC or voltage were dropped" % int((~ok).sum()))
    soc, v = soc[ok], v[ok]
    hyst = None if hyst is None else hyst[ok]
    order = np.argsort(soc)
    soc, v = soc[order], v[order]
    hyst = None if hyst is None else hyst[order]
    if len(soc) < 2 or np.any(np.diff(soc) <= 0):
        raise UserError("%s: the OCV table needs at least two rows of distinct SOC" % path)
    amb = opts.get("ambient_c")
    if amb is None:
        amb = _ambient(relpath, None, None, notes)
    empty = np.zeros(0)
    return CyclerTest(relpath, path, opts.get("kind") or "ocv_table",
                      None if amb is None else float(amb), empty, empty.copy(), v, None,
                      notes, soc=soc, hysteresis_v=hyst)


# ------------------------------------------------------------------ a folder

def read_folder(path, mapping=None):
    """Every cycler export under a folder (see the module docstring). Files that are not
    data (README, JSON, plots) are passed over; a data file this reader cannot make sense
    of is one UserError sentence, unless the mapping marks it {"kind": "skip"}."""
    folder = str(path)
    if not os.path.isdir(folder):
        raise UserError("cycler data folder %s does not exist" % folder)
    mapping = load_mapping(mapping, folder)
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in names:
            if n.startswith(".") or os.path.splitext(n)[1].lower() not in DATA_EXTENSIONS:
                continue
            rel = os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/")
            files.append(rel)
    files.sort()
    notes = []
    for n in os.listdir(folder):
        if n.lower().endswith((".xlsx", ".xls", ".mpr", ".res")):
            notes.append("%s skipped: export it as CSV or text from the cycler's software" % n)
    if not files:
        raise UserError("%s holds no cycler exports (%s files)"
                        % (folder, "/".join(DATA_EXTENSIONS)))
    # first pass without a capacity: the largest discharge sweep sets it
    cap = mapping.get("capacity_ah")
    tests = []
    for rel in files:
        if _file_options(mapping, rel).get("kind") == "skip":
            notes.append("%s skipped by the mapping" % rel)
            continue
        tests.append(read_file(os.path.join(folder, rel), mapping, cap, name=rel))
    if cap is None:
        # the slowest discharge sweep nearest 25 degC (a capacity test), else the largest
        sweeps = [x for x in tests if x.capacity_ah and x.rate_c]
        if sweeps:
            ref = min(sweeps, key=lambda x: (abs((x.ambient_c if x.ambient_c is not None
                                                  else 25.0) - 25.0), x.rate_c))
            cap = ref.capacity_ah
            for x in tests:
                if x.soc is None:
                    _describe(x, _file_options(mapping, x.name), mapping, cap)
            notes.append("reference capacity %.4g Ah, the discharge of %s (C-rates are "
                         "relative to it)" % (cap, ref.name))
    return Folder(tests, cap, notes)
