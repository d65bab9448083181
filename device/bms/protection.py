# Protection as explicit state machines (foxBMS style): each condition has a trip level,
# a release hysteresis and trip/release delays, evaluated on the 10 ms fast tick with a
# monotonic ms clock handed in. It reads only the sensor sample, never the estimator.
# Hardware short-circuit protection (AFE or shunt-monitor ALERT) must still back up SC:
# a software loop at 10 ms is too slow for a real short.
from array import array as _array

from bms import sensors
from bms.calfile import MAXIMA
from bms.chemistry import LIMITS as _CHEMISTRY
from bms.compat import native
from bms.compat import ticks_diff as _ticks_diff

# min and max of the cell voltages in C (the firmware's bms_native), without boxing each
# value as sum/max/min over the array do (1 KB per 16-cell fast tick on a Pico)
_extremes = getattr(native, "extremes", None)

CHG = 1
DSG = 2
BOTH = 3

OK = 0
PENDING = 1
TRIPPED = 2
RELEASING = 3
LATCHED = 4
STATE = ("OK", "PENDING", "TRIPPED", "RELEASING", "LATCHED")

# Sources of the value a condition watches.
_VMAX, _VMIN, _IDSG, _ICHG, _IABS, _TMAX, _TMIN, _AGE = 0, 1, 2, 3, 4, 5, 6, 7

# name, source, trips above (else below), FETs it opens, latches, unit of its thresholds
SPEC = (
    ("ov", _VMAX, True, CHG, True, "v"),  # latched: an overcharged cell wants a person
    ("ov_hard", _VMAX, True, BOTH, True, "v"),
    ("uv", _VMIN, False, DSG, False, "v"),
    ("uv_hard", _VMIN, False, BOTH, True, "v"),
    ("oc_chg", _ICHG, True, CHG, False, "a"),
    ("oc_dsg", _IDSG, True, DSG, False, "a"),
    ("sc", _IABS, True, BOTH, True, "a"),
    ("ut_chg", _TMIN, False, CHG, False, "c"),
    ("ot_chg", _TMAX, True, CHG, False, "c"),
    ("ut_dsg", _TMIN, False, DSG, False, "c"),
    ("ot_dsg", _TMAX, True, BOTH, False, "c"),
    ("ot_hard", _TMAX, True, BOTH, True, "c"),
)
_SENSOR_GROUPS = ("CUR", "CELL", "TEMP")

# Per-chemistry defaults used when a calibration gives no limits: the cell's voltage
# window from the project's one chemistry table.
_LIMITS = {k: {"v_min": v["v_min"], "v_max": v["v_max"]} for k, v in _CHEMISTRY.items()}
_DEFAULT_LIMITS = {"i_discharge_max_a": 10.0, "i_charge_max_a": 5.0,
                   "t_charge_min_c": 0.0, "t_charge_max_c": 45.0,
                   "t_discharge_min_c": -20.0, "t_discharge_max_c": 60.0}


# The soft over-voltage trip sits this far above the cell's charge voltage v_max: a CC-CV
# charger holds the cell at v_max, and a trip right there latched a fault at the end of
# every full charge (sensor noise, the charger's own tolerance). The hard trip stays at
# the chemistry's absolute maximum (calfile.MAXIMA), and nothing passes it.
OV_MARGIN_V = 0.02


def build_config(cal=None, overrides=None, chemistry="nmc"):
    """Flat protection config from a calibration dict (its "limits" and "cell.chemistry"),
    then overrides, then clamped to the chemistry's absolute maxima in calfile.MAXIMA."""
    if cal is not None:
        chemistry = cal.get("cell", {}).get("chemistry", chemistry)
    if chemistry not in MAXIMA:
        raise ValueError("protection: chemistry '%s' unknown, expected one of %s"
                         % (chemistry, ", ".join(sorted(MAXIMA))))
    mx = MAXIMA[chemistry]
    lim = dict(_DEFAULT_LIMITS)
    lim.update(_LIMITS.get(chemistry, {"v_min": mx["v_min"], "v_max": mx["v_max"]}))
    if cal is not None:
        for k, v in cal.get("limits", {}).items():
            if k in lim:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                    raise ValueError("protection: calibration field 'limits.%s' is not a "
                                     "number; fix the calibration file" % k)
                lim[k] = float(v)
    i_dsg, i_chg = lim["i_discharge_max_a"], lim["i_charge_max_a"]
    c = {
        "chemistry": chemistry,
        "ov_trip_v": lim["v_max"] + OV_MARGIN_V, "ov_hyst_v": 0.05, "ov_trip_ms": 1000,
        "ov_release_ms": 2000,
        "ov_hard_trip_v": mx["v_max"], "ov_hard_hyst_v": 0.05, "ov_hard_trip_ms": 1000,
        "ov_hard_release_ms": 0,
        "uv_trip_v": lim["v_min"], "uv_hyst_v": 0.1, "uv_trip_ms": 2000, "uv_release_ms": 2000,
        "uv_hard_trip_v": mx["v_min"], "uv_hard_hyst_v": 0.1, "uv_hard_trip_ms": 5000,
        "uv_hard_release_ms": 0,
        "oc_chg_trip_a": i_chg, "oc_chg_hyst_a": 0.2 * i_chg, "oc_chg_trip_ms": 500,
        "oc_chg_release_ms": 5000,
        "oc_dsg_trip_a": i_dsg, "oc_dsg_hyst_a": 0.2 * i_dsg, "oc_dsg_trip_ms": 500,
        "oc_dsg_release_ms": 5000,
        "sc_trip_a": 3.0 * i_dsg, "sc_hyst_a": 2.0 * i_dsg, "sc_trip_ms": 0, "sc_release_ms": 0,
        "ut_chg_trip_c": lim["t_charge_min_c"], "ut_chg_hyst_c": 2.0, "ut_chg_trip_ms": 1000,
        "ut_chg_release_ms": 5000,
        "ot_chg_trip_c": lim["t_charge_max_c"], "ot_chg_hyst_c": 3.0, "ot_chg_trip_ms": 1000,
        "ot_chg_release_ms": 5000,
        "ut_dsg_trip_c": lim["t_discharge_min_c"], "ut_dsg_hyst_c": 2.0, "ut_dsg_trip_ms": 1000,
        "ut_dsg_release_ms": 5000,
        "ot_dsg_trip_c": lim["t_discharge_max_c"], "ot_dsg_hyst_c": 3.0, "ot_dsg_trip_ms": 1000,
        "ot_dsg_release_ms": 5000,
        "ot_hard_trip_c": mx["t_max_c"], "ot_hard_hyst_c": 5.0, "ot_hard_trip_ms": 1000,
        "ot_hard_release_ms": 0,
        "stale_ms": 100,           # a sample older than this opens both FETs
        "stale_release_ms": 100,
    }
    if overrides:
        for k in overrides:
            if k not in c:
                raise ValueError("protection: unknown config key '%s'" % k)
            c[k] = overrides[k]
    _clamp(c, mx)
    _check(c)
    return c


def _clamp(c, mx):
    # No calibration or override may widen a limit beyond the chemistry's maxima.
    for k in ("ov_trip_v", "ov_hard_trip_v"):
        c[k] = min(c[k], mx["v_max"])
    for k in ("uv_trip_v", "uv_hard_trip_v"):
        c[k] = max(c[k], mx["v_min"])
    c["ut_chg_trip_c"] = max(c["ut_chg_trip_c"], mx["t_charge_min_c"])
    c["ot_chg_trip_c"] = min(c["ot_chg_trip_c"], mx["t_charge_max_c"])
    c["ut_dsg_trip_c"] = max(c["ut_dsg_trip_c"], mx["t_min_c"])
    for k in ("ot_dsg_trip_c", "ot_hard_trip_c"):
        c[k] = min(c[k], mx["t_max_c"])


def _check(c):
    for spec in SPEC:
        name, unit = spec[0], spec[5]
        for k in (name + "_trip_" + unit, name + "_hyst_" + unit):
            v = c[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise ValueError("protection: config '%s' must be a number" % k)
        if c[name + "_hyst_" + unit] < 0:
            raise ValueError("protection: config '%s_hyst_%s' must not be negative"
                             % (name, unit))
        for k in (name + "_trip_ms", name + "_release_ms"):
            if not isinstance(c[k], int) or c[k] < 0:
                raise ValueError("protection: config '%s' must be a whole number of ms >= 0"
                                 % k)
    for name in ("oc_chg", "oc_dsg", "sc"):
        if not c[name + "_trip_a"] > 0:
            raise ValueError("protection: config '%s_trip_a' must be positive" % name)
    if c["uv_trip_v"] >= c["ov_trip_v"]:
        raise ValueError("protection: under-voltage trip %.3f V is not below over-voltage "
                         "trip %.3f V" % (c["uv_trip_v"], c["ov_trip_v"]))
    if c["ut_chg_trip_c"] >= c["ot_chg_trip_c"] or c["ut_dsg_trip_c"] >= c["ot_dsg_trip_c"]:
        raise ValueError("protection: a temperature window is empty (its minimum is not "
                         "below its maximum)")
    if not (isinstance(c["stale_ms"], int) and c["stale_ms"] > 0):
        raise ValueError("protection: config 'stale_ms' must be a positive whole number of ms")


class Condition:
    """One debounced trip/release state machine."""

    def __init__(self, code, src, above, fets, latch, trip, hyst, trip_ms, release_ms):
        self.code = code
        self.clear_code = code + "_CLR"
        self.src = src
        self.above = above
        self.fets = fets
        self.latch = latch
        self.trip = trip
        self.release = trip - hyst if above else trip + hyst
        self.trip_ms = trip_ms
        self.release_ms = release_ms
        self.state = OK
        self.t0_ms = 0
        self.value = 0.0

    def engaged(self):
        return self.state >= TRIPPED

    def safe(self):
        x = self.value
        return x < self.release if self.above else x > self.release

    def step(self, x, now_ms, log, immediate=False):
        """Advance with value x; returns True on a change of the FET demand."""
        self.value = x
        over = x > self.trip if self.above else x < self.trip
        st = self.state
        if st == OK and over:
            st = PENDING
            self.t0_ms = now_ms
        if st == PENDING:
            if not over:
                st = OK
            elif immediate or _ticks_diff(now_ms, self.t0_ms) >= self.trip_ms:
                st = LATCHED if self.latch else TRIPPED
                self.state = st
                if log is not None:
                    log.append(self.code, now_ms, x)
                return True
        elif st == TRIPPED and self.safe():
            st = RELEASING
            self.t0_ms = now_ms
        if st == RELEASING:
            if not self.safe():
                st = TRIPPED
            elif _ticks_diff(now_ms, self.t0_ms) >= self.release_ms:
                self.state = OK
                if log is not None:
                    log.append(self.clear_code, now_ms, x)
                return True
        self.state = st
        return False


class Protection:
    """Call update(sample, now_ms) every fast tick; read charge_fet_on, discharge_fet_on,
    active (set of fault codes). Hard faults latch until reset_faults()."""

    def __init__(self, config=None, log=None):
        if config is None:
            config = build_config()
        self.config = config
        self.log = log
        conds = []
        for name, src, above, fets, latch, unit in SPEC:
            conds.append(Condition(name.upper(), src, above, fets, latch,
                                   config[name + "_trip_" + unit],
                                   config[name + "_hyst_" + unit],
                                   config[name + "_trip_ms"], config[name + "_release_ms"]))
        self.conditions = conds
        self.stale = Condition("STALE", _AGE, True, BOTH, False, config["stale_ms"], 0, 0,
                               config["stale_release_ms"])
        # Sensor fault codes made once: "CELL_OPEN", "CUR_MISSING", ...
        self._sns_codes = [g + "_" + s for g in _SENSOR_GROUPS for s in sensors.STATUS]
        self._sns_latched = 0    # bit per code index
        self._sns_now = 0
        self._vals = [0.0] * 8
        self._ext = _array("f", [0.0, 0.0]) if _extremes is not None else None
        self._have = bytearray(8)
        self._had = bytearray(8)
        self.active = set()
        self.active.add("NO_DATA")
        self._no_data = True
        self._stale_shown = False
        self.charge_fet_on = False
        self.discharge_fet_on = False

    def _sensor(self, group, st, channel, now_ms):
        n = len(sensors.STATUS)
        bit = 1 << (group * n + st)
        self._sns_now |= bit
        if not self._sns_latched & bit:
            self._sns_latched |= bit
            code = self._sns_codes[group * n + st]
            self.active.add(code)
            if self.log is not None:
                self.log.append(code, now_ms, channel)

    def update(self, s, now_ms):
        """Evaluate one fast tick on sample s (a sensors.Sample).

        Cheap at 16 cells (it runs every 10 ms): the cell extremes come from the
        builtins (C loops) when every cell is valid, each condition that is OK and not
        over its trip level is passed over without a method call, and the FET mask is
        gathered in the same loop. Only the floats the values themselves need are made.
        The cell voltages may be up to ~40 ms old (a 16-cell pack's taps are scanned over
        four fast ticks, drivers.ads1115.TapBank): far inside every voltage condition's
        trip delay (ov 1 s, uv 2 s)."""
        active = self.active
        if s.t_ms is None:
            self._apply(BOTH)   # nothing measured yet: stay safe
            return
        if self._no_data:
            self._no_data = False
            active.discard("NO_DATA")
        log = self.log
        st = self.stale
        age = _ticks_diff(now_ms, s.t_ms)
        if st.state != OK or age > st.trip:
            st.step(age, now_ms, log)
        else:
            st.value = age
        if st.state >= TRIPPED:
            active.add("STALE")
            self._stale_shown = True
            have = self._have
            for k in range(8):
                have[k] = 0
            self._outputs()
            return
        if self._stale_shown:
            active.discard("STALE")
        self._stale_shown = False
        self._sns_now = 0
        vals = self._vals
        # this tick's validity flags go into last tick's buffer: no copy, no allocation
        had = self._have
        have = self._had
        self._had = had
        self._have = have
        # current
        i = s.current_a
        cst = s.current_st
        if cst == 0 and i != i:
            cst = sensors.NAN
        if cst:
            self._sensor(0, cst, 0, now_ms)
            have[_IDSG] = have[_ICHG] = have[_IABS] = 0
        else:
            vals[_IDSG] = i
            vals[_ICHG] = -i
            vals[_IABS] = i if i >= 0 else -i
            have[_IDSG] = have[_ICHG] = have[_IABS] = 1
        # cells: extremes in C when all are valid and none is NaN (a NaN or a +-inf pair
        # makes the sum NaN), else the per-cell loop that names each faulty cell
        cv = s.cell_v
        cs = s.cell_st
        vmax = None
        if s.n_cells and not max(cs):
            if _extremes is not None and type(cv) is _array:
                ext = self._ext
                if _extremes(cv, ext):
                    vmin = ext[0]
                    vmax = ext[1]
            else:
                x = sum(cv)
                if x == x:
                    vmax = max(cv)
                    vmin = min(cv)
        if vmax is None:
            for k in range(s.n_cells):
                v = cv[k]
                cst = cs[k]
                if cst == 0 and v != v:
                    cst = sensors.NAN
                if cst:
                    self._sensor(1, cst, k, now_ms)
                elif vmax is None:
                    vmax = vmin = v
                elif v > vmax:
                    vmax = v
                elif v < vmin:
                    vmin = v
        if vmax is not None:
            vals[_VMAX] = vmax
            vals[_VMIN] = vmin
            have[_VMAX] = have[_VMIN] = 1
        else:
            have[_VMAX] = have[_VMIN] = 0
        # temperatures
        tmax = tmin = None
        tc = s.temp_c
        ts = s.temp_st
        for k in range(s.n_temps):
            t = tc[k]
            tst = ts[k]
            if tst == 0 and t != t:
                tst = sensors.NAN
            if tst:
                self._sensor(2, tst, k, now_ms)
            elif tmax is None:
                tmax = tmin = t
            elif t > tmax:
                tmax = t
            elif t < tmin:
                tmin = t
        if s.n_temps == 0:   # no thermometer at all: cannot allow charging below 0 degC
            self._sensor(2, sensors.MISSING, 0, now_ms)
        if tmax is not None:
            vals[_TMAX] = tmax
            vals[_TMIN] = tmin
            have[_TMAX] = have[_TMIN] = 1
        else:
            have[_TMAX] = have[_TMIN] = 0
        open_mask = BOTH if self._sns_latched else 0
        for c in self.conditions:
            src = c.src
            if have[src]:   # no valid value: state frozen, sensor fault holds FETs open
                x = vals[src]
                if c.state == OK and ((x <= c.trip) if c.above else (x >= c.trip)):
                    c.value = x   # the common case: within limits, nothing to do
                    continue
                # A value that just became valid (boot, sensor back) gets no debounce:
                # the FETs must not close for a trip delay on a pack already out of limits.
                c.step(x, now_ms, log, not had[src])
                if c.state >= TRIPPED:
                    active.add(c.code)
                else:
                    active.discard(c.code)
            if c.state >= TRIPPED:
                open_mask |= c.fets
        self._apply(open_mask)

    def _outputs(self):
        open_mask = self.stale.fets if self.stale.engaged() else 0
        if self._sns_latched or "NO_DATA" in self.active:
            open_mask = BOTH
        for c in self.conditions:
            if c.engaged():
                open_mask |= c.fets
        self._apply(open_mask)

    def _apply(self, open_mask):
        self.charge_fet_on = not open_mask & CHG
        self.discharge_fet_on = not open_mask & DSG

    def reset_faults(self, now_ms=0):
        """Clear latched faults whose cause is gone; returns the codes still active."""
        cleared = 0
        for c in self.conditions:
            if c.state == LATCHED and c.safe():
                c.state = OK
                self.active.discard(c.code)
                cleared += 1
        keep = self._sns_latched & self._sns_now
        for k in range(len(self._sns_codes)):
            bit = 1 << k
            if self._sns_latched & bit and not keep & bit:
                self.active.discard(self._sns_codes[k])
                cleared += 1
        self._sns_latched = keep
        if self.log is not None:
            self.log.append("RESET", now_ms, cleared)
        self._outputs()
        return sorted(self.active)

    def inherit_latches(self, old):
        """Take over old's latched faults (a new config must not clear them: only a
        person does, with reset_faults())."""
        for k in range(len(self.conditions)):  # same SPEC, same order
            if old.conditions[k].state == LATCHED:
                self.conditions[k].state = LATCHED
                self.active.add(self.conditions[k].code)
        self._sns_latched = old._sns_latched
        for k in range(len(self._sns_codes)):
            if self._sns_latched & (1 << k):
                self.active.add(self._sns_codes[k])
        self._outputs()

    def states(self):
        """{code: state name} of every condition, for status and diagnostics."""
        d = {}
        for c in self.conditions:
            d[c.code] = STATE[c.state]
        d["STALE"] = STATE[self.stale.state]
        return d
