# The simulated board: the Pico's drivers on a simulated I2C bus, fed by a plant (one
# calibrated ECM + thermal model per cell) in virtual time, with fault injection.
import select
import sys
from array import array

from bms import calfile, model
from drivers import sim_i2c
from pico import board as pico

AMBIENT_C = 25.0


class SimPin:
    def __init__(self, value=0):
        self._v = value

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0


class SimWDT:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Trace:
    """A recorded trace, looped through by virtual time: current and ambient always;
    voltage and surface temperature too when the trace has them (playback mode)."""

    def __init__(self, path):
        # arrays, not lists: a long trace of boxed floats would not fit the heap
        self.t = array("d")
        self.i = array("f")
        self.ta = array("f")
        self.v = array("f")
        self.ts = array("f")
        with open(path) as f:
            names = [h.strip() for h in f.readline().split(",")]
            if "time_s" not in names or "current_a" not in names:
                raise ValueError("sim trace %s needs columns time_s and current_a" % path)
            kt, ki = names.index("time_s"), names.index("current_a")
            ka = names.index("ambient_c") if "ambient_c" in names else -1
            kv = names.index("voltage_v") if "voltage_v" in names else -1
            ks = names.index("temperature_c") if "temperature_c" in names else -1
            self.playback = kv >= 0 and ks >= 0
            for line in f:
                c = line.split(",")
                if len(c) < len(names):
                    continue
                self.t.append(float(c[kt]))
                self.i.append(float(c[ki]))
                self.ta.append(float(c[ka]) if ka >= 0 else AMBIENT_C)
                if self.playback:
                    self.v.append(float(c[kv]))
                    self.ts.append(float(c[ks]))
        if len(self.t) < 2:
            raise ValueError("sim trace %s has fewer than two rows" % path)
        t0 = self.t[0]
        for k in range(len(self.t)):
            self.t[k] -= t0
        self.k = 0

    def row(self, t_s):
        """Index of the row in force at t_s: the current of row k applies over
        (t_{k-1}, t_k], and the recorded voltage is the one at its end."""
        t = self.t
        if t_s >= t[-1]:
            return len(t) - 1
        k = self.k if t[self.k] <= t_s else 0
        while k + 1 < len(t) and t[k + 1] < t_s:
            k += 1
        self.k = k
        return k + 1

    def at(self, t_s):
        k = self.row(t_s)
        return self.i[k], self.ta[k]


class Plant:
    """Series cells with spread, one current, one ambient; surface temperatures read
    by the NTCs."""

    def __init__(self, cal, cells, soc=0.8, ambient_c=AMBIENT_C):
        self.cells = []
        for k in range(cells):
            # A little spread so balancing and weakest-cell logic have work to do.
            p = model.pack(cal, cal["cell"]["capacity_ah"] * (1.0 - 0.01 * (k % 3)))
            self.cells.append(model.Simulator(p, soc - 0.005 * (k % 4), ambient_c))
        self.v = [0.0] * cells
        self.ambient_c = ambient_c
        self.current_a = 0.0
        self.t_s = 0.0
        self.bleed = [False] * cells
        for k in range(cells):
            self.v[k] = self.cells[k].step(0.0, ambient_c, 1e-3)

    def advance(self, dt_s, current_a, ambient_c):
        self.current_a = current_a
        self.ambient_c = ambient_c
        for k in range(len(self.cells)):
            i = current_a + (0.05 if self.bleed[k] else 0.0)  # bleeder draws 50 mA
            self.v[k] = self.cells[k].step(i, ambient_c, dt_s)
        self.t_s += dt_s


class SimBoard:
    """Builds the Pico board on simulated parts; advance(dt) moves the plant and
    writes the physical values into the simulated devices."""

    def __init__(self, cells=1, trace=None, cal=None, soc=0.8):
        self.i2c = sim_i2c.SimI2C()
        self.ina = sim_i2c.SimINA226(0x40, 0.002)
        self.ina.noise_lsb = 1  # real converters dither; a bit-exact value reads as stuck
        self.i2c.add(self.ina)
        self.ads = []
        for k in range((cells + 3) // 4):
            a = sim_i2c.SimADS1115(0x48 + k)
            a.noise_lsb = 1
            self.i2c.add(a)
            self.ads.append(a)
        self.n_ntc = 2 if cells > 1 else 1
        self._ntc_x = [0.5] * self.n_ntc
        reads = [self._reader(k) for k in range(self.n_ntc)]
        self.board = pico.build(self.i2c, reads, lambda x, hi: SimPin(0 if hi else 1),
                                {"series_cells": cells, "n_ntc": self.n_ntc})
        self.board.name = "sim"
        self.board.wdt = SimWDT()
        self.cells = cells
        self.trace = Trace(trace) if trace else None
        self.plant = None
        self.faults = {}
        self.soc = soc
        self._stdin_poll = None
        self.set_calibration(cal)

    def interrupted(self):
        """True when Ctrl-C arrived on the console: the simulator's console is a raw pty,
        which sends the byte, not SIGINT (other bytes typed meanwhile are dropped)."""
        if self._stdin_poll is None:
            try:
                self._stdin_poll = select.poll()
                self._stdin_poll.register(sys.stdin, select.POLLIN)
            except Exception:   # no pollable console (CPython under pytest): never
                self._stdin_poll = False
        while self._stdin_poll and self._stdin_poll.poll(0):
            c = sys.stdin.read(1)
            if c in ("\x03", b"\x03"):
                return True
            if not c:
                self._stdin_poll = False   # end of input: nobody can type any more
        return False

    def _reader(self, k):
        def read():
            f = self.faults.get("temp%d" % k)
            if f == "open":
                return 65535
            return int(self._ntc_x[k] * 65535 + 0.5)
        return read

    def set_calibration(self, cal):
        """The plant is the calibrated model (a sample cell when there is none)."""
        if cal is None:
            from sim import sample_cal
            cal = sample_cal.calibration()
        self.plant = Plant(cal, self.cells, self.soc)
        self._write()

    # -- fault injection ---------------------------------------------------------
    def inject(self, kind, channel=0, value=None):
        """kind: 'unplug_current', 'plug_current', 'overvoltage' (cell channel, volts),
        'temp_open' (sensor channel), 'clear'."""
        if kind == "unplug_current":
            self.i2c.unplug(0x40)
        elif kind == "plug_current":
            self.i2c.plug(0x40)
        elif kind == "overvoltage":
            self.faults["ov%d" % channel] = 4.35 if value is None else value
        elif kind == "temp_open":
            self.faults["temp%d" % channel] = "open"
        elif kind == "clear":
            self.faults = {}
            self.i2c.plug(0x40)
        else:
            raise ValueError("sim: unknown fault %r" % (kind,))
        self._write()

    # -- plant -> devices ---------------------------------------------------------
    def advance(self, dt_s):
        tr = self.trace
        if tr is not None and tr.playback:
            # Playback: the recorded cell is the truth; FETs cannot change a recording.
            k = tr.row(self.plant.t_s + dt_s)
            p = self.plant
            p.t_s += dt_s
            p.current_a = tr.i[k]
            p.ambient_c = tr.ta[k]
            for c in range(self.cells):
                p.v[c] = tr.v[k]
                p.cells[c].ts = tr.ts[k]
            self._write()
            return
        if tr is not None:
            i, ta = tr.at(self.plant.t_s + dt_s)
        else:
            i, ta = 0.0, self.plant.ambient_c
        # The FETs are real switches here: an open one stops current in its direction.
        b = self.board
        if (i > 0.0 and not b.discharge_fet.is_on) or (i < 0.0 and not b.charge_fet.is_on):
            i = 0.0
        self.plant.advance(dt_s, i, ta)
        self._write()

    def _write(self):
        p = self.plant
        self.ina.set_current_a(p.current_a)
        b = self.board
        stack = 0.0
        for k in range(self.cells):
            v = self.faults.get("ov%d" % k, p.v[k])
            stack += v
            # through the board's own divider on tap k, as its driver will scale it back
            self.ads[k // 4].set_input_v(k % 4, stack / b.taps[k].ratio)
        self.ina.set_bus_v(stack)
        for j in range(self.n_ntc):
            # each NTC sits on the cells it serves; it reads their mean surface temperature
            ts = 0.0
            n = 0
            for k in range(self.cells):
                if b.cell_temp[k] == j:
                    ts += p.cells[k].ts
                    n += 1
            t = ts / n if n else p.ambient_c
            if t != t:
                t = p.ambient_c
            self._ntc_x[j] = b.temps[j].ratio_for(t)

    def ambient_c(self):
        return self.plant.ambient_c


def make_board(cells=1, trace=None, cal_path=None, soc=0.8):
    cal = None
    if cal_path:
        cal = calfile.load(cal_path)[0]
    return SimBoard(cells, trace, cal, soc)
