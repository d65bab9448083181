# Acquisition and validation on a simulated board (INA226 + ADS1115 taps + NTCs).
from bms import sensors
from drivers import ads1115, ina226, ntc
from sim import sim_i2c


class _Rig:
    """4 stacked cell taps on one ADS1115, an INA226 with a 2 mOhm shunt, 2 NTCs."""

    def __init__(self, n=4, t_c=25.0, config=None, n_ntc=2):
        self.bus = sim_i2c.SimI2C()
        self.ina = self.bus.add(sim_i2c.SimINA226(0x40, 0.002))
        self.ads = self.bus.add(sim_i2c.SimADS1115(0x48))
        self.ratios = [(k + 1) * 4.5 / 4.0 for k in range(n)]
        adc = ads1115.ADS1115(self.bus, 0x48)
        taps = [ads1115.Tap(adc, k, self.ratios[k]) for k in range(n)]
        self.t_c = [t_c] * n_ntc
        self.ntcs = [ntc.Ntc(self._reader(j), ntc.Beta()) for j in range(n_ntc)]
        self.board = sensors.Board(ina226.INA226(self.bus, 0x40, 0.002), taps, self.ntcs)
        self.sensors = sensors.Sensors(self.board, config)
        self.set_cells([3.7] * n)

    def _reader(self, j):
        def read():
            return int(self.ntcs[j].ratio_for(self.t_c[j]) * 65535 + 0.5)
        return read

    def set_cells(self, volts):
        tap = 0.0
        for k in range(len(volts)):
            tap += volts[k]
            self.ads.set_input_v(k, tap / self.ratios[k])

    def set_tap_pin_v(self, k, v):
        self.ads.set_input_v(k, v)


class _Seq:
    """A tap or current source that plays back values."""

    def __init__(self, values):
        self.values = values
        self.k = 0

    def next(self):
        v = self.values[self.k % len(self.values)]
        self.k += 1
        return v

    def read_v(self):
        return self.next()

    def read_current_a(self):
        return self.next()

    def read_c(self):
        return self.next()


def test_reads_cells_current_and_temperatures():
    r = _Rig()
    r.set_cells([3.60, 3.70, 3.65, 3.62])
    r.ina.set_current_a(2.0)
    r.t_c = [20.0, 31.0]
    s = r.sensors.read(1234)
    assert s.t_ms == 1234 and s.seq == 1 and s.all_ok()
    for k, v in enumerate([3.60, 3.70, 3.65, 3.62]):
        assert abs(s.cell_v[k] - v) < 0.003, (k, s.cell_v[k])
    assert abs(s.current_a - 2.0) <= 0.00125
    assert abs(s.temp_c[0] - 20.0) < 0.1 and abs(s.temp_c[1] - 31.0) < 0.1


def test_fewer_temperature_sensors_than_cells():
    r = _Rig(n=4, n_ntc=2)
    r.t_c = [10.0, 40.0]
    s = r.sensors.read(0)
    assert list(s.cell_temp) == [0, 0, 1, 1]
    assert abs(s.cell_temp_c(0) - 10.0) < 0.1 and abs(s.cell_temp_c(3) - 40.0) < 0.1


def test_unplugged_current_sensor_is_marked_missing():
    r = _Rig()
    r.sensors.read(0)
    r.bus.unplug(0x40)
    s = r.sensors.read(10)
    assert s.current_st == sensors.MISSING and s.current_a != s.current_a
    assert list(s.cell_st) == [0, 0, 0, 0]
    assert not s.all_ok()


def test_unplugged_tap_adc_marks_every_cell_missing():
    r = _Rig()
    r.bus.unplug(0x48)
    s = r.sensors.read(0)
    assert list(s.cell_st) == [sensors.MISSING] * 4
    assert s.current_st == sensors.OK


def test_open_tap_flags_both_neighbours():
    r = _Rig()
    r.set_tap_pin_v(1, 0.0)    # the tap wire between cells 1 and 2 came off
    s = r.sensors.read(0)
    assert s.cell_st[0] == sensors.OK
    assert s.cell_st[1] == sensors.OPEN
    assert s.cell_st[2] == sensors.RANGE


def test_nan_and_out_of_range_values():
    nan = float("nan")
    b = sensors.Board(_Seq([nan]), [_Seq([3.7]), _Seq([nan]), _Seq([7.0])], [_Seq([200.0])],
                      stacked=False)
    s = sensors.Sensors(b).read(5)
    assert s.current_st == sensors.NAN
    assert list(s.cell_st) == [sensors.OK, sensors.NAN, sensors.RANGE]
    assert s.temp_st[0] == sensors.RANGE


def test_stuck_cell_while_others_move():
    moving = [3.70, 3.71, 3.72, 3.71]
    b = sensors.Board(_Seq([0.0]), [_Seq(moving), _Seq([3.65]), _Seq(moving[1:] + [3.7])],
                      [_Seq([25.0, 25.1])], stacked=False)
    sen = sensors.Sensors(b, {"stuck_n": 5})
    for t in range(5):
        s = sen.read(t * 10)
        assert s.cell_st[1] == sensors.OK, t
    s = sen.read(50)
    assert s.cell_st[1] == sensors.STUCK
    assert s.cell_st[0] == sensors.OK and s.cell_st[2] == sensors.OK


def test_no_stuck_when_everything_rests():
    b = sensors.Board(_Seq([0.0]), [_Seq([3.7]), _Seq([3.65])], [_Seq([25.0]), _Seq([25.0])],
                      stacked=False)
    sen = sensors.Sensors(b, {"stuck_n": 5})
    for t in range(20):
        s = sen.read(t * 10)
    assert s.all_ok()


def test_stuck_current_while_flowing():
    b = sensors.Board(_Seq([3.0]), [_Seq([3.70, 3.69]), _Seq([3.60, 3.61])],
                      [_Seq([25.0])], stacked=False)
    sen = sensors.Sensors(b, {"stuck_n": 5})
    for t in range(6):
        s = sen.read(t * 10)
    assert s.current_st == sensors.STUCK
    # a steady zero at rest is plausible and never "stuck"
    b2 = sensors.Board(_Seq([0.0]), [_Seq([3.70, 3.69]), _Seq([3.60, 3.61])],
                       [_Seq([25.0])], stacked=False)
    sen2 = sensors.Sensors(b2, {"stuck_n": 5})
    for t in range(20):
        s2 = sen2.read(t * 10)
    assert s2.current_st == sensors.OK


def test_stuck_temperature_while_another_heats():
    heating = [25.0 + 0.3 * k for k in range(40)]
    b = sensors.Board(_Seq([0.0]), [_Seq([3.70, 3.69])], [_Seq([25.0]), _Seq(heating)],
                      stacked=False)
    sen = sensors.Sensors(b, {"stuck_n": 5})
    st = []
    for t in range(10):
        st.append(sen.read(t * 10).temp_st[0])
    assert st[0] == sensors.OK and st[-1] == sensors.STUCK, st
    assert sen.sample.temp_st[1] == sensors.OK


def test_a_one_lsb_step_beside_a_steady_sensor_is_not_stuck():
    # 16 cells at rest tripped TEMP_STUCK: one NTC stepped by one LSB as its cells
    # settled, and the other, steady one was called stuck
    b = sensors.Board(_Seq([0.0]), [_Seq([3.70, 3.69])],
                      [_Seq([25.0007] + [25.0014] * 99), _Seq([24.9993])], stacked=False)
    sen = sensors.Sensors(b, {"stuck_n": 5})
    for t in range(60):
        s = sen.read(t * 10)
        assert s.temp_st[0] == sensors.OK and s.temp_st[1] == sensors.OK, t


def test_open_thermistor_is_marked_open():
    r = _Rig()
    r.ntcs[1].read_u16 = lambda: 65535
    s = r.sensors.read(0)
    assert s.temp_st[0] == sensors.OK and s.temp_st[1] == sensors.OPEN


def test_board_and_config_errors_are_one_sentence():
    taps = [_Seq([3.7])] * 17
    for args in ((_Seq([0.0]), taps, [_Seq([25.0])]), (_Seq([0.0]), taps[:2], []),
                 (_Seq([0.0]), taps[:2], [_Seq([25.0])], [0, 3])):
        try:
            sensors.Board(*args)
            msg = ""
        except ValueError as e:
            msg = str(e)
        assert msg.startswith("board: ")
    b = sensors.Board(_Seq([0.0]), taps[:2], [_Seq([25.0])])
    try:
        sensors.Sensors(b, {"stuck_samples": 3})
        msg = ""
    except ValueError as e:
        msg = str(e)
    assert "unknown config key 'stuck_samples'" in msg


class _Taps:
    """A board's tap_read: tap voltages and statuses set by the test."""

    def __init__(self, n):
        self.v = [0.0] * n
        self.st = [0] * n

    def read_into(self, tap_v, tap_st):
        for k in range(len(self.v)):
            tap_v[k] = self.v[k]
            tap_st[k] = self.st[k]


def _pair(stacked):
    """Two sensors on twin boards: the firmware's C cell loop (when it has one) and the
    Python loop; both get the same tap readings."""
    out = []
    for native in (True, False):
        taps = _Taps(6)
        b = sensors.Board(_Seq([1.0, 1.1]), [_Seq([0.0])] * 6, [_Seq([25.0])], stacked=stacked)
        b.tap_read = taps.read_into
        s = sensors.Sensors(b, {"stuck_n": 4, "implausible_hold_n": 2})
        if not native:
            s.native = None
        out.append((s, taps))
    return out


def test_native_cell_loop_matches_the_python_one():
    # Without bms_native.cells (CPython, the PyPI unix port) both run the Python loop and
    # agree trivially; in the firmware runtimes this compares C with Python.
    nan = float("nan")
    seed = [12345]

    def rnd():
        seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return seed[0] / 2147483648.0

    for stacked in (True, False):
        pair = _pair(stacked)
        for step in range(300):
            r = rnd()
            cells = [3.0 + 1.2 * rnd() for _ in range(6)]
            if r < 0.1:
                cells[int(rnd() * 6)] = 0.1 * rnd()       # open
            elif r < 0.2:
                cells[int(rnd() * 6)] = 5.0 + rnd()       # out of range
            elif r < 0.4:
                cells = [3.7] * 6                         # steady: repeat counts grow
            taps, st = [], []
            acc = 0.0
            for k in range(6):
                acc += cells[k]
                taps.append(acc if stacked else cells[k])
                x = rnd()
                st.append(sensors.MISSING if x < 0.03 else 0)
                if 0.03 <= x < 0.06:
                    taps[k] = nan
            for s, t in pair:
                t.v = list(taps)
                t.st = list(st)
                s.read(step * 10)
            (a, _), (b, _) = pair
            sa, sb = a.sample, b.sample
            for k in range(6):
                va, vb = sa.cell_v[k], sb.cell_v[k]
                assert (va == vb) or (va != va and vb != vb), (stacked, step, k, va, vb)
                assert sa.cell_st[k] == sb.cell_st[k], (stacked, step, k, list(sa.cell_st),
                                                        list(sb.cell_st))
                assert a._rep_v[k] == b._rep_v[k] and a._odd_v[k] == b._odd_v[k]
                assert a._last_v[k] == b._last_v[k]
                assert a._tap_st[k] == b._tap_st[k]


def test_temperatures_read_every_nth_tick_staggered_and_stuck_in_the_same_time():
    reads = [0, 0]

    def reader(j, values):
        def read_c():
            reads[j] += 1
            return values[j]
        return read_c

    for every in (1, 5):
        vals = [25.0, 30.0]
        temps = [_Seq([0.0]), _Seq([0.0])]
        for j in range(2):
            temps[j].read_c = reader(j, vals)
        b = sensors.Board(_Seq([0.5, 0.6]), [_Seq([3.7])], temps)
        b.temp_every_n = every
        sen = sensors.Sensors(b, {"stuck_n": 100})
        reads[0] = reads[1] = 0
        first = sen.read(0)
        # the first sample reads every sensor: no sensor starts out MISSING
        assert list(first.temp_st) == [sensors.OK, sensors.OK], (every, list(first.temp_st))
        assert reads == [1, 1], (every, reads)
        stuck_at = None
        for t in range(1, 300):
            vals[1] = 30.0 + 0.5 * t     # sensor 1 heats, sensor 0 stays put: stuck
            st = sen.read(t * 10).temp_st
            if stuck_at is None and st[0] == sensors.STUCK:
                stuck_at = t
        # each sensor once per `every` ticks, on ticks of its own
        assert reads[0] in (1 + 299 // every, 2 + 299 // every), (every, reads)
        assert abs(reads[0] - reads[1]) <= 1, (every, reads)
        # stuck_n counts fast ticks: found after ~100 ticks, whatever `every` is
        assert stuck_at is not None and 95 <= stuck_at <= 110, (every, stuck_at)
