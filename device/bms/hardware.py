# The driver set-up every board shares: a board's settings merged over its defaults, the
# current monitor, the ADS1115 cell taps, the NTCs and the FETs, assembled into a
# sensors.Board. A board module (boards/<board>/board.py) keeps only its pin map, its
# defaults and what is its own (the ESP32's on-chip taps). The drivers know nothing of
# the BMS: what they can use from the firmware (bms_native) is handed to them here.
from bms import sensors
from bms.compat import native
from drivers import ads1115, fet, ina226, ina228, ntc

# TapBank.read_into in C when the firmware has bms_native: no float boxed per tap
_native_taps = getattr(native, "taps", None)


def merge(config_defaults, pins_defaults, config=None, pins=None):
    """Copies of a board's CONFIG and PINS with the given keys replaced (unknown keys are
    an error, named with the known ones)."""
    c, p = dict(config_defaults), dict(pins_defaults)
    for src, dst, what in ((config, c, "config"), (pins, p, "pins")):
        for k in src or {}:
            if k not in dst:
                raise ValueError("board: unknown %s key '%s' (known: %s)"
                                 % (what, k, ", ".join(sorted(dst))))
            dst[k] = src[k]
    return c, p


def current_monitor(i2c, c):
    mon = ina228.INA228 if c["current_monitor"] == "ina228" else ina226.INA226
    return mon(i2c, c["current_addr"], c["shunt_ohm"], c["max_current_a"],
               invert=c["invert_current"])


def ads_taps(i2c, c, n):
    """Cell taps on ADS1115s (four per chip), converted in parallel: (taps, scan)."""
    adcs = [ads1115.ADS1115(i2c, a, c["ads_fsr_v"]) for a in c["ads_addrs"][:(n + 3) // 4]]
    ratios = c["tap_ratios"] or [(k + 1) * 4.5 / 4.0 for k in range(n)]
    bank = ads1115.TapBank(adcs, ratios, _native_taps)
    return bank.taps, bank.scan


def ntcs(reads, c):
    model = ntc.Beta(c["ntc_r0_ohm"], c["ntc_t0_c"], c["ntc_beta"])
    return [ntc.Ntc(reads[k], model, c["ntc_fixed_ohm"]) for k in range(c["n_ntc"])]


def board(i2c, c, p, pin, current, taps, temps, name, tap_scan=None):
    """sensors.Board with the charge/discharge FETs and the bleed pins, each pin made by
    pin(number, active_high) in its off state."""
    n = c["series_cells"]
    hi, bhi = c["fet_active_high"], c["bleed_active_high"]
    b = sensors.Board(current, taps, temps, c["cell_temp"], True,
                      fet.Fet(pin(p["charge_fet"], hi), hi, "charge"),
                      fet.Fet(pin(p["discharge_fet"], hi), hi, "discharge"),
                      fet.FetBank([pin(x, bhi) for x in p["bleed"][:n]], bhi),
                      name, tap_scan)
    b.i2c = i2c
    return b
