"""The text side of cycler exports: which column is which (header names and units), the
values in the cells (numbers with decimal commas, durations, date-times, charge/discharge
states), the table under the header, and ambient temperatures written into file and
folder names. See cycler.py for the interface and the formats recognised."""
import datetime
import math
import os
import re

import numpy as np

# ------------------------------------------------------------------ headers and units

_TIME_UNITS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
               "ms": 1e-3, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
               "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
               "d": 86400.0, "day": 86400.0, "days": 86400.0}
_CURRENT_UNITS = {"a": 1.0, "amp": 1.0, "amps": 1.0, "ma": 1e-3, "ua": 1e-6, "µa": 1e-6,
                  "μa": 1e-6, "na": 1e-9}
_VOLTAGE_UNITS = {"v": 1.0, "volt": 1.0, "volts": 1.0, "mv": 1e-3, "uv": 1e-6, "µv": 1e-6}
_TEMP_UNITS = {"c": "C", "°c": "C", "degc": "C", "deg c": "C", "℃": "C", "celsius": "C",
               "oc": "C", "deg": "C", "k": "K", "kelvin": "K", "f": "F", "°f": "F",
               "degf": "F", "℉": "F"}
_SOC_UNITS = {"%": 100.0, "pct": 100.0, "percent": 100.0, "": None, "-": 1.0, "1": 1.0}
_ALL_UNITS = set(_TIME_UNITS) | set(_CURRENT_UNITS) | set(_VOLTAGE_UNITS) | set(_TEMP_UNITS) \
    | {"%", "pct", "percent", "ah", "mah", "wh", "mwh", "ohm", "w", "mw", "ma.h"}

# base names (lower case, punctuation as single spaces) per role, best first
_ROLES = {
    "time": ("test time", "testtime", "total time", "totaltime", "time", "elapsed time",
             "elapsed", "run time", "runtime", "prog time", "test time s", "t"),
    "step_time": ("step time", "steptime", "step time s"),
    "datetime": ("date time", "datetime", "realtime", "real time", "absolute time",
                 "timestamp", "time stamp", "dpt time", "system time", "date"),
    "current": ("current", "i", "curr", "amps", "amp", "cell current", "current a"),
    "voltage": ("voltage", "ewe", "ecell", "u", "v", "volts", "potential", "cell voltage",
                "terminal voltage", "ocv", "ocv mean", "open circuit voltage", "ocv v"),
    "temperature": ("temperature", "temp", "aux temperature", "aux temperature 1",
                    "aux temp", "aux temp 1", "cell temperature", "temperature 1", "temp 1",
                    "t1", "tc", "thermocouple", "temp1", "surface temperature"),
    "ambient": ("ambient", "ambient temperature", "chamber", "chamber temperature"),
    "state": ("md", "state", "mode", "status", "step type", "steptype", "step mode"),
    "soc": ("soc", "state of charge", "soc pct", "soc percent"),
    "hysteresis": ("hysteresis", "hyst", "half hysteresis"),
}
_ROLE_OF = {}
for _role, _names in _ROLES.items():
    for _rank, _n in enumerate(_names):
        _ROLE_OF.setdefault(_n, (_role, _rank))


def _split_header(h):
    """'Test_Time(s)' -> ('test time', 's'); 'I/mA' -> ('i', 'ma'); 'time_s' -> ('time', 's')."""
    raw = h.strip().strip('"').strip("'").lstrip("\ufeff").strip()
    low = raw.lower()
    unit = ""
    m = re.match(r"^(.*?)[\s_]*[\(\[]\s*([^\)\]]*?)\s*[\)\]]\s*$", low)
    if m:
        low, unit = m.group(1), m.group(2)
    elif "/" in low:
        head, tail = low.rsplit("/", 1)
        if tail.strip() in _ALL_UNITS or tail.strip() in ("°c", "mv", "ma"):
            low, unit = head, tail.strip()
    else:
        m = re.match(r"^(.*[a-z>])_(s|ms|min|h|a|ma|v|mv|c|k|degc|pct|ah)$", low)
        if m:
            low, unit = m.group(1), m.group(2)
    base = re.sub(r"[^a-z0-9µμ℃°]+", " ", low.replace("<", "").replace(">", "")).strip()
    return base, unit.strip()


def _columns(header, overrides):
    """Role -> (column index, unit) for one header row."""
    found = {}
    over = {v.strip().lower(): k for k, v in (overrides or {}).items()}
    for k, h in enumerate(header):
        if h.strip().lower() in over:
            found[over[h.strip().lower()]] = (k, _split_header(h)[1], -1)
            continue
        base, unit = _split_header(h)
        hit = _ROLE_OF.get(base)
        if hit is None:
            # 'aux temperature 1 c', 'temperature 1', 'ocv mean v' and such
            for role, names in (("temperature", ("temperature", "temp")),
                                ("voltage", ("ocv", "voltage")), ("current", ("current",)),
                                ("hysteresis", ("hyst",)), ("soc", ("soc",))):
                if any(base.startswith(n) for n in names):
                    hit = (role, 50)
                    break
        if hit is None:
            continue
        role, rank = hit
        if role == "voltage" and base.startswith("ocv"):
            role, rank = "ocv", rank
        if role == "time" and unit and unit not in _TIME_UNITS:
            continue  # 't' in a unit that is not time ('T [°C]'): let the temperature rule try
        if role in found and found[role][2] <= rank:
            continue
        found[role] = (k, unit, rank)
    # 'T' with a temperature unit
    for k, h in enumerate(header):
        base, unit = _split_header(h)
        if base == "t" and unit in _TEMP_UNITS and "temperature" not in found:
            found["temperature"] = (k, unit, 60)
            if found.get("time", (None,))[0] == k:
                del found["time"]
    if "voltage" not in found and "ocv" in found:
        found["voltage"] = found.pop("ocv")
    return {r: (k, u) for r, (k, u, _) in found.items()}


# ------------------------------------------------------------------ values

_DUR = re.compile(r"^(?:(\d+)\s*(?:d|day|days)?[\s,\-]+)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")
_DT_FORMATS = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S.%f",
               "%d.%m.%Y %H:%M:%S", "%d-%b-%y %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p",
               "%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S")


def _number(cell, decimal_comma):
    c = cell.strip().strip('"')
    if decimal_comma:
        c = c.replace(",", ".")
    try:
        return float(c)
    except ValueError:
        return math.nan


def _duration(cell):
    c = cell.strip().strip('"')
    m = _DUR.match(c)
    if m:
        d, h, mi, s = m.groups()
        return (int(d or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(s))
    try:
        return float(c.replace(",", "."))
    except ValueError:
        return math.nan


def _timestamp(cell):
    c = cell.strip().strip('"')
    try:
        return datetime.datetime.fromisoformat(c).timestamp()
    except ValueError:
        pass
    for f in _DT_FORMATS:
        try:
            return datetime.datetime.strptime(c, f).timestamp()
        except ValueError:
            continue
    return math.nan


def _state_sign(cell):
    c = cell.strip().strip('"').lower()
    if not c:
        return 0
    if "dchg" in c or "disch" in c or c.startswith("d"):
        return 1
    if "chg" in c or "charge" in c or c.startswith("c"):
        return -1
    return 0


# ------------------------------------------------------------------ file reading

def _read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1", errors="replace")


def _find_header(lines, overrides):
    """(line index, delimiter, header cells, roles) of the first line that names voltage and
    time (or SOC) columns, else None."""
    for n, line in enumerate(lines[:400]):
        if not line.strip():
            continue
        for delim in ("\t", ";", ","):
            if delim not in line:
                continue
            cells = line.split(delim)
            if len(cells) < 2:
                continue
            roles = _columns(cells, overrides)
            if "voltage" in roles and ({"time", "step_time", "datetime", "soc"} & set(roles)):
                return n, delim, cells, roles
    return None


def _table(path, overrides=None):
    """Header roles and the raw rows (list of cell lists) of one file."""
    text = _read_text(path)
    lines = text.splitlines()
    found = _find_header(lines, overrides)
    if found is None:
        return None
    n, delim, header, roles = found
    rows = [ln.split(delim) for ln in lines[n + 1:] if ln.strip()]
    # a units row under the header (some exports): skip rows with no digit in the voltage
    k_v = roles["voltage"][0]
    while rows and not re.search(r"\d", rows[0][k_v] if k_v < len(rows[0]) else ""):
        rows.pop(0)
    sample = [r[k_v] for r in rows[:50] if k_v < len(r)]
    decimal_comma = delim != "," and any(re.match(r"^\s*-?\d+,\d+\s*$", c) for c in sample)
    return header, roles, rows, decimal_comma


def _column(rows, k, parse):
    return [parse(r[k]) if k < len(r) else math.nan for r in rows]


# ------------------------------------------------------------------ ambient temperature

_TEMP_TOKEN = re.compile(r"(?<![A-Za-z0-9.])(m|n|minus|-|neg)?(\d+(?:[.p]\d+)?)\s*"
                         r"(°\s*c|deg\s*c|degc|c)(?![A-Za-z0-9])", re.IGNORECASE)


def _name_temperatures(relpath):
    """Candidate temperatures in a relative path, with an 'explicit' flag (deg/°)."""
    out = []
    for part in re.split(r"[\\/]", os.path.splitext(relpath)[0]):
        for m in _TEMP_TOKEN.finditer(part.replace("_", " ")):
            neg, num, unit = m.groups()
            val = float(num.replace("p", "."))
            if neg:
                val = -val
            out.append((val, unit.lower() != "c", "p" in num))
    return out


def _ambient(relpath, temp, rate_c, notes, default=None):
    cands = _name_temperatures(relpath)
    t0 = None
    if temp is not None and len(temp):
        t0 = float(np.median(temp[:max(1, min(len(temp), 5))]))
    explicit = [c for c in cands if c[1]]
    if explicit:
        return explicit[0][0]
    # '1C', '0p5C' may be a C-rate: drop the token that matches the sweep's rate
    if rate_c is not None and len(cands) > 1:
        kept = [c for c in cands if not (c[0] > 0 and abs(c[0] - rate_c) <= 0.25 * c[0])]
        cands = kept or cands
    if len(cands) > 1:
        plain = [c for c in cands if not c[2]]
        cands = plain or cands
    if len(cands) == 1:
        return cands[0][0]
    if len(cands) > 1:
        if t0 is not None:
            best = min(cands, key=lambda c: abs(c[0] - t0))
        else:
            best = cands[0]
        notes.append("the name holds several temperature-like tokens (%s): %g degC taken as "
                     "the ambient" % (", ".join("%gC" % c[0] for c in cands), best[0]))
        return best[0]
    if default is not None:
        return float(default)
    if t0 is not None:
        notes.append("no temperature in the name: the ambient is the first temperature "
                     "sample, %.1f degC" % t0)
        return round(t0, 1)
    notes.append("no ambient temperature in the name, the data or the mapping")
    return None
