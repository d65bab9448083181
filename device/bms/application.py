# The BMS application: a 10 ms fast tick (sample, count charge, protect, drive FETs)
# and a 100 ms estimator tick (UKF per cell, RLS, SOH, SOP; round-robin when the
# cells do not all fit in one tick). Protection never waits for the estimator.
import gc
import sys

from bms.compat import ticks_diff, ticks_ms, ticks_us
from bms import backends, balancing, calfile, calstore, currentzero, estimator, faultlog, \
    model, protection, sensors, sohstore, sop

FAST_MS = 10
EST_MS = 100
# Without a fixed cells_per_tick, an estimator tick steps cells round-robin until this
# much of it is spent (at least one cell): the tick stays short on any board and backend,
# and the fast tick that waits behind it stays on time (a 16-cell Pico: 2-3 cells of ~4.5
# ms per tick, each cell stepped at least every 0.9 s, est tick 43.8 ms; at 14 ms a step
# grown by the flat-OCV noise left one cell in some ticks: 1.2-1.4 s; bench target).
EST_BUDGET_US = 16000
FAULTLOG_PATH = "faults.json"
EST_FAIL_SWITCH = 10   # estimator ticks failing in a row before the next backend takes over
UPLOAD_PATH = "cal/upload.json"
ISSUED_PATH = "cal/issued"     # issue number of the last calibration applied over MQTT
# zero_current(): both FETs held open at most this long; the reading ends it sooner (on a
# board ~12.1 s in; the simulator's 1 s steps add up to a step at each of its 3 stages)
ZERO_HOLD_MS = currentzero.SETTLE_MS + currentzero.WINDOW_MS + 5000
# Garbage collection happens at the end of an estimator tick, never in a fast tick: a
# collection costs ~12 ms on a Pico with a 16-cell app. Every gc_every-th estimator tick
# collects. gc.mem_free() walks the whole allocation table (~2 ms on a Pico), so the heap
# is measured only around a collection: before it, what the periods since the last one
# allocated (gc_need: the most per estimator period, the tick, telemetry and ten fast
# ticks; it follows a larger period at once and forgets one slowly); after it, the free
# heap. The next interval is as many periods as fit in the free heap less GC_SLACK (so the
# heap never fills up, which would collect in whatever allocates next, maybe a fast tick)
# and in GC_SPAN: MicroPython allocates a call's frame from the lowest free run that fits,
# and the further allocations have spread through the heap since the last collection, the
# longer that search. Measured on the Pico (rp2040js): a 16-cell pack allocates ~30 KB per
# period; collecting every second tick its fast tick peaked at 6.4 ms, every tick 3.3 ms.
GC_NEED_START = 49152    # a cell started from its OCV at boot allocates much
GC_SLACK = 8192
GC_SPAN = 16384
GC_EVERY_MAX = 50
GC_MEASURE = 4
_mem_free = getattr(gc, "mem_free", None)   # MicroPython only (CPython collects itself)
# After a collection, the heap's recent part is a sieve: the boxed floats that live on
# (attributes updated every tick) sit between one-block holes. MicroPython looks for a
# run of free blocks from its lowest free block, and on ports without a Python stack
# (rp2, esp32) every call of a function with more than a few locals allocates its frame
# that way: each such call then scanned across the sieve, and the fast tick after a
# collection took 8-9 ms instead of 4.5 on a Pico. Right after the collection, floats
# that are dropped at once fill the one-block holes, up to where allocations come out
# contiguous (PLUG_RUN runs of 16 in a row), so the allocator starts at free space again
# (the fillers are garbage for the next collection). At most PLUG_MAX of them.
PLUG_RUN = 2
PLUG_MAX = 3000
_BLOCK = 16 if sys.maxsize < (1 << 32) else 32   # bytes per heap block (4 words)


def _plug_holes():
    """Fill the heap's one-block holes with short-lived floats (see PLUG_RUN); returns how
    many it took. MicroPython only: id() is the object's address there. id() costs as
    much as a few floats, so it checks once per 16: 16 floats made since the last check
    lie exactly 16 blocks on when they went into free space in a row."""
    n = 0
    run = 0
    x = 0.5
    last = id(x * 1.5)
    while run < PLUG_RUN and n < PLUG_MAX:
        for _ in range(15):
            x * 1.5
        a = id(x * 1.5)
        run = run + 1 if a - last == 16 * _BLOCK else 0
        last = a
        n += 16
    return n


class LoopStats:
    """Duration of one kind of tick: last, max, mean (us) and overruns of its period."""

    def __init__(self, period_ms):
        self.period_us = period_ms * 1000
        self.last_us = 0
        self.max_us = 0
        self.total_us = 0
        self.count = 0
        self.overruns = 0

    def add(self, us):
        self.last_us = us
        if us > self.max_us:
            self.max_us = us
        self.total_us += us
        self.count += 1
        if us > self.period_us:
            self.overruns += 1

    def as_dict(self):
        return {"last_us": self.last_us, "max_us": self.max_us, "overruns": self.overruns,
                "mean_us": self.total_us // self.count if self.count else 0}


class App:
    def __init__(self, board, default_calibration=None, backend=None, cells_per_tick=None,
                 device_id="bms", cal=None, faultlog_path=FAULTLOG_PATH):
        # `board`: the sensors.Board a board module's make_board() builds. cal: a
        # calibration (dict, validated) to run on from memory instead of the store on
        # flash (a board without a writable filesystem, a test).
        self.hw = hw = board
        self.n = hw.n_cells
        self.device_id = device_id
        self.log = faultlog.FaultLog(faultlog_path)
        self.sensors = sensors.Sensors(hw)
        self.balancer = balancing.Balancer(self.n)
        self.backend_name = backend
        self.store = calstore.CalStore(self.n)
        self.backend_note = None   # why a faster filter backend was passed over
        self.est_errors = 0        # estimator ticks that raised (protection ran on)
        self.est_error = None      # the last such error, one line
        self._est_fail_run = 0
        if cal is not None:
            self.store.use(cal)
        elif not self.store.load() and default_calibration:
            try:
                with open(default_calibration) as f:
                    self.store.install_text(f.read())
                self.store.note = "first boot: installed %s" % default_calibration
            except (OSError, calfile.CalibrationError) as e:
                self.store.note = "default calibration refused: %s" % e
        self.protection = None
        self.cells = []
        # state of health on flash (a board without a fault log file has no flash to use)
        self.soh_store = sohstore.SohStore(sohstore.PATH if faultlog_path else None)
        self._apply_calibration()
        self.cells_per_tick = cells_per_tick   # None: as many as EST_BUDGET_US allows
        self.cell_us = 0                       # the last cell step's duration
        self._rr = 0
        self._sop_rr = 0
        # Charge counted as an integer: mA*s plus a uA*s remainder (small ints only).
        self.charge_mas = 0
        self._rem_uas = 0
        self.zero = currentzero.CurrentZero()   # the current sensor's offset, FETs open
        self.zero_since = None     # a maker's zero_current(): both FETs held open since (ms)
        self.fet_chg = False       # the FETs as driven: protection's, less a zero's hold
        self.fet_dsg = False
        self._cell_mas = [0] * self.n      # counter value at each cell's last update
        self._cell_ms = [None] * self.n    # time of each cell's last update
        self.now_ms = 0
        self._last_fast = None
        self._last_est = None
        self.fast_stats = LoopStats(FAST_MS)
        self.est_stats = LoopStats(EST_MS)
        self.checkins = {"fast": False, "estimator": False}
        self.wdt = getattr(hw, "wdt", None)
        self.tel = None
        self.gc_need = GC_NEED_START   # bytes one estimator period allocates, at most
        self.gc_every = 1              # estimator ticks from one collection to the next
        self._gc_ticks = 0
        self.gc_runs = 0               # collections made by _gc_step
        self.plugged = 0               # heap holes filled after the last one
        self._gc_free = None
        if _mem_free is not None:
            # Setting up (the calibration, the cells) leaves the heap in holes: the first
            # fast ticks took 5-8 ms on a Pico before the first collection (see PLUG_RUN).
            gc.collect()
            self.plugged = _plug_holes()

    # -- calibration ------------------------------------------------------------
    def _apply_calibration(self):
        cal = self.store.cal
        chem = cal["cell"]["chemistry"] if cal else "nmc"
        old_p, old_cells = self.protection, self.cells
        self.protection = protection.Protection(protection.build_config(cal, None, chem),
                                                self.log)
        if old_p is not None:
            self.protection.inherit_latches(old_p)
        self.cells = []
        if cal is not None:
            b, self.backend_note = backends.choose(self.backend_name, cal)
            p = b.alloc(model.pack(cal))      # one copy of the tables for the whole pack
            self.cells = [estimator.CellEstimator(cal, b, params=p) for _ in range(self.n)]
            self._cell_ms = [None] * self.n
            # A new calibration changes the model, not the charge in the cells: keep
            # each cell's SOC (with a sigma no smaller than 3 %) and core temperature.
            for k in range(min(len(old_cells), self.n)):
                o = old_cells[k]
                if o.ready:
                    self.cells[k].init(o.soc(), o.temp_core_c(), max(o.soc_sigma(), 0.03),
                                       False)
                if o.nominal_ah == self.cells[k].nominal_ah:
                    self.cells[k].cap = o.cap     # what the cell taught stays
            if not old_cells:
                self.soh_store.restore(self.cells, self.store.checksum)

    def start_telemetry(self, period_s=5, mqtt=None, serial=False, key=None):
        """Records every period_s: JSON lines on the console and/or MQTT. A calibration
        pushed over MQTT is applied only with a valid HMAC made with `key`."""
        from bms import telemetry

        self.tel = telemetry.Telemetry(self.device_id, period_s, mqtt, serial, key=key,
                                       on_calibration=self._calibration_from_telemetry,
                                       issued_path=ISSUED_PATH)
        return self.tel

    def _calibration_from_telemetry(self, text):
        try:
            self.store.install_text(text)
        except (calfile.CalibrationError, OSError) as e:
            return False, str(e)
        self._apply_calibration()
        self.log.append("CAL_NEW", self.now_ms, 1)
        return True, "calibration %s active" % self.store.checksum[:16]

    def install_calibration(self, path=UPLOAD_PATH):
        """Hot-reload: validate and store an uploaded calibration, then use it.
        Returns the new checksum; raises CalibrationError and keeps the old one."""
        checksum = self.store.install_file(path)
        self._apply_calibration()
        self.log.append("CAL_NEW", self.now_ms, 0)
        return checksum

    # -- ticks -------------------------------------------------------------------
    def _count_charge(self, i_a, dt_ms):
        uas = int(i_a * dt_ms * 1000.0) + self._rem_uas
        q = uas // 1000
        self.charge_mas += q
        self._rem_uas = uas - q * 1000

    def fast_tick(self, now_ms):
        t0 = ticks_us()
        s = self.sensors.read(now_ms)
        if self._last_fast is not None and s.current_st == sensors.OK:
            self._count_charge(s.current_a, ticks_diff(now_ms, self._last_fast))
        self._last_fast = now_ms
        p = self.protection
        p.update(s, now_ms)
        hw = self.hw
        chg, dsg = p.charge_fet_on, p.discharge_fet_on
        if self.zero_since is not None:
            # a zero_current() request only ever opens: protection still decides closing
            if ticks_diff(now_ms, self.zero_since) < ZERO_HOLD_MS:
                chg = dsg = False
            else:
                self.zero_since = None
        self.fet_chg, self.fet_dsg = chg, dsg
        # a FET driver (drivers.fet.Fet) knows its state: no call when nothing changes
        f = hw.charge_fet
        if f is not None and getattr(f, "is_on", None) != chg:
            f.set(chg)
        f = hw.discharge_fet
        if f is not None and getattr(f, "is_on", None) != dsg:
            f.set(dsg)
        self.checkins["fast"] = True
        self.fast_stats.add(ticks_diff(ticks_us(), t0))

    def estimator_tick(self, now_ms):
        t0 = ticks_us()
        s = self.sensors.sample
        self._current_zero(s, now_ms)
        if s.t_ms is not None and s.current_st == sensors.OK and self.cells:
            # The estimator is advisory: whatever it raises is counted and logged, and
            # the fast tick (protection, FETs) and the watchdog go on regardless.
            try:
                self._estimate(s, now_ms)
                self._est_fail_run = 0
            except Exception as e:
                self._estimator_failed(e)
        soc = [c.soc() for c in self.cells] if self.cells else None
        mask = self.balancer.update(s.cell_v, s.current_a if s.current_a == s.current_a
                                    else 0.0, bool(self.protection.active), soc, s.cell_st)
        if self.hw.bleeders is not None:
            self.hw.bleeders.set_mask(mask)
        if self.log.dirty and self.log.path:
            self.log.save()
            self.log.dirty = False
        self.soh_store.tick(self.cells, EST_MS / 1000.0, self.store.checksum)
        self._gc_step()
        self.checkins["estimator"] = True
        self.est_stats.add(ticks_diff(ticks_us(), t0))

    def _current_zero(self, s, now_ms):
        """With both FETs open (on a board that has both) no current flows: the sensor's
        reading is its offset (currentzero.py), given to every cell's filter. A sample
        without a valid current ends the window: the charge counter skipped it."""
        hw = self.hw
        shut = (s.t_ms is not None and s.current_st == sensors.OK
                and hw.charge_fet is not None and hw.discharge_fet is not None
                and not self.fet_chg and not self.fet_dsg)
        z = self.zero.update(shut, self.charge_mas, now_ms)
        if z is not None:
            self.zero_since = None    # a maker's request is done: the FETs may close
            for c in self.cells:
                c.current_zero(z, currentzero.SIGMA_MA)

    def zero_current(self):
        """Open both FETs for one reading of the current sensor's zero (currentzero.py):
        the load and the charger are cut for about 12 s, then protection drives the FETs
        again. Returns one sentence: what happens, or why it cannot."""
        hw = self.hw
        if hw.charge_fet is None or hw.discharge_fet is None:
            return ("this board cannot open both a charge and a discharge FET, so current "
                    "may flow: no zero to read")
        st = self.sensors.sample.current_st
        if st != sensors.OK:
            return "the current sensor reads %s: no zero to read" % sensors.STATUS[st]
        self.zero.update(False, self.charge_mas, self.now_ms)   # a new opening from now
        self.zero_since = self.now_ms
        return ("both FETs open for about %d s (load and charger cut) to read the current "
                "sensor's zero; bms.status() shows it when done"
                % ((currentzero.SETTLE_MS + currentzero.WINDOW_MS) // 1000))

    def _gc_step(self):
        """Collect every gc_every-th estimator tick (see GC_SPAN); set the next interval."""
        if _mem_free is None:
            return
        self._gc_ticks += 1
        if self._gc_ticks < self.gc_every:
            return
        need = self.gc_need
        # the allocation before the collection: measured every GC_MEASURE-th collection
        # at most when collecting every tick (it changes slowly; the call costs ~2 ms)
        free = _mem_free() if self.gc_every > 1 or self.gc_runs % GC_MEASURE == 0 else None
        last = self._gc_free
        if last is not None and free is not None and free < last:
            # allocated per period since the last collection (nothing freed in between)
            used = (last - free) // self._gc_ticks
            need = used if used > need else need - (need >> 6)
            if need < 1024:
                need = 1024
            self.gc_need = need
        gc.collect()
        self.plugged = _plug_holes()
        self.gc_runs += 1
        free = _mem_free()
        room = free - GC_SLACK
        k = (room if room < GC_SPAN else GC_SPAN) // need
        self.gc_every = 1 if k < 1 else (GC_EVERY_MAX if k > GC_EVERY_MAX else k)
        self._gc_ticks = 0
        self._gc_free = free

    def _estimate(self, s, now_ms):
        ta = self.ambient_c(s)
        t0 = ticks_us()
        fixed = self.cells_per_tick
        for j in range(min(fixed, self.n) if fixed else self.n):
            if not fixed and j and ticks_diff(ticks_us(), t0) + self.cell_us > EST_BUDGET_US:
                break
            k = self._rr
            self._rr = (self._rr + 1) % self.n
            t1 = ticks_us()
            self._estimate_cell(k, s, now_ms, ta)
            self.cell_us = ticks_diff(ticks_us(), t1)
        # SOP costs several model evaluations: one cell per tick keeps the tick short
        # (16 cells: each cell's limits are at most 1.6 s old).
        self.cells[self._sop_rr].update_sop(ta)
        self._sop_rr = (self._sop_rr + 1) % self.n

    def _estimator_failed(self, e):
        self.est_errors += 1
        self._est_fail_run += 1
        self.est_error = "%s: %s" % (type(e).__name__, e)
        # Logged the first time and then every 100th, so a persistent error cannot push
        # the protection's faults out of the ring.
        if self.est_errors % 100 == 1:
            self.log.append("EST_ERROR", self.now_ms, self.est_errors)
        if self._est_fail_run >= EST_FAIL_SWITCH:
            # The backend keeps failing: the next slower one takes over, each cell
            # keeping its SOC.
            failed = self.cells[0].backend.name
            self._est_fail_run = 0
            b, note = backends.choose(None, self.store.cal, after=failed)
            self.backend_name = b.name
            self._apply_calibration()
            self.backend_note = "%s failed in service (%s)%s" % (
                failed, self.est_error, "; " + note if note else "")
            self.log.append("EST_BACKEND", self.now_ms, backends.NAMES.index(b.name))

    def _estimate_cell(self, k, s, now_ms, ta):
        c = self.cells[k]
        last = self._cell_ms[k]
        v = s.cell_v[k] if s.cell_st[k] == sensors.OK else float("nan")
        t = s.cell_temp_c(k) if s.temp_st[s.cell_temp[k]] == sensors.OK else float("nan")
        if last is None:
            self._cell_ms[k] = now_ms
            self._cell_mas[k] = self.charge_mas
            c.step(s.current_a, v, t, ta, 0.0)   # boot: SOC from OCV
            return
        dt_ms = ticks_diff(now_ms, last)
        if dt_ms <= 0:
            return
        # Mean current since this cell's last update, from the integer counter.
        i_avg = (self.charge_mas - self._cell_mas[k]) / dt_ms
        self._cell_ms[k] = now_ms
        self._cell_mas[k] = self.charge_mas
        # the filter counts the mean current; the R0 learner pairs the voltage with the
        # current read in the same fast tick (estimator.CellEstimator.step)
        c.step(i_avg, v, t, ta, dt_ms / 1000.0, s.current_a)

    def ambient_c(self, s):
        """The board's ambient sensor (an ambient_c() it gives), else the coolest of
        the temperature sensors."""
        amb = getattr(self.hw, "ambient_c", None)
        if amb is not None:
            return amb()
        t = s.temp_c[0]
        for k in range(s.n_temps):
            if s.temp_c[k] < t:
                t = s.temp_c[k]
        return t

    def service(self, now_ms):
        """Run whatever ticks are due at now_ms; feed the watchdog only when every task
        has checked in since the last feed."""
        if self._last_fast is None or ticks_diff(now_ms, self._last_fast) >= FAST_MS:
            self.fast_tick(now_ms)
        if self._last_est is None or ticks_diff(now_ms, self._last_est) >= EST_MS:
            self._last_est = now_ms
            self.estimator_tick(now_ms)
            if self.tel is not None:
                self.tel.tick(now_ms, self._quiet_status)
        if self.checkins["fast"] and self.checkins["estimator"]:
            if self.wdt is not None:
                self.wdt.feed()
            self.checkins["fast"] = False
            self.checkins["estimator"] = False
        self.now_ms = now_ms

    def run_forever(self):  # pragma: no cover - the board's main loop
        while True:
            self.service(ticks_ms())

    # -- the maker's view ----------------------------------------------------------
    def pack_soc(self):
        """The weakest cell decides: min SOC on discharge (the pack is empty when its
        emptiest cell is)."""
        if not self.cells:
            return None
        return min(c.soc() for c in self.cells)

    def status(self, show=True):
        s = self.sensors.sample
        p = self.protection
        cells = self.cells
        d = {
            "device_id": self.device_id,
            "t_ms": self.now_ms,
            "cells": self.n,
            "v": [s.cell_v[k] for k in range(self.n)],
            "temp_c": [s.temp_c[k] for k in range(s.n_temps)],
            "cell_temp_c": [s.cell_temp_c(k) for k in range(self.n)],
            "i_a": s.current_a,
            "soc": [c.soc() for c in cells],
            "soc_sigma": [c.soc_sigma() for c in cells],
            "soc_pack": self.pack_soc(),
            "temp_core_c": [c.temp_core_c() for c in cells],
            "r0_ohm": [c.r0_ohm() for c in cells],
            "r0_growth": [c.r0_growth() for c in cells],
            "capacity_ah": [c.capacity_ah() for c in cells],
            "soh": min(c.soh() for c in cells) if cells else None,
            "soh_sigma": max(c.cap.soh_sigma() for c in cells) if cells else None,
            "capacity_sigma_ah": [c.cap.sigma_ah for c in cells],
            "r0_growth_sigma": [c.cap.r_sigma(c) for c in cells],
            "sop_dis_a": [min(c.i_dis[h] for c in cells) for h in range(len(sop.HORIZONS_S))]
            if cells else [],
            "sop_chg_a": [min(c.i_chg[h] for c in cells) for h in range(len(sop.HORIZONS_S))]
            if cells else [],
            "fet_chg": self.fet_chg,
            "fet_dsg": self.fet_dsg,
            "zeroing": self.zero_since is not None,
            "faults": sorted(p.active),
            "charge_mas": self.charge_mas,
            # the current sensor's offset as read with both FETs open (None: not yet),
            # and as each cell's filter holds it
            "i_zero_ma": self.zero.last_ma,
            "i_bias_ma": [c.bias_a() * 1000.0 for c in cells],
            "loop_fast": self.fast_stats.as_dict(),
            "loop_est": self.est_stats.as_dict(),
            "backend": cells[0].backend.name if cells else "none",
            "backend_note": self.backend_note,
            "est_errors": self.est_errors,
            "est_error": self.est_error,
            "cal_checksum": self.store.checksum,
            # where each cell's SOC started at boot ("flash": the saved one, "ocv"), and
            # why the flash file was passed over, if it was
            "soc_boot": [c.boot_from for c in cells],
            "soh_note": self.soh_store.note,
        }
        if show:
            _print_status(d)
        return d

    def save_state(self):
        """Write each cell's SOC (and the SOH as last saved) to flash now, e.g. before a
        planned power-off; False on a board without flash for it."""
        st = self.soh_store
        if st.path is None or not self.cells:
            return False
        st.save_soc(self.cells, self.store.checksum)
        return True

    def _quiet_status(self):
        return self.status(False)

    def faults(self):
        ev = self.log.events()
        for code, b, t, v in ev:
            print("boot %-4d %10.2f s  %-14s %s" % (b, t / 1000.0, code, v))
        return ev

    def cal_info(self):
        st = self.store
        cal = st.cal or {}
        info = {"checksum": st.checksum, "source": st.source, "note": st.note,
                "cell": cal.get("cell", {}).get("id"),
                "chemistry": cal.get("cell", {}).get("chemistry"),
                "capacity_ah": cal.get("cell", {}).get("capacity_ah"),
                "series_cells": self.n}
        return info

    def reset_faults(self):
        return self.protection.reset_faults(self.now_ms)

    def selftest(self, show=True):
        """Check every part once; returns {part: 'ok' or a sentence}, printed when show."""
        r = {}
        s = self.sensors.read(self.now_ms)
        r["current"] = "ok" if s.current_st == sensors.OK else \
            "current sensor: %s" % sensors.STATUS[s.current_st]
        bad = [k for k in range(self.n) if s.cell_st[k] != sensors.OK]
        r["cells"] = "ok" if not bad else "cell taps %s: %s" % (
            bad, [sensors.STATUS[s.cell_st[k]] for k in bad])
        bad = [k for k in range(s.n_temps) if s.temp_st[k] != sensors.OK]
        r["temperatures"] = "ok" if not bad else "temperature sensors %s faulty" % bad
        r["calibration"] = "ok" if self.store.cal else (self.store.note or "none")
        r["backend"] = self.cells[0].backend.name if self.cells else "no estimator"
        if self.backend_note:
            r["backend"] += " (passed over: %s)" % self.backend_note
        r["estimator"] = "ok" if not self.est_errors else "%d failed ticks, last: %s" % (
            self.est_errors, self.est_error)
        ok, why = backends.available("native")
        r["native"] = "ok" if ok else why
        for line in sorted(r) if show else ():
            print("%-13s %s" % (line, r[line]))
        return r


def _fmt(x, f="%.3f"):
    return "-" if x is None or x != x else f % x


def _print_status(d):
    w = sys.stdout.write
    w("BMS %s  t=%.1f s  backend=%s  cal=%s\n" % (
        d["device_id"], d["t_ms"] / 1000.0, d["backend"], (d["cal_checksum"] or "none")[:12]))
    w("cell      V       T(C)   SOC %   sigma   Tcore   R0 mOhm\n")
    for k in range(d["cells"]):
        soc = d["soc"][k] * 100 if d["soc"] else None
        sig = d["soc_sigma"][k] * 100 if d["soc_sigma"] else None
        tc = d["temp_core_c"][k] if d["temp_core_c"] else None
        r0 = d["r0_ohm"][k] * 1000 if d["r0_ohm"] else None
        t = d["cell_temp_c"][k]
        w("%4d  %7s  %7s  %6s  %6s  %6s  %7s\n" % (k, _fmt(d["v"][k]), _fmt(t, "%.1f"),
          _fmt(soc, "%.1f"), _fmt(sig, "%.2f"), _fmt(tc, "%.1f"), _fmt(r0, "%.1f")))
    w("pack: I=%s A  SOC=%s %%  SOH=%s  FET chg=%s dsg=%s\n" % (
        _fmt(d["i_a"]), _fmt(d["soc_pack"] * 100 if d["soc_pack"] is not None else None,
                             "%.1f"),
        _fmt(d["soh"]), "on" if d["fet_chg"] else "OFF", "on" if d["fet_dsg"] else "OFF"))
    if d["i_bias_ma"]:
        w("current sensor offset: %s mA learnt, %s mA read with the FETs open\n" % (
            _fmt(d["i_bias_ma"][0], "%.1f"), _fmt(d["i_zero_ma"], "%.1f")))
    if d["zeroing"]:
        w("reading the current sensor's zero: both FETs held open\n")
    if d["sop_dis_a"]:
        w("SOP 2/10/30 s: discharge %s A, charge %s A\n" % (
            "/".join(_fmt(x, "%.1f") for x in d["sop_dis_a"]),
            "/".join(_fmt(x, "%.1f") for x in d["sop_chg_a"])))
    w("faults: %s\n" % (", ".join(d["faults"]) or "none"))
    if d.get("soh_note"):
        w("flash: %s\n" % d["soh_note"])
    if d["backend_note"]:
        w("filter backend %s; passed over: %s\n" % (d["backend"], d["backend_note"]))
    if d["est_errors"]:
        w("estimator: %d failed ticks, last: %s\n" % (d["est_errors"], d["est_error"]))
    f, e = d["loop_fast"], d["loop_est"]
    w("loop: fast %d/%d us (mean/max, %d overruns), estimator %d/%d us (%d overruns)\n" % (
        f["mean_us"], f["max_us"], f["overruns"], e["mean_us"], e["max_us"], e["overruns"]))
