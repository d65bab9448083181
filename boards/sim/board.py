# The simulated board: the Pico's drivers on a simulated I2C bus, fed by a plant (one
# calibrated ECM + thermal model per cell) in virtual time, with fault injection.
# runner.py advances it and the BMS together.
from array import array

from bms import calfile, model
from pico import board as pico
from sim import sim_i2c

AMBIENT_C = 25.0

# Resistance growth that comes with a capacity fade: the LG M50 aged by `bms-host synth
# --aged-use` (loss of active material with its lithium, loss of lithium to SEI, the SEI
# film's resistance), (capacity retention, 10 s pulse resistance over the fresh cell's)
# from its levels' manifests; linear between them, the end slopes beyond.
AGE_GROWTH = ((0.803, 1.3747), (0.8724, 1.2418), (0.9525, 1.1225), (1.0, 1.0))
_R_TABLES = ("r0_ohm", "r0c_ohm", "r1_ohm", "r2_ohm", "r2c_ohm", "rh_ohm")


def growth_for(retention):
    """The resistance growth AGE_GROWTH gives a cell at this capacity retention."""
    g = AGE_GROWTH
    k = 0
    while k < len(g) - 2 and retention > g[k + 1][0]:
        k += 1
    (x0, y0), (x1, y1) = g[k], g[k + 1]
    return y0 + (y1 - y0) * (retention - x0) / (x1 - x0)


def aged(cal, retention, growth=None):
    """A copy of calibration cal for the same cell aged: its capacity times retention, its
    resistances times growth (default growth_for(retention)) and its exchange current
    over it. The OCV against SOC and the time constants stay (an approximation: the
    electrodes' loss shifts the OCV curve a little, which the recorded aged cells show)."""
    if not 0.3 <= retention <= 1.0:
        raise ValueError("sim: the age (capacity retention) must be from 0.3 to 1, got %r"
                         % (retention,))
    g = growth_for(retention) if growth is None else growth
    if not 1.0 <= g <= 5.0:
        raise ValueError("sim: the resistance growth must be from 1 to 5, got %r" % (g,))
    tab = dict(cal["tables"])
    for name in _R_TABLES:
        if name in tab:
            tab[name] = [[v * g for v in row] for row in tab[name]]
    if "i0_a" in tab:
        tab["i0_a"] = [[v / g for v in row] for row in tab["i0_a"]]
    cell = dict(cal["cell"])
    cell["capacity_ah"] = cell["capacity_ah"] * retention
    out = dict(cal)
    out["tables"] = tab
    out["cell"] = cell
    return out


class SimPin:
    """An output pin: what the drivers (drivers.fet) drive, what the plant reads."""

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

    def __init__(self, cal, cells, soc=0.8, ambient_c=AMBIENT_C, cv_v=None):
        self.cv_v = cv_v   # a CC-CV charger's voltage per cell, or None (see advance)
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

    def _step(self, dt_s, current_a, ambient_c):
        for k in range(len(self.cells)):
            i = current_a + (0.05 if self.bleed[k] else 0.0)  # bleeder draws 50 mA
            self.v[k] = self.cells[k].step(i, ambient_c, dt_s)
        return sum(self.v)

    def _state(self):
        return [(c.soc, c.v1, c.v2, c.tc, c.ts, c.shift) for c in self.cells]

    def _restore(self, st):
        for k in range(len(st)):
            c = self.cells[k]
            c.soc, c.v1, c.v2, c.tc, c.ts, c.shift = st[k]

    def advance(self, dt_s, current_a, ambient_c):
        self.ambient_c = ambient_c
        st = self._state() if self.cv_v is not None and current_a < 0.0 else None
        v = self._step(dt_s, current_a, ambient_c)
        limit = None if st is None else self.cv_v * len(self.cells)
        if limit is not None and v > limit:
            # The charger holds the pack at cv_v per cell (CC-CV): the current that puts it
            # there, from the voltages at no current and at the offered one (linear in the
            # current over a step), so the charge current tapers as the cells fill.
            self._restore(st)
            v0 = self._step(dt_s, 0.0, ambient_c)
            self._restore(st)
            f = (limit - v0) / (v - v0) if v != v0 else 0.0
            current_a *= 0.0 if f < 0.0 else f
            self._step(dt_s, current_a, ambient_c)
        self.current_a = current_a
        self.t_s += dt_s


class SimBoard:
    """Builds the Pico board on simulated parts (self.board: the hardware the BMS runs
    on); advance(dt) moves the plant and writes the physical values into the simulated
    devices."""

    def __init__(self, cells=1, trace=None, cal=None, soc=0.8, age=None, cv_v=None):
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
        # the plant's ambient, given as a board with an ambient sensor gives its reading
        # (an ambient_c() on the hardware: application.App.ambient_c)
        self.board.ambient_c = self.ambient_c
        self.cells = cells
        self.trace = Trace(trace) if trace else None
        self.plant = None
        self.faults = {}
        self.soc = soc
        self.age = age      # (capacity retention, resistance growth or None), or None
        self.cv_v = cv_v
        self.current_offset_a = 0.0   # what the current sensor reads with no current
        if age is not None and self.trace is not None and self.trace.playback:
            raise ValueError("sim: an age applies to the model plant; a trace with voltage_v "
                             "and temperature_c plays its recorded cell as it is")
        self.set_calibration(cal)

    def _reader(self, k):
        def read():
            f = self.faults.get("temp%d" % k)
            if f == "open":
                return 65535
            return int(self._ntc_x[k] * 65535 + 0.5)
        return read

    def set_calibration(self, cal):
        """The plant is the calibrated model (a sample cell when there is none), aged
        when the board was given an age."""
        if cal is None:
            from sim import sample_cal
            cal = sample_cal.calibration()
        if self.age is not None:
            cal = aged(cal, self.age[0], self.age[1])
        self.plant = Plant(cal, self.cells, self.soc, AMBIENT_C, self.cv_v)
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
        # each cell's bleeder draws while its pin is driven to the active level
        bleed = self.plant.bleed
        fets = b.bleeders.fets
        for k in range(self.cells):
            f = fets[k]
            bleed[k] = f.pin.value() == (1 if f.active_high else 0)
        self.plant.advance(dt_s, i, ta)
        self._write()

    def _write(self):
        p = self.plant
        self.ina.set_current_a(p.current_a + self.current_offset_a)
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

    # -- fast virtual time -----------------------------------------------------------
    def next_step_s(self, max_s):
        """Seconds to the end of the trace row in force (its current is constant up to
        there), at most max_s; max_s without a trace or past its end."""
        tr = self.trace
        t = self.plant.t_s
        if tr is None or t >= tr.t[-1]:
            return max_s
        dt = tr.t[tr.row(t + 1e-6)] - t
        return dt if 0.0 < dt < max_s else max_s


def parse_age(text):
    """(retention, growth or None) from "0.87" or "0.87:1.3"; None for an empty text."""
    if not text:
        return None
    parts = text.split(":")
    try:
        if len(parts) > 2:
            raise ValueError
        ret = float(parts[0])
        g = float(parts[1]) if len(parts) == 2 else None
    except ValueError:
        raise ValueError("sim: an age is a capacity retention, optionally with a resistance "
                         "growth: 0.87 or 0.87:1.3; got %r" % (text,)) from None
    aged({"tables": {}, "cell": {"capacity_ah": 1.0}}, ret, g)   # checks the ranges
    return ret, g


def make_board(cells=1, trace=None, cal_path=None, soc=0.8, age=None, cv_v=None):
    cal = None
    if cal_path:
        cal = calfile.load(cal_path)[0]
    return SimBoard(cells, trace, cal, soc, parse_age(age) if isinstance(age, str) else age,
                    cv_v)
