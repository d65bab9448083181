# Board-independent acquisition: read the board's drivers into buffers made once,
# validate every channel and stamp the sample. Protection acts on the statuses.
from array import array

from bms.compat import native

# The per-cell loop of Sensors._cells in C (the firmware's bms_native): the same statuses
# and counters without boxing floats (1.8 KB and ~1.6 ms per 16-cell fast tick on an
# RP2040). Without it, the loop below.
_native_cells = getattr(native, "cells", None)

OK = 0
MISSING = 1   # the driver raised OSError (device unplugged, bus error)
NAN = 2
RANGE = 3     # outside what the sensor or a Li-ion cell can physically show
STUCK = 4     # bit-identical for stuck_n samples while the rest of its group changes
#               (temperatures: while the others moved by stuck_move_c or more)
OPEN = 5      # open cell tap (reads near 0 V) or open thermistor
SHORT = 6     # shorted thermistor
STATUS = ("OK", "MISSING", "NAN", "RANGE", "STUCK", "OPEN", "SHORT")

DEFAULTS = {
    "cell_open_v": 0.5,
    "cell_max_v": 5.0,
    "current_max_a": 1000.0,
    "temp_min_c": -40.0,
    "temp_max_c": 125.0,
    "stuck_n": 500,          # 5 s at a 10 ms tick; 0 disables stuck detection
    "stuck_flow_a": 0.5,     # the current channel is only judged stuck above this
    # a cell reading open or out of range is believed after this many samples in a row
    # (more than one sweep of a pipelined tap scan: 4 fast ticks at 16 cells)
    "implausible_hold_n": 5,
    # A temperature barely moves at rest: one sensor's 1-LSB step next to another's
    # steady reading is not a stuck sensor (it tripped a 16-cell pack at rest).
    "stuck_move_c": 1.0,
}
_NAN_F = float("nan")
_REP_MAX = 65535


def _config(base, config, what):
    cfg = dict(base)
    if config:
        for k in config:
            if k not in base:
                raise ValueError("%s: unknown config key '%s' (known: %s)"
                                 % (what, k, ", ".join(sorted(base))))
            cfg[k] = config[k]
    return cfg


class Board:
    """What a board provides to the BMS.

    current: object with read_current_a() (positive on discharge; OSError when missing).
    taps: one object per series cell with read_v(); stacked=True means tap k is measured
    against pack negative (cell k = tap k - tap k-1), False means across cell k directly.
    temps: objects with read_c() (NaN and .fault set on open/short, OSError when missing).
    cell_temp: for each cell, the index of the temperature sensor nearest to it.
    """

    def __init__(self, current, taps, temps, cell_temp=None, stacked=True, charge_fet=None,
                 discharge_fet=None, bleeders=None, name="board", tap_scan=None):
        n = len(taps)
        if n < 1 or n > 16:
            raise ValueError("board: %d cell taps given, this BMS handles 1 to 16 series "
                             "cells" % n)
        if len(temps) < 1:
            raise ValueError("board: no temperature sensor given; protection needs at least "
                             "one to block charging below 0 degC")
        if cell_temp is None:
            cell_temp = [k * len(temps) // n for k in range(n)]
        if len(cell_temp) != n:
            raise ValueError("board: cell_temp must name one temperature sensor per cell "
                             "(%d cells)" % n)
        for t in cell_temp:
            if not 0 <= t < len(temps):
                raise ValueError("board: cell_temp refers to sensor %r but there are %d "
                                 "temperature sensors" % (t, len(temps)))
        self.current = current
        self.taps = list(taps)
        # called once per sample before the taps are read; it may refresh only some taps
        # per call (a pipelined scan: drivers.ads1115.TapBank refreshes a 16-cell pack's
        # taps over four calls, so a cell voltage is up to ~40 ms old at a 10 ms tick)
        self.tap_scan = tap_scan
        # optional: tap_read(tap_v, tap_st) fills every tap's voltage and status (OK, or
        # MISSING with NaN) in one call, instead of one read_v() per tap
        self.tap_read = None
        # optional: tap_ready() is False until every tap has a first reading (a pipelined
        # scan fills them over its first ticks); until then no sample is stamped, so
        # protection holds the FETs open with NO_DATA instead of seeing taps missing
        self.tap_ready = None
        self.temps = list(temps)
        # Each temperature sensor is read every temp_every_n fast ticks, the sensors
        # staggered over the ticks (sensor k on tick k mod n): a cell's or the board's
        # temperature moves over seconds (and every thermal trip waits 1 s), so 50 ms
        # loses nothing, while the fast tick sheds the NTCs' conversion (~0.45 ms each on
        # an RP2040). 1: every sensor on every tick.
        self.temp_every_n = 1
        self.cell_temp = bytes(cell_temp)
        self.stacked = stacked
        self.charge_fet = charge_fet
        self.discharge_fet = discharge_fet
        self.bleeders = bleeders
        self.name = name
        self.n_cells = n
        self.n_temps = len(temps)


class Sample:
    """One acquisition, updated in place. Statuses use the codes above; t_ms is None until
    the first read."""

    def __init__(self, n_cells, n_temps, cell_temp):
        self.n_cells = n_cells
        self.n_temps = n_temps
        self.cell_v = array("f", [0.0] * n_cells)
        self.cell_st = bytearray([MISSING] * n_cells)
        self.temp_c = array("f", [0.0] * n_temps)
        self.temp_st = bytearray([MISSING] * n_temps)
        self.cell_temp = bytes(cell_temp)
        self.current_a = _NAN_F
        self.current_st = MISSING
        self.t_ms = None
        self.seq = 0

    def cell_temp_c(self, k):
        return self.temp_c[self.cell_temp[k]]

    def all_ok(self):
        if self.t_ms is None or self.current_st:
            return False
        for st in self.cell_st:
            if st:
                return False
        for st in self.temp_st:
            if st:
                return False
        return True


def _stuck(rep, st, k, n_stuck):
    """rep[k] repeated while most other valid channels of the group changed lately."""
    others = 0
    moving = 0
    for j in range(len(rep)):
        if j != k and st[j] == OK:
            others += 1
            if rep[j] < n_stuck:
                moving += 1
    return others > 0 and 2 * moving > others


class Sensors:
    def __init__(self, board, config=None):
        self.cfg = _config(DEFAULTS, config, "sensors")
        self.board = board
        n, m = board.n_cells, board.n_temps
        self.sample = Sample(n, m, board.cell_temp)
        self._tap_v = array("f", [0.0] * n)
        self._tap_st = bytearray(n)
        self._last_v = array("f", [0.0] * n)
        self._rep_v = array("H", [0] * n)
        self._odd_v = array("H", [0] * n)   # samples in a row a cell read open/out of range
        self._last_t = array("f", [0.0] * m)
        self._rep_t = array("H", [0] * m)
        # the others' readings when channel k's run of identical readings began
        self._ref_t = array("f", [0.0] * (m * m))
        self._last_i = _NAN_F
        self._rep_i = 0
        self._temp_tick = -1     # -1: read every temperature sensor at the first sample
        # the C cell loop when the firmware has it (tests set None for the Python one)
        self.native = _native_cells

    def read(self, now_ms):
        """Acquire everything, validate, stamp with now_ms; returns the Sample."""
        s = self.sample
        self._cells(s)
        self._current(s)
        # a tick on which no temperature sensor is due (see Board.temp_every_n) costs no
        # call: each call of a function this size allocates its frame on the heap
        t = self._temp_tick
        if t < s.n_temps:
            self._temps(s)
        else:
            self._temp_tick = t + 1 if t + 1 < self.board.temp_every_n else 0
        if s.t_ms is None and self.board.tap_ready is not None \
                and not self.board.tap_ready():
            s.seq += 1
            return s   # the first taps still converting: no data yet (t_ms None)
        s.t_ms = now_ms
        s.seq += 1
        return s

    def _current(self, s):
        cfg = self.cfg
        try:
            i = self.board.current.read_current_a()
        except OSError:
            s.current_a = _NAN_F
            s.current_st = MISSING
            self._rep_i = 0
            return
        st = OK
        if i != i:
            st = NAN
        elif i > cfg["current_max_a"] or i < -cfg["current_max_a"]:
            st = RANGE
        elif i == self._last_i:
            if self._rep_i < _REP_MAX:
                self._rep_i += 1
        else:
            self._rep_i = 0
        self._last_i = i
        n_stuck = cfg["stuck_n"]
        if st == OK and n_stuck and self._rep_i >= n_stuck and abs(i) >= cfg["stuck_flow_a"]:
            # a flowing current always shows noise; cells moving confirms current flows
            if _stuck(self._rep_v, s.cell_st, -1, n_stuck):
                st = STUCK
        s.current_a = i
        s.current_st = st

    def _cells(self, s):
        cfg = self.cfg
        board = self.board
        taps, tv, ts = board.taps, self._tap_v, self._tap_st
        n = len(taps)
        if board.tap_scan is not None:
            board.tap_scan()
        if board.tap_read is not None:
            board.tap_read(tv, ts)
        else:
            for k in range(n):
                try:
                    v = taps[k].read_v()
                    ts[k] = OK if v == v else NAN
                except OSError:
                    v = _NAN_F
                    ts[k] = MISSING
                tv[k] = v
        if self.native is not None:
            self.native(tv, ts, s.cell_v, s.cell_st, self._last_v, self._rep_v,
                        self._odd_v, board.stacked, cfg["cell_open_v"], cfg["cell_max_v"],
                        cfg["implausible_hold_n"])
            if cfg["stuck_n"] and max(self._rep_v) >= cfg["stuck_n"]:
                self._stuck_cells(s)
            return
        if board.tap_read is not None:
            for k in range(n):
                if ts[k] == OK:
                    v = tv[k]
                    if v != v:
                        ts[k] = NAN
        stacked = board.stacked
        cv, cst, last, rep = s.cell_v, s.cell_st, self._last_v, self._rep_v
        lo, hi = cfg["cell_open_v"], cfg["cell_max_v"]
        odd, hold = self._odd_v, cfg["implausible_hold_n"]
        below = 0.0       # the tap below cell k (stacked), and its status
        below_st = OK
        for k in range(n):
            st = ts[k]
            t = tv[k]
            if stacked:
                if k:
                    cv[k] = t - below
                    if below_st:
                        st = below_st if not st else st
                else:
                    cv[k] = t
                below = t
                below_st = ts[k]
            else:
                cv[k] = t
            v = cv[k]
            if st == OK:
                if v < lo:
                    st = OPEN
                elif v > hi:
                    st = RANGE
                if st and last[k] and odd[k] < hold:
                    # A pipelined scan reads a cell's two taps up to 30 ms apart: across a
                    # load step the difference can look open or out of range for up to a
                    # sweep. The last good value stands until it lasts longer than that.
                    odd[k] += 1
                    cv[k] = last[k]
                    cst[k] = OK
                    continue
            odd[k] = 0
            if st == OK:
                if v == last[k]:
                    if rep[k] < _REP_MAX:
                        rep[k] += 1
                else:
                    rep[k] = 0
                last[k] = v
            else:
                rep[k] = 0
            cst[k] = st
        if cfg["stuck_n"] and max(rep) >= cfg["stuck_n"]:
            self._stuck_cells(s)

    def _stuck_cells(self, s):
        # called only when a cell repeated stuck_n samples (_cells checks, saving a call)
        n_stuck = self.cfg["stuck_n"]
        rep, cst = self._rep_v, s.cell_st
        for k in range(len(rep)):
            if cst[k] == OK and rep[k] >= n_stuck and _stuck(rep, cst, k, n_stuck):
                cst[k] = STUCK

    def _temps(self, s):
        cfg = self.cfg
        temps, tc, tst, last, rep = self.board.temps, s.temp_c, s.temp_st, self._last_t, \
            self._rep_t
        lo, hi = cfg["temp_min_c"], cfg["temp_max_c"]
        every = self.board.temp_every_n
        tick = self._temp_tick
        self._temp_tick = tick + 1 if tick + 1 < every else 0
        read = 0
        for k in range(len(temps)):
            if tick >= 0 and every > 1 and k % every != tick:
                continue
            read += 1
            dev = temps[k]
            try:
                t = dev.read_c()
            except OSError:
                t = _NAN_F
                tst[k] = MISSING
                tc[k] = t
                rep[k] = 0
                continue
            fault = getattr(dev, "fault", 0)
            if fault:
                st = OPEN if fault == 1 else SHORT
            elif t != t:
                st = NAN
            elif t < lo or t > hi:
                st = RANGE
            else:
                st = OK
            tc[k] = t
            if st == OK:
                t = tc[k]
                if t == last[k]:
                    # counted in fast ticks: stuck_n means the same time at any every_n
                    if rep[k] < _REP_MAX:
                        rep[k] = rep[k] + every if rep[k] + every < _REP_MAX else _REP_MAX
                else:
                    rep[k] = 0
                last[k] = t
            else:
                rep[k] = 0
            tst[k] = st
        if not read:
            return
        m = len(temps)
        ref = self._ref_t
        for k in range(m):
            if rep[k] == 0:
                for j in range(m):
                    ref[k * m + j] = tc[j]
        n_stuck = self.cfg["stuck_n"]
        if n_stuck:
            move = self.cfg["stuck_move_c"]
            for k in range(m):
                if tst[k] == OK and rep[k] >= n_stuck and self._temp_stuck(k, move):
                    tst[k] = STUCK

    def _temp_stuck(self, k, move):
        """Most other valid sensors moved by `move` degC while sensor k read the same."""
        s, m, ref = self.sample, self.sample.n_temps, self._ref_t
        others = 0
        moving = 0
        for j in range(m):
            if j != k and s.temp_st[j] == OK:
                others += 1
                d = s.temp_c[j] - ref[k * m + j]
                if d >= move or -d >= move:
                    moving += 1
        return others > 0 and 2 * moving > others
