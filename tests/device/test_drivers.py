# Drivers against the simulated register maps: physical value in, same value out.
from bms import compat, hardware
from drivers import adc_taps, ads1115, fet, ina226, ina228
from sim import sim_i2c


def _bus_with(dev):
    bus = sim_i2c.SimI2C()
    bus.add(dev)
    return bus


def _raises_oserror(fn):
    try:
        fn()
    except OSError as e:
        return e
    return None


def test_ina226_current_round_trip_2mohm():
    sim = sim_i2c.SimINA226(0x40, shunt_ohm=0.002)
    drv = ina226.INA226(_bus_with(sim), 0x40, shunt_ohm=0.002)
    for i in (2.345, -2.345, 0.0, 17.5, -31.0):
        sim.set_current_a(i)
        assert abs(drv.read_current_a() - i) <= drv.current_lsb_a, i
        assert abs(drv.read_shunt_v() - i * 0.002) <= 2.5e-6


def test_ina226_calibration_and_config_registers():
    sim = sim_i2c.SimINA226(0x40, shunt_ohm=0.002)
    drv = ina226.INA226(_bus_with(sim), 0x40, shunt_ohm=0.002)
    assert sim.regs[ina226.REG_CAL] == 2048     # 0.00512 / (1.25 mA * 2 mOhm)
    assert abs(drv.current_lsb_a - 0.00125) < 1e-9
    assert sim.regs[ina226.REG_CONFIG] == ina226.CONFIG_DEFAULT


def test_ina226_bus_voltage_and_invert():
    sim = sim_i2c.SimINA226(0x41, shunt_ohm=0.001)
    drv = ina226.INA226(_bus_with(sim), 0x41, shunt_ohm=0.001, invert=True)
    sim.set_bus_v(14.8)
    sim.set_current_a(-5.0)   # flowing IN- to IN+: discharge on an inverted shunt
    assert abs(drv.read_bus_v() - 14.8) <= 1.25e-3
    assert abs(drv.read_current_a() - 5.0) <= drv.current_lsb_a


def test_ina226_before_calibration_reads_zero_current():
    sim = sim_i2c.SimINA226()
    sim.set_current_a(3.0)
    assert sim.value(ina226.REG_CURRENT) == 0   # per datasheet until CAL is written


def test_ina228_current_round_trip_2mohm():
    sim = sim_i2c.SimINA228(0x40, shunt_ohm=0.002)
    drv = ina228.INA228(_bus_with(sim), 0x40, shunt_ohm=0.002)
    assert sim.regs[ina228.REG_SHUNT_CAL] == 4096   # 13107.2e6 * (81.92 A / 2**19) * 2 mOhm
    for i in (2.345, -2.345, 0.0, 60.0, -0.0123):
        sim.set_current_a(i)
        assert abs(drv.read_current_a() - i) <= drv.current_lsb_a, i
        assert abs(drv.read_shunt_v() - i * 0.002) <= 312.5e-9


def test_ina228_fine_range_shunt_cal_times_four():
    sim = sim_i2c.SimINA228(0x45, shunt_ohm=0.002)
    drv = ina228.INA228(_bus_with(sim), 0x45, shunt_ohm=0.002, max_current_a=20.0, adc_range=1)
    assert sim.regs[ina228.REG_CONFIG] & 0x10
    assert sim.regs[ina228.REG_SHUNT_CAL] == 4000   # x4 in the +-40.96 mV range
    sim.set_current_a(2.345)
    assert abs(drv.read_current_a() - 2.345) <= drv.current_lsb_a
    assert abs(drv.read_shunt_v() - 0.00469) <= 78.125e-9


def test_ina228_bus_voltage_and_die_temperature():
    sim = sim_i2c.SimINA228(0x40, shunt_ohm=0.0005)
    drv = ina228.INA228(_bus_with(sim), 0x40, shunt_ohm=0.0005)
    sim.set_bus_v(51.2)
    sim.die_c = -12.5
    assert abs(drv.read_bus_v() - 51.2) <= 195.3125e-6
    assert abs(drv.read_die_c() + 12.5) <= 7.8125e-3


def test_missing_device_gives_one_clear_sentence():
    bus = sim_i2c.SimI2C()
    e = _raises_oserror(lambda: ina226.INA226(bus, 0x40))
    assert e is not None and "INA226 at I2C address 0x40 does not answer" in str(e)
    e = _raises_oserror(lambda: ina228.INA228(bus, 0x44))
    assert e is not None and "INA228 at I2C address 0x44 does not answer" in str(e)
    e = _raises_oserror(lambda: ads1115.ADS1115(bus, 0x49))
    assert e is not None and "ADS1115 at I2C address 0x49 does not answer" in str(e)


def test_wrong_manufacturer_or_part_is_named():
    sim = sim_i2c.SimINA226(0x40)
    sim.regs[0xFE] = 0x1234
    e = _raises_oserror(lambda: ina226.INA226(_bus_with(sim), 0x40))
    assert e is not None and "another device" in str(e) and "0x1234" in str(e)
    # an INA226 where an INA228 was configured: same maker, other part
    e = _raises_oserror(lambda: ina228.INA228(_bus_with(sim_i2c.SimINA226(0x40)), 0x40))
    assert e is not None and "INA228" in str(e) and "another device" in str(e)


def test_unplugged_device_raises_enodev():
    sim = sim_i2c.SimINA226(0x40)
    bus = _bus_with(sim)
    drv = ina226.INA226(bus, 0x40)
    bus.unplug(0x40)
    e = _raises_oserror(drv.read_current_a)
    assert e is not None and e.args[0] == 19
    assert bus.scan() == []
    bus.plug(0x40)
    assert drv.read_current_a() == 0.0


def test_ads1115_round_trip_and_taps():
    sim = sim_i2c.SimADS1115(0x48)
    adc = ads1115.ADS1115(_bus_with(sim), 0x48, fsr_v=4.096)
    sim.set_input_v(2, 1.234)
    assert abs(adc.read_v(2) - 1.234) <= adc.lsb_v
    tap = ads1115.Tap(adc, 3, ratio=adc_taps.divider_ratio(30000.0, 10000.0))
    sim.set_input_v(3, 11.1 / 4.0)
    assert abs(tap.read_v() - 11.1) <= 4 * adc.lsb_v
    sim.set_input_v(0, 5.0)   # beyond full scale saturates
    assert adc.read_raw(0) == 32767
    assert sim.conversions == 3


def test_ads1115_other_full_scale():
    sim = sim_i2c.SimADS1115(0x4B)
    adc = ads1115.ADS1115(_bus_with(sim), 0x4B, fsr_v=2.048, rate_sps=475)
    sim.set_input_v(1, 0.777)
    assert abs(adc.read_v(1) - 0.777) <= 2.048 / 32768
    assert (sim.regs[1] >> 9) & 7 == 2 and (sim.regs[1] >> 5) & 7 == 6


def test_adc_tap_scaling():
    tap = adc_taps.AdcTap(lambda: 32768, ratio=2.0, vref_v=3.3, samples=3)
    assert abs(tap.read_v() - 32768 / 65535 * 3.3 * 2.0) < 1e-6
    assert abs(adc_taps.divider_ratio(20000.0, 10000.0) - 3.0) < 1e-12


class _Pin:
    def __init__(self):
        self.v = None
        self.writes = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        self.writes += 1


def test_fet_active_high_and_low():
    p = _Pin()
    f = fet.Fet(p, active_high=True)
    assert p.v == 0 and not f.is_on
    f.on()
    assert p.v == 1 and f.is_on
    f.on()
    assert p.writes == 2      # no rewrite when unchanged
    q = _Pin()
    g = fet.Fet(q, active_high=False)
    assert q.v == 1
    g.set(True)
    assert q.v == 0


def test_fet_bank_mask():
    pins = [_Pin() for _ in range(4)]
    bank = fet.FetBank(pins)
    bank.set_mask(0b1010)
    assert [p.v for p in pins] == [0, 1, 0, 1]
    assert bank.mask == 0b1010
    bank.off()
    assert [p.v for p in pins] == [0, 0, 0, 0]


def _board_bus(n_ads):
    bus = sim_i2c.SimI2C()
    bus.add(sim_i2c.SimINA228(0x40, 0.002))
    for k in range(n_ads):
        bus.add(sim_i2c.SimADS1115(0x48 + k))
    return bus


def test_pico_board_builds_on_a_simulated_bus():
    from pico import board
    bus = _board_bus(2)
    pins = {}

    def pin(x, active_high):
        pins[x] = _Pin()
        return pins[x]

    b = board.build(bus, [lambda: 20000, lambda: 20000], pin,
                    {"series_cells": 6, "current_monitor": "ina228"})
    assert b.n_cells == 6 and b.n_temps == 2 and b.name == "pico"
    assert len(b.bleeders) == 6 and pins[14].v == 0 and pins[15].v == 0
    assert abs(b.taps[5].ratio - 6 * 4.5 / 4.0) < 1e-9 and b.taps[5].adc.addr == 0x49
    try:
        board.settings({"series_cells": 17})
        msg = ""
    except ValueError as e:
        msg = str(e)
    assert msg.startswith("board: series_cells")


def test_esp32_board_builds_with_on_chip_taps():
    from esp32 import board
    bus = _board_bus(0)
    b = board.build(bus, [lambda: 30000], [lambda: 10000] * 4, lambda x, hi: _Pin(),
                    {"taps": "adc", "series_cells": 3, "n_ntc": 1,
                     "current_monitor": "ina228"})
    assert b.n_cells == 3 and isinstance(b.taps[0], adc_taps.AdcTap)
    assert abs(b.taps[0].read_v() - 10000 / 65535 * 3.3 * 1.5) < 1e-6


class _BusyAds(sim_i2c.SimADS1115):
    """Reports 'converting' for the first config reads after a start, like the real part."""

    def __init__(self, addr, busy_reads):
        sim_i2c.SimADS1115.__init__(self, addr)
        self.busy_reads = busy_reads
        self._busy = 0

    def on_write(self, reg, v):
        sim_i2c.SimADS1115.on_write(self, reg, v)
        if reg == 0x01 and v & 0x8000:
            self._busy = self.busy_reads

    def value(self, reg):
        if reg == 0x01 and self._busy:
            self._busy -= 1
            return self.regs[0x01] & 0x7FFF
        return sim_i2c.SimADS1115.value(self, reg)


def test_ads1115_waits_for_the_conversion_and_times_out():
    sim = _BusyAds(0x48, 2)
    adc = ads1115.ADS1115(_bus_with(sim), 0x48)
    sim.set_input_v(0, 2.0)
    assert abs(adc.read_v(0) - 2.0) <= adc.lsb_v
    sim.busy_reads = 50
    e = _raises_oserror(lambda: adc.read_v(0))
    assert e is not None and e.args[0] == 110


class _LogBus(sim_i2c.SimI2C):
    """A simulated bus that records (op, addr, reg) of every transfer."""

    def __init__(self):
        sim_i2c.SimI2C.__init__(self)
        self.log = []

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        self.log.append(("r", addr, reg))
        return sim_i2c.SimI2C.readfrom_mem_into(self, addr, reg, buf, addrsize)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self.log.append(("w", addr, reg))
        return sim_i2c.SimI2C.writeto_mem(self, addr, reg, buf, addrsize)


def test_ads1115_tap_bank_converts_the_chips_in_parallel():
    bus = _LogBus()
    sims = [sim_i2c.SimADS1115(0x48 + j) for j in range(3)]
    for sim in sims:
        bus.add(sim)
    adcs = [ads1115.ADS1115(bus, 0x48 + j) for j in range(3)]
    n = 10                                      # the third chip carries two taps
    ratios = [(k + 1) * 4.5 / 4.0 for k in range(n)]
    for k in range(n):
        sims[k // 4].set_input_v(k % 4, 3.7 * (k + 1) / ratios[k] + 0.001 * k)
    bank = ads1115.TapBank(adcs, ratios)
    bus.log = []
    bank.scan_all()
    # four rounds; in each, every chip's conversion starts before any result is read
    starts = [e for e in bus.log if e == ("w", e[1], 0x01)]
    assert len(starts) == n and sum(s.conversions for s in sims) == n
    first_read = bus.log.index(("r", 0x48, 0x00))
    assert [e[1] for e in bus.log[:first_read] if e[0] == "w"] == [0x48, 0x49, 0x4A]
    # the same voltages as reading tap by tap (the bank scales by one product, made once)
    one_by_one = [ads1115.Tap(adcs[k // 4], k % 4, ratios[k]).read_v() for k in range(n)]
    assert all(abs(bank.taps[k].read_v() - one_by_one[k]) < 1e-5 * (1 + abs(one_by_one[k]))
               for k in range(n))
    assert abs(bank.taps[9].read_v() - 37.0 - 0.009 * ratios[9]) < 4 * adcs[2].lsb_v * ratios[9]
    # a chip that stops answering fails its own taps only, and comes back
    bus.unplug(0x49)
    bank.scan_all()
    assert [_raises_oserror(t.read_v) is not None for t in bank.taps] == \
        [False] * 4 + [True] * 4 + [False] * 2
    bus.plug(0x49)
    bank.scan_all()
    assert all(_raises_oserror(t.read_v) is None for t in bank.taps)


def test_ads1115_tap_bank_needs_enough_chips():
    adc = ads1115.ADS1115(_bus_with(sim_i2c.SimADS1115(0x48)), 0x48)
    try:
        ads1115.TapBank([adc], [1.0] * 5)
        msg = ""
    except ValueError as e:
        msg = str(e)
    assert "5 taps need 2 chips" in msg


def _pipeline_rig(n):
    bus = _LogBus()
    sims = [bus.add(sim_i2c.SimADS1115(0x48 + j)) for j in range((n + 3) // 4)]
    adcs = [ads1115.ADS1115(bus, 0x48 + j) for j in range(len(sims))]
    ratios = [(k + 1) * 4.5 / 4.0 for k in range(n)]
    bank = ads1115.TapBank(adcs, ratios)
    bank.wait_us = 0      # scans a fast tick apart: every conversion is long done

    def set_taps(v):
        for k in range(n):
            sims[k // 4].set_input_v(k % 4, v * (k + 1) / ratios[k])
    return bus, sims, bank, set_taps


def test_ads1115_tap_bank_pipeline_refreshes_every_tap_within_four_scans():
    bus, sims, bank, set_taps = _pipeline_rig(16)
    set_taps(3.7)
    bank.scan()                     # the first scan converts every tap (and waits)
    assert all(abs(bank.taps[k].read_v() - 3.7 * (k + 1)) < 0.01 for k in range(16))
    set_taps(4.0)
    bus.log = []
    bank.scan()                     # reads input 0, converted before the change
    # no waiting: the previous scan's results read, the next input started, per chip
    assert sorted(e[0] for e in bus.log) == ["r"] * 4 + ["w"] * 4
    assert [e for e in bus.log if e[0] == "r"] == [("r", 0x48 + j, 0x00) for j in range(4)]
    fresh = set()
    for tick in range(4):
        bank.scan()
        now = set(k for k in range(16) if abs(bank.taps[k].read_v() - 4.0 * (k + 1)) < 0.01)
        # each scan reads the input the scan before started: one tap per chip
        assert fresh <= now and now - fresh == set(4 * j + (tick + 1) % 4 for j in range(4))
        fresh = now
    assert len(fresh) == 16


def test_ads1115_tap_bank_pipeline_each_tap_within_five_scans_of_a_change():
    # A tap is read every 4 scans; a conversion runs from one scan to the next, so a
    # change shows on every tap within 5 scans of it (50 ms at a 10 ms tick).
    bus, sims, bank, set_taps = _pipeline_rig(16)
    set_taps(3.7)
    bank.scan()
    for start in range(4):          # a change at any point of the cycle
        v = 3.8 + 0.05 * start
        set_taps(v)
        for _ in range(5):
            bank.scan()
        assert all(abs(bank.taps[k].read_v() - v * (k + 1)) < 0.01 for k in range(16))
        bank.scan()


def test_ads1115_tap_bank_pipeline_unplugged_chip_fails_its_taps_at_once():
    bus, sims, bank, set_taps = _pipeline_rig(16)
    set_taps(3.7)
    bank.scan()
    bank.scan()
    bus.unplug(0x4A)
    bank.scan()
    assert [_raises_oserror(t.read_v) is not None for t in bank.taps] == \
        [False] * 8 + [True] * 4 + [False] * 4
    for _ in range(6):
        bank.scan()
        assert all(_raises_oserror(bank.taps[k].read_v) is not None for k in range(8, 12))
    bus.plug(0x4A)
    for _ in range(5):
        bank.scan()
    assert all(_raises_oserror(t.read_v) is None for t in bank.taps)


def test_ads1115_tap_bank_pipeline_one_tap_and_a_part_chip():
    for n in (1, 3, 6):
        bus, sims, bank, set_taps = _pipeline_rig(n)
        set_taps(3.6)
        bank.scan()
        set_taps(3.9)
        for _ in range(min(n, 4) + 1):      # one input per chip and scan
            bank.scan()
        assert all(abs(bank.taps[k].read_v() - 3.9 * (k + 1)) < 0.01 for k in range(n))
        # only inputs that carry a tap are converted
        assert all(s.conversions <= 4 + 2 * (min(n, 4) + 1) for s in sims)


def test_ads1115_tap_bank_waits_when_scanned_again_within_a_conversion():
    bus, sims, bank, set_taps = _pipeline_rig(4)
    bank.scan()
    bank.wait_us = 10 ** 9          # the next scan comes before a conversion can be done
    bus.log = []
    bank.scan()
    assert ("r", 0x48, 0x01) in bus.log      # the OS bit checked before the result is read
    assert bus.log.index(("r", 0x48, 0x01)) < bus.log.index(("r", 0x48, 0x00))


def test_board_assembly_hands_the_firmware_tap_reader_to_the_bank():
    # The drivers import nothing from the BMS: bms.hardware gives the bank the firmware's
    # bms_native.taps when there is one (None otherwise).
    bus = sim_i2c.SimI2C()
    for j in range(2):
        bus.add(sim_i2c.SimADS1115(0x48 + j))
    c = {"ads_addrs": (0x48, 0x49, 0x4A), "ads_fsr_v": 4.096, "tap_ratios": None}
    taps, scan = hardware.ads_taps(bus, c, 6)
    bank = taps[0].bank
    assert len(taps) == 6 and len(bank.adcs) == 2 and callable(scan)
    assert bank.native_taps is getattr(compat.native, "taps", None)


def test_ads1115_tap_bank_read_into_same_in_c_and_python():
    # With the firmware's bms_native.taps the bank's read_into runs in C; without it (or
    # with it switched off here) in Python: the same voltages and statuses, bit for bit.
    from array import array
    bus, sims, bank, set_taps = _pipeline_rig(10)
    for k in range(10):
        sims[k // 4].set_input_v(k % 4, 0.37 * (k + 1) - 0.013 * k)
    bank.scan_all()
    bus.unplug(0x49)
    bank.scan_all()
    bus.plug(0x49)
    bank.code[1] = -32768
    bank.code[9] = 32767
    got = []
    for native in (getattr(compat.native, "taps", None), None):
        bank.native_taps = native
        v, st = array("f", [0.0] * 10), bytearray(10)
        bank.read_into(v, st)
        got.append(([x for x in v], list(st)))
    (va, sa), (vb, sb) = got
    assert sa == sb == [0] * 4 + [1] * 4 + [0] * 2, (sa, sb)
    for k in range(10):
        assert (va[k] == vb[k]) or (va[k] != va[k] and vb[k] != vb[k]), (k, va[k], vb[k])
    assert va[1] < 0 and va[9] > 0 and va[4] != va[4]
