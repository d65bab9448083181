# ESP32 (DevKitC) pin map and driver set-up. `machine` is imported only inside make_board()
# so this module also imports on the host. Only ADC1 pins: ADC2 is unusable with Wi-Fi.
from bms import hardware
from drivers import adc_taps

PINS = {
    "i2c_id": 0, "sda": 21, "scl": 22, "i2c_hz": 400000,
    "charge_fet": 25, "discharge_fet": 26,
    "ntc_adc": (34, 35),               # input-only ADC1 pins
    "tap_adc": (32, 33, 36, 39),       # on-chip cell taps when CONFIG["taps"] == "adc"
    "bleed": (16, 17, 18, 19, 23, 27, 13, 14),   # no strapping pins
}

CONFIG = {
    "series_cells": 4,
    "current_monitor": "ina226",       # or "ina228"
    "current_addr": 0x40,
    "shunt_ohm": 0.002,
    "max_current_a": None,
    "invert_current": False,
    "taps": "ads1115",                 # or "adc" (on-chip, up to 4 cells, coarser)
    "ads_addrs": (0x48, 0x49),
    "ads_fsr_v": 4.096,
    "tap_ratios": None,                # None: ADS1115 4.5 V per cell in 4.0 V, ADC in 3.0 V
    "adc_vref_v": 3.3,                 # divider supply for NTCs; read_uv is calibrated
    "n_ntc": 2,
    "ntc_r0_ohm": 10000.0, "ntc_t0_c": 25.0, "ntc_beta": 3950.0, "ntc_fixed_ohm": 10000.0,
    "cell_temp": None,
    "fet_active_high": True,
    "bleed_active_high": True,
}


# For the wiring guide (docs/wiring.md, made from this file by `bms-host wiring`): the
# board's name, the supply pin its NTC dividers hang from, and the tap dividers' bottom
# resistor.
WIRING = {"name": "ESP32 DevKitC", "ntc_top": "3V3", "supply_v": 3.3,
          "tap_r_bottom_ohm": 10000}


def settings(config=None, pins=None):
    """CONFIG and PINS with the given keys replaced (unknown keys are an error)."""
    c, p = hardware.merge(CONFIG, PINS, config, pins)
    if c["taps"] not in ("ads1115", "adc"):
        raise ValueError("board: config 'taps' must be 'ads1115' or 'adc'")
    n_max = 4 * len(c["ads_addrs"]) if c["taps"] == "ads1115" else len(p["tap_adc"])
    n_max = min(16, n_max, len(p["bleed"]))
    if not 1 <= c["series_cells"] <= n_max:
        raise ValueError("board: series_cells must be 1..%d with this tap and bleed-pin set-up"
                         % n_max)
    if not 1 <= c["n_ntc"] <= len(p["ntc_adc"]):
        raise ValueError("board: n_ntc must be 1..%d on this board" % len(p["ntc_adc"]))
    return c, p


def build(i2c, ntc_reads, tap_reads, pin, config=None, pins=None):
    """Drivers on a given bus, read_u16 callables (NTCs, on-chip taps) and a
    pin(number, active_high) factory; make_board() passes machine's, tests fakes."""
    c, p = settings(config, pins)
    n = c["series_cells"]
    if c["taps"] == "ads1115":
        taps, scan = hardware.ads_taps(i2c, c, n)
    else:
        ratios = c["tap_ratios"] or [(k + 1) * 4.5 / 3.0 for k in range(n)]
        taps = [adc_taps.AdcTap(tap_reads[k], ratios[k], c["adc_vref_v"]) for k in range(n)]
        scan = None
    return hardware.board(i2c, c, p, pin, hardware.current_monitor(i2c, c), taps,
                          hardware.ntcs(ntc_reads, c), "esp32", scan)


def make_board(config=None, pins=None):
    import machine
    c, p = settings(config, pins)
    i2c = machine.I2C(p["i2c_id"], sda=machine.Pin(p["sda"]), scl=machine.Pin(p["scl"]),
                      freq=p["i2c_hz"])
    scale = 65535 / (c["adc_vref_v"] * 1e6)

    def reader(x):
        adc = machine.ADC(machine.Pin(x), atten=machine.ADC.ATTN_11DB)
        # calibrated microvolts mapped to 0..65535 of the divider supply
        return lambda: int(adc.read_uv() * scale)

    ntc_reads = [reader(x) for x in p["ntc_adc"][:c["n_ntc"]]]
    tap_reads = [reader(x) for x in p["tap_adc"]] if c["taps"] == "adc" else []

    def pin(x, active_high):
        return machine.Pin(x, machine.Pin.OUT, value=0 if active_high else 1)

    return build(i2c, ntc_reads, tap_reads, pin, config, pins)
