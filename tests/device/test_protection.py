# Protection state machines: trips after delays, latching, release with hysteresis, sensor
# faults to a safe state within one fast tick.
from bms import faultlog, protection, sensors
from drivers import ads1115, ina226, ntc
from sim import sim_i2c

TICK = 10
CAL = {"cell": {"chemistry": "nmc"},
       "limits": {"v_min": 3.0, "v_max": 4.2, "i_discharge_max_a": 20.0, "i_charge_max_a": 5.0,
                  "t_charge_min_c": 0.0, "t_charge_max_c": 45.0, "t_discharge_min_c": -20.0,
                  "t_discharge_max_c": 60.0, "t_core_max_c": 60.0}}


def _sample(n=4, v=3.7, i=0.0, t=25.0, n_t=2):
    s = sensors.Sample(n, n_t, [0] * n)
    for k in range(n):
        s.cell_v[k] = v
        s.cell_st[k] = 0
    for k in range(n_t):
        s.temp_c[k] = t
        s.temp_st[k] = 0
    s.current_a = i
    s.current_st = 0
    return s


def _prot(overrides=None):
    log = faultlog.FaultLog()
    return protection.Protection(protection.build_config(CAL, overrides), log), log


def _run(p, s, t0_ms, t1_ms):
    """Fresh sample every tick from t0 to t1 inclusive; returns t1."""
    t = t0_ms
    while t <= t1_ms:
        s.t_ms = t
        p.update(s, t)
        t += TICK
    return t1_ms


def _codes(log):
    return [e[0] for e in log.events()]


def test_fets_open_before_first_valid_sample():
    p, log = _prot()
    assert not p.charge_fet_on and not p.discharge_fet_on
    s = _sample()
    p.update(s, 0)            # t_ms is None: nothing measured yet
    assert not p.charge_fet_on and not p.discharge_fet_on and "NO_DATA" in p.active
    s.t_ms = 10
    p.update(s, 10)
    assert p.charge_fet_on and p.discharge_fet_on and not p.active


def test_over_voltage_trips_after_delay_and_latches_until_reset():
    p, log = _prot({"ov_hard_trip_ms": 500})
    s = _sample()
    _run(p, s, 0, 1000)
    s.cell_v[2] = 4.3             # beyond the chemistry's hard 4.25 V
    _run(p, s, 1010, 1500)        # 490 ms over the limit
    assert p.charge_fet_on and "OV_HARD" not in p.active
    _run(p, s, 1510, 1510)        # 500 ms: trips
    assert not p.charge_fet_on and not p.discharge_fet_on
    assert "OV_HARD" in p.active
    assert log.last() == ("OV_HARD", 1, 1510, s.cell_v[2])
    s.cell_v[2] = 3.9
    _run(p, s, 1520, 30000)       # long after the cause is gone: still latched
    assert not p.charge_fet_on and p.active == {"OV_HARD"}
    assert p.reset_faults(30000) == []
    assert p.charge_fet_on and p.discharge_fet_on
    assert _codes(log)[-1] == "RESET"


def test_reset_keeps_a_latched_fault_whose_cause_remains():
    p, log = _prot()
    s = _sample(v=4.3)
    _run(p, s, 0, 3000)
    assert "OV_HARD" in p.active and "OV" in p.active
    assert "OV_HARD" in p.reset_faults(3000)
    assert not p.charge_fet_on


def test_soft_over_temperature_releases_after_hysteresis_and_delay():
    p, log = _prot()
    s = _sample()
    _run(p, s, 0, 100)
    for k in range(2):
        s.temp_c[k] = 47.0        # above the 45 degC charge limit, below discharge 60
    _run(p, s, 110, 1100)
    assert p.charge_fet_on        # 990 ms of the 1000 ms trip delay
    _run(p, s, 1110, 1110)
    assert not p.charge_fet_on and p.discharge_fet_on and p.active == {"OT_CHG"}
    for k in range(2):
        s.temp_c[k] = 43.0        # below trip, inside the 3 degC hysteresis
    _run(p, s, 1120, 9000)
    assert not p.charge_fet_on
    for k in range(2):
        s.temp_c[k] = 40.0
    _run(p, s, 9010, 14000)       # 4990 ms of the 5000 ms release delay
    assert not p.charge_fet_on
    _run(p, s, 14010, 14010)
    assert p.charge_fet_on and not p.active
    assert _codes(log) == ["OT_CHG", "OT_CHG_CLR"]


def test_soft_over_voltage_stays_latched_until_reset():
    p, log = _prot()
    s = _sample()
    _run(p, s, 0, 100)
    s.cell_v[0] = 4.23            # above the 4.22 soft trip, below the hard 4.25
    _run(p, s, 110, 1110)
    assert not p.charge_fet_on and p.discharge_fet_on and p.active == {"OV"}
    s.cell_v[0] = 4.1             # the cell relaxes: the fault holds
    _run(p, s, 1120, 20000)
    assert not p.charge_fet_on and "OV" in p.active
    assert p.reset_faults(20000) == []
    _run(p, s, 20010, 20010)
    assert p.charge_fet_on


def test_no_charging_below_zero_but_discharging_allowed():
    p, log = _prot()
    s = _sample(t=-5.0)
    s.t_ms = 0
    p.update(s, 0)                # already cold at boot: no debounce
    assert not p.charge_fet_on and p.discharge_fet_on and "UT_CHG" in p.active
    s.temp_c[0] = s.temp_c[1] = 1.0          # inside the 2 degC hysteresis
    _run(p, s, 10, 20000)
    assert not p.charge_fet_on
    s.temp_c[0] = s.temp_c[1] = 3.0
    _run(p, s, 20010, 25000)      # 4990 ms of the 5000 ms release delay
    assert not p.charge_fet_on
    _run(p, s, 25010, 25010)
    assert p.charge_fet_on and p.discharge_fet_on
    s.temp_c[1] = -0.5            # one sensor cools below 0 degC: trips after 1 s
    _run(p, s, 25020, 26010)
    assert p.charge_fet_on
    _run(p, s, 26020, 26020)
    assert not p.charge_fet_on and p.discharge_fet_on


def test_discharge_window_and_hard_over_temperature():
    p, log = _prot()
    s = _sample(t=-25.0)
    _run(p, s, 0, 100)
    assert not p.charge_fet_on and not p.discharge_fet_on
    assert {"UT_CHG", "UT_DSG"} <= p.active
    p2, _ = _prot()
    s2 = _sample(t=62.0)
    _run(p2, s2, 0, 100)
    assert "OT_HARD" in p2.active and not p2.discharge_fet_on


def test_under_voltage_opens_discharge_only():
    p, log = _prot()
    s = _sample()
    _run(p, s, 0, 100)
    s.cell_v[3] = 2.9
    _run(p, s, 110, 2110)
    assert p.charge_fet_on and not p.discharge_fet_on and p.active == {"UV"}


def test_over_current_and_short_circuit():
    p, log = _prot()
    s = _sample()
    _run(p, s, 0, 100)
    s.current_a = -6.0            # charging faster than 5 A
    _run(p, s, 110, 610)
    assert not p.charge_fet_on and p.discharge_fet_on and "OC_CHG" in p.active
    s.current_a = 0.0
    _run(p, s, 620, 5620)
    assert p.charge_fet_on
    s.current_a = 25.0            # discharging faster than 20 A
    _run(p, s, 5630, 6130)
    assert p.charge_fet_on and not p.discharge_fet_on and "OC_DSG" in p.active
    s.current_a = 0.0
    _run(p, s, 6140, 12000)
    assert p.discharge_fet_on
    s.current_a = 100.0           # short circuit: within the same tick, latched
    _run(p, s, 12010, 12010)
    assert not p.charge_fet_on and not p.discharge_fet_on and "SC" in p.active
    s.current_a = 0.0
    _run(p, s, 12020, 40000)
    assert "SC" in p.active
    p.reset_faults(40000)
    assert p.charge_fet_on and p.discharge_fet_on


def test_sensor_faults_open_both_fets_within_one_tick():
    nan = float("nan")
    for group, status, code in (("cell", sensors.NAN, "CELL_NAN"),
                                ("cell", sensors.STUCK, "CELL_STUCK"),
                                ("cell", sensors.OPEN, "CELL_OPEN"),
                                ("temp", sensors.SHORT, "TEMP_SHORT"),
                                ("cur", sensors.RANGE, "CUR_RANGE")):
        p, log = _prot()
        s = _sample()
        _run(p, s, 0, 100)
        if group == "cell":
            s.cell_st[1] = status
        elif group == "temp":
            s.temp_st[1] = status
        else:
            s.current_st = status
        _run(p, s, 110, 110)
        assert not p.charge_fet_on and not p.discharge_fet_on, code
        assert code in p.active and log.last() == (code, 1, 110, 1 if group != "cur" else 0)
        # latched until reset, even once the sensor is fine again
        s.cell_st[1] = s.temp_st[1] = s.current_st = 0
        _run(p, s, 120, 5000)
        assert not p.charge_fet_on
        p.reset_faults(5000)
        assert p.charge_fet_on and p.discharge_fet_on, code
    # a NaN the acquisition did not flag is caught all the same
    p, log = _prot()
    s = _sample()
    s.cell_v[0] = nan
    _run(p, s, 0, 0)
    assert "CELL_NAN" in p.active and not p.discharge_fet_on


def test_stale_sample_opens_both_then_recovers():
    p, log = _prot()
    s = _sample()
    _run(p, s, 0, 1000)
    for t in range(1010, 1110, 10):   # acquisition stops; sample stays at t_ms = 1000
        p.update(s, t)
        assert p.charge_fet_on, t
    p.update(s, 1110)             # 110 ms old > 100 ms
    assert not p.charge_fet_on and not p.discharge_fet_on and "STALE" in p.active
    _run(p, s, 1120, 1210)        # fresh again, 100 ms release delay
    assert not p.charge_fet_on
    _run(p, s, 1220, 1220)
    assert p.charge_fet_on and "STALE" not in p.active


def _rig():
    bus = sim_i2c.SimI2C()
    ina = bus.add(sim_i2c.SimINA226(0x40, 0.002))
    ads = bus.add(sim_i2c.SimADS1115(0x48))
    adc = ads1115.ADS1115(bus, 0x48)
    taps = [ads1115.Tap(adc, k, (k + 1) * 4.5 / 4.0) for k in range(4)]
    for k in range(4):
        ads.set_input_v(k, 3.7 * (k + 1) / ((k + 1) * 4.5 / 4.0))
    th = ntc.Ntc(lambda: 0, ntc.Beta())
    code = int(th.ratio_for(25.0) * 65535 + 0.5)
    th.read_u16 = lambda: code
    board = sensors.Board(ina226.INA226(bus, 0x40, 0.002), taps, [th])
    return bus, ina, ads, sensors.Sensors(board)


def test_unplugged_current_sensor_opens_both_fets_within_one_tick():
    bus, ina, ads, sen = _rig()
    p, log = _prot()
    ina.set_current_a(3.0)
    for t in range(0, 500, TICK):
        p.update(sen.read(t), t)
    assert p.charge_fet_on and p.discharge_fet_on
    bus.unplug(0x40)
    p.update(sen.read(500), 500)   # the very next fast tick
    assert not p.charge_fet_on and not p.discharge_fet_on
    assert "CUR_MISSING" in p.active and log.last() == ("CUR_MISSING", 1, 500, 0)
    bus.plug(0x40)
    for t in range(510, 1000, TICK):
        p.update(sen.read(t), t)
    assert not p.discharge_fet_on     # latched
    assert p.reset_faults(1000) == []
    assert p.charge_fet_on and p.discharge_fet_on


def test_open_tap_on_the_simulated_board_opens_both_fets():
    bus, ina, ads, sen = _rig()
    p, log = _prot()
    for t in range(0, 100, TICK):
        p.update(sen.read(t), t)
    ads.set_input_v(2, 0.0)
    # believed once it outlasts a pipelined scan's sweep (implausible_hold_n samples)
    t = 100
    for _ in range(sen.cfg["implausible_hold_n"] + 1):
        p.update(sen.read(t), t)
        t += TICK
    assert not p.charge_fet_on and not p.discharge_fet_on
    assert "CELL_OPEN" in p.active and "CELL_RANGE" in p.active


def test_an_open_looking_cell_for_less_than_a_sweep_is_no_fault():
    # a load step between the reads of a cell's two taps: the difference looks open or
    # out of range until the next sweep, which a real open tap outlasts
    bus, ina, ads, sen = _rig()
    p, log = _prot()
    for t in range(0, 100, TICK):
        p.update(sen.read(t), t)
    good = ads.input_v[2]
    ads.set_input_v(2, 0.0)
    t = 100
    for _ in range(4):          # one sweep of a 16-cell pack's pipelined scan
        p.update(sen.read(t), t)
        t += TICK
    ads.set_input_v(2, good)
    for _ in range(3):
        p.update(sen.read(t), t)
        t += TICK
    assert p.charge_fet_on and p.discharge_fet_on and not p.active, p.active
    assert len(log) == 0


def test_config_from_calibration_is_clamped_to_chemistry_maxima():
    wide = {"cell": {"chemistry": "nmc"},
            "limits": {"v_min": 2.0, "v_max": 4.4, "t_charge_min_c": -10.0,
                       "t_charge_max_c": 55.0, "t_discharge_min_c": -40.0,
                       "t_discharge_max_c": 80.0, "i_discharge_max_a": 30.0,
                       "i_charge_max_a": 10.0}}
    c = protection.build_config(wide)
    assert c["ov_trip_v"] == 4.25 and c["uv_trip_v"] == 2.5
    assert c["ut_chg_trip_c"] == 0.0 and c["ot_chg_trip_c"] == 45.0
    assert c["ut_dsg_trip_c"] == -20.0 and c["ot_dsg_trip_c"] == 60.0
    assert c["oc_dsg_trip_a"] == 30.0 and c["oc_chg_trip_a"] == 10.0 and c["sc_trip_a"] == 90.0
    # overrides cannot widen either
    c = protection.build_config(wide, {"ov_hard_trip_v": 5.0, "ov_trip_v": 4.3})
    assert c["ov_hard_trip_v"] == 4.25 and c["ov_trip_v"] == 4.25
    lfp = protection.build_config({"cell": {"chemistry": "lfp"}, "limits": {"v_max": 3.8}})
    assert lfp["ov_trip_v"] == 3.65 and lfp["uv_trip_v"] == 2.0
    d = protection.build_config()
    # the soft trip sits OV_MARGIN_V above the charge voltage a CC-CV charger holds
    assert abs(d["ov_trip_v"] - 4.22) < 1e-9 and d["ut_chg_trip_c"] == 0.0


def test_config_errors_are_one_sentence():
    for args in (({"cell": {"chemistry": "lead"}},), (None, {"ov_trip": 4.1}),
                 ({"limits": {"v_max": "high"}},), (None, {"ov_trip_ms": -5}),
                 (None, {"ov_trip_v": 2.5})):
        try:
            protection.build_config(*args)
            msg = ""
        except ValueError as e:
            msg = str(e)
        assert msg.startswith("protection: "), args


def test_a_sample_without_thermometers_is_a_sensor_fault():
    p, log = _prot()
    s = _sample(n_t=0)
    _run(p, s, 0, 0)
    assert "TEMP_MISSING" in p.active and not p.charge_fet_on and not p.discharge_fet_on


def test_a_cv_charge_at_the_charge_voltage_does_not_trip():
    p, log = _prot()
    s = _sample(i=-0.5)          # the taper current of a CC-CV charge
    noise = (0.0, 0.004, -0.004, 0.002, 0.005, -0.003)   # reading noise, V
    t = 0
    for k in range(6000):        # a minute at v_max = 4.2 V from a charger 8 mV high
        s.cell_v[0] = 4.208 + noise[k % len(noise)]
        s.t_ms = t
        p.update(s, t)
        t += TICK
    assert p.charge_fet_on and not p.active and len(log) == 0


def test_new_config_inherits_latched_faults():
    p, log = _prot()
    s = _sample()
    _run(p, s, 0, 100)
    s.cell_v[0] = 4.23
    _run(p, s, 110, 1200)
    s.current_st = sensors.MISSING
    _run(p, s, 1210, 1210)
    q = protection.Protection(protection.build_config(CAL), log)
    q.inherit_latches(p)
    assert "OV" in q.active and "CUR_MISSING" in q.active
    assert not q.charge_fet_on and not q.discharge_fet_on
    s.cell_v[0] = 3.7
    s.current_st = 0
    _run(p, s, 1220, 1300)
    _run(q, s, 1220, 1300)
    assert not q.charge_fet_on  # still latched until a person resets
    assert q.reset_faults(1310) == []
    _run(q, s, 1320, 1320)
    assert q.charge_fet_on and q.discharge_fet_on


class _PicoPack:
    """The Pico board's drivers on a simulated bus: 16 cells on four ADS1115 scanned as a
    pipeline (one input per chip and fast tick), sensors and protection as the app runs
    them."""

    def __init__(self, n=16, v=3.7):
        from pico import board
        self.bus = sim_i2c.SimI2C()
        self.bus.add(sim_i2c.SimINA226(0x40, 0.002))
        self.ads = [self.bus.add(sim_i2c.SimADS1115(0x48 + j)) for j in range((n + 3) // 4)]
        self.n = n
        self.board = board.build(self.bus, [lambda: 32768, lambda: 32768],
                                 lambda x, hi: _Pin(), {"series_cells": n})
        self.taps_bank().wait_us = 0    # ticks 10 ms apart: every conversion is done
        self.sensors = sensors.Sensors(self.board)
        self.prot, self.log = _prot()
        self.t = 0
        self.set([v] * n)

    def taps_bank(self):
        return self.board.taps[0].bank

    def set(self, volts):
        stack = 0.0
        for k in range(self.n):
            stack += volts[k]
            self.ads[k // 4].set_input_v(k % 4, stack / self.board.taps[k].ratio)

    def tick(self):
        self.t += TICK
        s = self.sensors.read(self.t)
        self.prot.update(s, self.t)
        return s


class _Pin:
    def __init__(self):
        self.v = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0


def test_pipelined_taps_no_data_until_every_tap_read_then_all_valid():
    pk = _PicoPack()
    for _ in range(4):    # inputs 0..3 converted one per tick: no sample stamped yet
        s = pk.tick()
        assert s.t_ms is None and "NO_DATA" in pk.prot.active and not pk.prot.charge_fet_on
    s = pk.tick()
    assert s.t_ms == pk.t and list(s.cell_st) == [sensors.OK] * 16
    assert all(abs(s.cell_v[k] - 3.7) < 0.01 for k in range(16))
    assert pk.prot.charge_fet_on and pk.prot.discharge_fet_on and not pk.prot.active


def test_pipelined_taps_every_cell_refreshes_within_four_ticks():
    pk = _PicoPack()
    for _ in range(6):
        pk.tick()
    for k in range(16):           # one cell at a time moves; seen within 5 ticks of it
        volts = [3.7] * 16
        volts[k] = 3.9
        pk.set(volts)
        seen = None
        for t in range(6):
            s = pk.tick()
            if seen is None and abs(s.cell_v[k] - 3.9) < 0.01:
                seen = t
        assert seen is not None and seen <= 4, (k, seen)
        assert all(abs(s.cell_v[j] - volts[j]) < 0.01 for j in range(16))
    assert not pk.prot.active


def test_pipelined_taps_disconnected_chip_reads_missing_and_opens_the_fets():
    pk = _PicoPack()
    for _ in range(6):
        pk.tick()
    pk.bus.unplug(0x49)
    s = pk.tick()
    # its four taps fail at once: cells 4..7 and cell 8 above its top tap
    assert [k for k in range(16) if s.cell_st[k] == sensors.MISSING] == [4, 5, 6, 7, 8]
    assert "CELL_MISSING" in pk.prot.active
    assert not pk.prot.charge_fet_on and not pk.prot.discharge_fet_on
    for _ in range(8):
        s = pk.tick()
        assert [k for k in range(16) if s.cell_st[k] == sensors.MISSING] == [4, 5, 6, 7, 8]
    pk.bus.plug(0x49)
    for _ in range(5):
        s = pk.tick()
    assert list(s.cell_st) == [sensors.OK] * 16
    assert "CELL_MISSING" in pk.prot.active     # latched until a person resets it
    assert pk.prot.reset_faults(pk.t) == [] and pk.prot.charge_fet_on


def test_pipelined_taps_over_voltage_still_trips_on_time():
    pk = _PicoPack()
    for _ in range(6):
        pk.tick()
    for k in (0, 7, 15):
        p, log = _prot()
        pk.prot = p
        for _ in range(3):
            pk.tick()
        assert not p.active
        volts = [3.7] * 16
        volts[k] = 4.3                # over ov (4.2 V) and the hard limit
        pk.set(volts)
        t_set = pk.t
        while "OV" not in p.active and pk.t - t_set < 3000:
            pk.tick()
        delay = p.config["ov_trip_ms"]
        # the trip delay plus at most five ticks for the pipelined scan to see it
        assert "OV" in p.active and delay <= pk.t - t_set <= delay + 5 * TICK, (k, pk.t)
        assert not p.charge_fet_on
        pk.set([3.7] * 16)
        for _ in range(6):
            pk.tick()


def test_pipelined_taps_a_chip_failing_at_boot_reads_missing_not_no_data():
    pk = _PicoPack()
    pk.bus.unplug(0x4B)
    for _ in range(5):
        s = pk.tick()
    assert s.t_ms == pk.t
    assert [k for k in range(16) if s.cell_st[k] == sensors.MISSING] == [12, 13, 14, 15]
    assert "CELL_MISSING" in pk.prot.active and "NO_DATA" not in pk.prot.active
    assert not pk.prot.charge_fet_on and not pk.prot.discharge_fet_on


def test_native_cell_extremes_match_sum_max_min():
    # bms_native.extremes (firmware only) stands for sum/max/min over the cell voltages:
    # True with the same min and max exactly when their sum is a number.
    from array import array
    if protection._extremes is None:
        return
    inf, nan = float("inf"), float("nan")
    cases = ([3.7], [3.7, 3.6, 4.1, 2.9], [4.2, -0.0, 0.0, 1e-30], [3.7, inf], [-inf, 3.7],
             [inf, -inf], [3.7, nan], [nan], [3.3, 3.3, 3.3], [inf, inf, 1.0])
    for v in cases:
        a = array("f", v)
        out = array("f", [9.0, 9.0])
        ok = protection._extremes(a, out)
        x = sum(a)
        assert ok == (x == x), v
        if ok:
            assert out[0] == min(a) and out[1] == max(a), (v, list(out))
        else:
            assert list(out) == [9.0, 9.0], v
