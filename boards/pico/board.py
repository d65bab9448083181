# Raspberry Pi Pico (RP2040) pin map and driver set-up. `machine` is imported only inside
# make_board() so this module also imports on the host.
from bms import hardware

PINS = {
    "i2c_id": 0, "sda": 4, "scl": 5, "i2c_hz": 400000,
    "charge_fet": 14, "discharge_fet": 15,
    "ntc_adc": (26, 27, 28),           # ADC0..ADC2, the Pico's only free analog inputs
    "bleed": (6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 2),
}

CONFIG = {
    "series_cells": 4,
    "current_monitor": "ina226",       # or "ina228"
    "current_addr": 0x40,
    "shunt_ohm": 0.002,
    "max_current_a": None,             # None: the monitor's full scale
    "invert_current": False,           # True if discharge flows IN- to IN+
    "ads_addrs": (0x48, 0x49, 0x4A, 0x4B),   # four taps each, AIN0..AIN3
    "ads_fsr_v": 4.096,
    "tap_ratios": None,                # None: tap k divided so 4.5 V per cell fits 4.0 V
    "n_ntc": 2,
    "ntc_r0_ohm": 10000.0, "ntc_t0_c": 25.0, "ntc_beta": 3950.0, "ntc_fixed_ohm": 10000.0,
    "cell_temp": None,                 # None: cells spread evenly over the NTCs
    "fet_active_high": True,
    "bleed_active_high": True,
}


# For the wiring guide (docs/wiring.md, made from this file by `bms-host wiring`): the
# board's name, the supply pin its NTC dividers hang from, and the tap dividers' bottom
# resistor.
WIRING = {"name": "Raspberry Pi Pico (RP2040)",
          "ntc_top": "ADC_VREF (pin 35)", "supply_v": 3.3, "tap_r_bottom_ohm": 10000}


def settings(config=None, pins=None):
    """CONFIG and PINS with the given keys replaced (unknown keys are an error)."""
    c, p = hardware.merge(CONFIG, PINS, config, pins)
    n = c["series_cells"]
    if not 1 <= n <= min(16, 4 * len(c["ads_addrs"]), len(p["bleed"])):
        raise ValueError("board: series_cells must be 1..%d with %d ADS1115 and %d bleed pins"
                         % (min(16, 4 * len(c["ads_addrs"]), len(p["bleed"])),
                            len(c["ads_addrs"]), len(p["bleed"])))
    if not 1 <= c["n_ntc"] <= len(p["ntc_adc"]):
        raise ValueError("board: n_ntc must be 1..%d on this board" % len(p["ntc_adc"]))
    return c, p


def build(i2c, read_u16s, pin, config=None, pins=None):
    """Drivers on a given bus, NTC read_u16 callables and pin(number, active_high) factory;
    make_board() passes machine's, tests pass simulated ones."""
    c, p = settings(config, pins)
    taps, scan = hardware.ads_taps(i2c, c, c["series_cells"])
    b = hardware.board(i2c, c, p, pin, hardware.current_monitor(i2c, c), taps,
                       hardware.ntcs(read_u16s, c), "pico", scan)
    # the taps' scan is pipelined over fast ticks (ads1115.TapBank); read them in one call
    bank = taps[0].bank
    b.tap_read = _tap_reader(bank)
    # no blocking first scan: the sensors stamp no sample until every tap has a reading
    # (the first four fast ticks at 16 cells, FETs open meanwhile as at any boot)
    bank.blocking_first = False
    b.tap_ready = bank.ready
    # each NTC every 5th fast tick (50 ms), staggered: see sensors.Board.temp_every_n
    b.temp_every_n = 5
    return b


_native_taps = None   # bms_native.taps, TapBank.read_into's loop in C (see _tap_reader)


def _tap_reader(bank):
    """bank.read_into(tap_v, tap_st). With the C loop, a lambda that calls it straight:
    small enough (11 words of state, the C function a global) for MicroPython to keep its
    frame on the C stack, where read_into's frame is a heap allocation every fast tick."""
    global _native_taps
    from bms.compat import native

    _native_taps = getattr(native, "taps", None)
    if _native_taps is None:
        return bank.read_into
    code, failed, scale = bank.code, bank.failed, bank.scale
    return lambda tv, ts: _native_taps(code, failed, scale, tv, ts)


def make_board(config=None, pins=None):
    import machine
    c, p = settings(config, pins)
    i2c = machine.I2C(p["i2c_id"], sda=machine.Pin(p["sda"]), scl=machine.Pin(p["scl"]),
                      freq=p["i2c_hz"])
    reads = [machine.ADC(machine.Pin(x)).read_u16 for x in p["ntc_adc"][:c["n_ntc"]]]

    def pin(x, active_high):
        # created in the off state, before any driver touches it
        return machine.Pin(x, machine.Pin.OUT, value=0 if active_high else 1)

    return build(i2c, reads, pin, config, pins)
