# Calibration file: format, checksum and validation. Shared by the host tools and the
# device, so it is MicroPython-compatible (no typing, no sort_keys, hashlib only).
#
# File layout (bytes):  {"checksum": "<64 hex>",<body without its opening brace>
# where body is the host's canonical JSON of the calibration (bms_host.calibration:
# sorted keys, compact; files before fit-4 were indented, and load the same). The
# checksum is SHA-256 over the body bytes, so a float32 device checks exactly what
# the host wrote without re-serialising floats.
import json

from bms.compat import hashlib

SCHEMA = 1
# Largest calibration file a board takes: what one MQTT message carries into the
# telemetry's 32 KB buffer, and what a Pico's heap parses with room to spare (the LG M50
# file is about 19 KB). bms-host push checks it before uploading; the board again.
MAX_BYTES = 32768
_HEAD = '{"checksum": "'
_HEX = "0123456789abcdef"

# Absolute maxima per chemistry, built into the code: no calibration may go past them.
MAXIMA = {
    "nmc": {"v_min": 2.5, "v_max": 4.25, "t_min_c": -20.0, "t_max_c": 60.0,
            "t_charge_min_c": 0.0, "t_charge_max_c": 45.0},
    "lfp": {"v_min": 2.0, "v_max": 3.65, "t_min_c": -20.0, "t_max_c": 60.0,
            "t_charge_min_c": 0.0, "t_charge_max_c": 45.0},
}

TABLES = ("ocv_v", "r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s")
OPTIONAL_TABLES = ("r0c_ohm", "i0_a", "r2c_ohm", "rh_ohm")
LIMITS = ("v_min", "v_max", "i_discharge_max_a", "i_charge_max_a", "t_charge_min_c",
          "t_charge_max_c", "t_discharge_min_c", "t_discharge_max_c", "t_core_max_c")
THERMAL = ("c_core_j_per_k", "c_surf_j_per_k", "r_core_surf_k_per_w", "r_surf_amb_k_per_w")
# Optional thermal keys within [0, 1]: the fractions of i*v1 and i*v2 (fast and slow RC)
# counted as heat.
THERMAL_FRACTIONS = ("heat_v1_fraction", "heat_v2_fraction")
# Optional solid-diffusion term (model.py): OCV read at a SOC shifted by a lag of the
# current. Each key: (lowest, highest) accepted value. shift_per_a_chg, the gain on
# charge, may be left out (then shift_per_a both ways).
DIFFUSION = {"shift_per_a": (0.0, 0.5), "tau_s": (1.0, 1e5), "activation_k": (0.0, 2e4),
             "shift_per_a_chg": (0.0, 0.5)}
DIFFUSION_OPTIONAL = ("shift_per_a_chg",)
# Optional voltage hysteresis (hysteresis.py): m_v, the half gap M (V) on the tables'
# grid, one row per temperature; gamma, how fast a branch switch goes (per unit of SOC).
HYST_M_MAX_V = 0.2
HYST_GAMMA = (0.1, 1000.0)


class CalibrationError(ValueError):
    pass


def _hex(digest):
    out = []
    for b in digest:
        out.append(_HEX[b >> 4])
        out.append(_HEX[b & 15])
    return "".join(out)


def sha256_hex(data):
    if isinstance(data, str):
        data = data.encode()
    return _hex(hashlib.sha256(data).digest())


def split(text):
    """Return (checksum, body) of a calibration file's text, or raise CalibrationError."""
    if not isinstance(text, str):
        text = bytes(text).decode()
    n = len(_HEAD)
    if not text.startswith(_HEAD) or text[n + 64:n + 66] != '",':
        raise CalibrationError("calibration: file does not start with its checksum "
                               "(truncated, or not written by bms-host fit)")
    return text[n:n + 64], "{" + text[n + 66:]


def encode(cal_body_json):
    """File text for a body already serialised (the host's canonical JSON)."""
    if not cal_body_json.startswith("{"):
        raise CalibrationError("calibration: body is not a JSON object")
    return _HEAD + sha256_hex(cal_body_json) + '",' + cal_body_json[1:]


def _num(v):
    return (isinstance(v, float) or isinstance(v, int)) and not isinstance(v, bool) and v == v \
        and v not in (float("inf"), float("-inf"))


def _need(d, key, where):
    if not isinstance(d, dict) or key not in d:
        raise CalibrationError("calibration: missing field '%s%s'" % (where, key))
    return d[key]


def _numbers(v, name, n=None, positive=False):
    if not isinstance(v, list) or (n is not None and len(v) != n) or len(v) == 0:
        raise CalibrationError("calibration: field '%s' must be a list of %s numbers"
                               % (name, n if n is not None else "one or more"))
    for x in v:
        if not _num(x):
            raise CalibrationError("calibration: field '%s' holds a non-number or non-finite "
                                   "value" % name)
        if positive and x <= 0:
            raise CalibrationError("calibration: field '%s' must be positive" % name)
    return v


def _increasing(v, name):
    for k in range(1, len(v)):
        if not v[k] > v[k - 1]:
            raise CalibrationError("calibration: field '%s' must be strictly increasing" % name)


def validate(cal, series_cells=None):
    """Check a parsed calibration dict. Raises CalibrationError naming the field."""
    if not isinstance(cal, dict):
        raise CalibrationError("calibration: top level must be a JSON object")
    schema = _need(cal, "schema", "")
    if schema != SCHEMA:
        raise CalibrationError("calibration: field 'schema' is %r, this firmware reads %d"
                               % (schema, SCHEMA))
    cell = _need(cal, "cell", "")
    for k in ("id", "chemistry"):
        if not isinstance(_need(cell, k, "cell."), str):
            raise CalibrationError("calibration: field 'cell.%s' must be a string" % k)
    chem = cell["chemistry"]
    if chem not in MAXIMA:
        raise CalibrationError("calibration: field 'cell.chemistry' is %r, expected one of %s"
                               % (chem, ", ".join(sorted(MAXIMA))))
    cap = _need(cell, "capacity_ah", "cell.")
    if not _num(cap) or cap <= 0:
        raise CalibrationError("calibration: field 'cell.capacity_ah' must be a positive number")

    lim = _need(cal, "limits", "")
    for k in LIMITS:
        if not _num(_need(lim, k, "limits.")):
            raise CalibrationError("calibration: field 'limits.%s' must be a finite number" % k)
    mx = MAXIMA[chem]
    if lim["v_max"] > mx["v_max"] or lim["v_min"] < mx["v_min"] or lim["v_min"] >= lim["v_max"]:
        raise CalibrationError("calibration: field 'limits.v_min/v_max' goes beyond the %s "
                               "maxima %.2f..%.2f V" % (chem, mx["v_min"], mx["v_max"]))
    if lim["t_charge_min_c"] < mx["t_charge_min_c"] or lim["t_charge_max_c"] > mx["t_charge_max_c"]:
        raise CalibrationError("calibration: field 'limits.t_charge_*' goes beyond the %s "
                               "charge window %g..%g degC"
                               % (chem, mx["t_charge_min_c"], mx["t_charge_max_c"]))
    for k in ("t_discharge_min_c", "t_discharge_max_c", "t_core_max_c"):
        if lim[k] < mx["t_min_c"] or lim[k] > mx["t_max_c"]:
            raise CalibrationError("calibration: field 'limits.%s' goes beyond the %s maxima "
                                   "%g..%g degC" % (k, chem, mx["t_min_c"], mx["t_max_c"]))
    for k in ("i_discharge_max_a", "i_charge_max_a"):
        if lim[k] <= 0:
            raise CalibrationError("calibration: field 'limits.%s' must be positive" % k)

    tab = _need(cal, "tables", "")
    soc = _numbers(_need(tab, "soc", "tables."), "tables.soc")
    temp = _numbers(_need(tab, "temp_c", "tables."), "tables.temp_c")
    _increasing(soc, "tables.soc")
    _increasing(temp, "tables.temp_c")
    if len(soc) < 2:
        raise CalibrationError("calibration: field 'tables.soc' needs at least two points")
    for name in TABLES + OPTIONAL_TABLES:
        if name in OPTIONAL_TABLES and name not in tab:
            continue
        rows = _need(tab, name, "tables.")
        if not isinstance(rows, list) or len(rows) != len(temp):
            raise CalibrationError("calibration: field 'tables.%s' must have one row per "
                                   "temperature (%d)" % (name, len(temp)))
        for row in rows:
            _numbers(row, "tables." + name, len(soc), positive=True)
    # the device inverts the OCV by bisection and lets it rise past the top of the SOC
    # grid with its slope there (model.lookup): both need an OCV that rises with SOC
    for j, row in enumerate(tab["ocv_v"]):
        for k in range(1, len(row)):
            if row[k] < row[k - 1]:
                raise CalibrationError("calibration: field 'tables.ocv_v' must not fall as "
                                       "SOC rises (row %d, at SOC %g)" % (j, soc[k]))

    th = _need(cal, "thermal", "")
    for k in THERMAL:
        v = _need(th, k, "thermal.")
        if not _num(v) or v <= 0:
            raise CalibrationError("calibration: field 'thermal.%s' must be a positive number" % k)
    for k in THERMAL_FRACTIONS:
        if k in th:
            v = th[k]
            if not _num(v) or v < 0 or v > 1:
                raise CalibrationError("calibration: field 'thermal.%s' must be a number "
                                       "from 0 to 1" % k)

    if "diffusion" in cal:
        dif = cal["diffusion"]
        if not isinstance(dif, dict):
            raise CalibrationError("calibration: field 'diffusion' must be an object")
        for k in DIFFUSION:
            if k in DIFFUSION_OPTIONAL and k not in dif:
                continue
            v = _need(dif, k, "diffusion.")
            lo, hi = DIFFUSION[k]
            if not _num(v) or v < lo or v > hi:
                raise CalibrationError("calibration: field 'diffusion.%s' must be a number "
                                       "from %g to %g" % (k, lo, hi))

    if "hysteresis" in cal:
        _hysteresis(cal["hysteresis"], len(temp), len(soc))

    if series_cells is not None and "pack" in cal:
        n = _need(cal["pack"], "series_cells", "pack.")
        if n != series_cells:
            raise CalibrationError("calibration: field 'pack.series_cells' is %r but this board "
                                   "has %d cells in series" % (n, series_cells))
    return cal


def _hysteresis(hy, nt, ns):
    if not isinstance(hy, dict):
        raise CalibrationError("calibration: field 'hysteresis' must be an object")
    g = _need(hy, "gamma", "hysteresis.")
    lo, hi = HYST_GAMMA
    if not _num(g) or g < lo or g > hi:
        raise CalibrationError("calibration: field 'hysteresis.gamma' must be a number from "
                               "%g to %g" % (lo, hi))
    rows = _need(hy, "m_v", "hysteresis.")
    if not isinstance(rows, list) or len(rows) != nt:
        raise CalibrationError("calibration: field 'hysteresis.m_v' must have one row per "
                               "temperature (%d)" % nt)
    for row in rows:
        for m in _numbers(row, "hysteresis.m_v", ns):
            if m < 0 or m > HYST_M_MAX_V:
                raise CalibrationError("calibration: field 'hysteresis.m_v' must hold values "
                                       "from 0 to %g V" % HYST_M_MAX_V)


def loads(text, series_cells=None):
    """Parse, check the checksum, validate. Returns (calibration dict, checksum hex)."""
    checksum, body = split(text)
    if sha256_hex(body) != checksum:
        try:
            json.loads(body)
        except ValueError:
            raise CalibrationError("calibration: file is cut short or malformed (checksum "
                                   "mismatch and its JSON does not parse); copy or "
                                   "regenerate it")
        raise CalibrationError("calibration: checksum mismatch (file corrupted or edited; "
                               "regenerate it with bms-host fit)")
    try:
        cal = json.loads(body)
    except ValueError:
        raise CalibrationError("calibration: body is not valid JSON")
    return validate(cal, series_cells), checksum


def compact(cal):
    """The calibration as the board keeps it: tables as array('f') rows instead of lists
    of boxed floats, without the host-only provenance (LG M50 on the float32 unix port:
    105 -> 18 KB of heap). model.pack reads either form."""
    from array import array

    tab = cal["tables"]
    for k in tab:
        v = tab[k]
        if len(v) and isinstance(v[0], list):
            tab[k] = [array("f", row) for row in v]
        else:
            tab[k] = array("f", v)
    cal.pop("provenance", None)
    return cal


def load(path, series_cells=None):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise CalibrationError("calibration: cannot read file %s" % path)
    return loads(text, series_cells)
