"""bms-host wiring: docs/wiring.md from the boards' own pin maps and defaults.

Every number in the guide (pins, I2C addresses and their address straps, tap dividers for
1-16 cells, shunt range, NTC divider voltages, FET and bleed outputs) is computed from
PINS, CONFIG and WIRING in boards/<board>/board.py, read as literals (the module is not
imported: it needs MicroPython's drivers), so the guide cannot drift from the code:
`bms-host wiring --check` (and the test suite) fails when docs/wiring.md differs."""
import ast
import math
import os
import sys

from . import REPO, UserError

HELP = "write the wiring guide docs/wiring.md from boards/*/board.py (or --check it)"
BOARDS = ("pico", "esp32")
DOC = REPO / "docs" / "wiring.md"
V_CELL_MAX = 4.5     # the tap dividers are sized so this per-cell voltage reaches full scale
V_CELL_NOM = 4.2
TAP_FS_V = 4.0       # ... at an ADS1115 input (the drivers' default tap ratios)
# INA226/INA228 A0/A1 and ADS1115 ADDR: the pin each address needs it tied to
STRAP = ("GND", "VS", "SDA", "SCL")
ADS_STRAP = {0x48: "GND", 0x49: "VDD", 0x4A: "SDA", 0x4B: "SCL"}
SHUNT_FS_V = {"ina226": 0.08192, "ina228": 0.16384}


def configure(p):
    p.add_argument("--out", default=str(DOC), help="file to write (default docs/wiring.md)")
    p.add_argument("--check", action="store_true",
                   help="only compare: exit 1 when the file differs from the board files")


def board_literals(name):
    """PINS, CONFIG and WIRING of boards/<name>/board.py as plain values."""
    path = REPO / "boards" / name / "board.py"
    tree = ast.parse(path.read_text(), str(path))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in ("PINS", "CONFIG", "WIRING"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    missing = [k for k in ("PINS", "CONFIG", "WIRING") if k not in found]
    if missing:
        raise UserError("%s has no literal %s: the wiring guide is made from them"
                        % (path, " and ".join(missing)))
    return found["PINS"], found["CONFIG"], found["WIRING"]


def e96(x):
    """The E96 (1 %) resistor value nearest to x ohms."""
    decade = 10 ** math.floor(math.log10(x))
    best = None
    for i in range(97):
        v = round(10 ** (i / 96), 2) * decade
        if best is None or abs(v - x) < abs(best - x):
            best = v
    return best


def ohm(x):
    if x >= 1e6:
        return "%g M" % round(x / 1e6, 3)
    if x >= 1e3:
        return "%g k" % round(x / 1e3, 3)
    return "%g" % round(x, 3)


def ina_strap(addr):
    k = addr - 0x40
    if not 0 <= k < 16:
        return "?"
    return "A1 = %s, A0 = %s" % (STRAP[k // 4], STRAP[k % 4])


def ntc_volts(c, supply_v, t_c):
    r = c["ntc_r0_ohm"] * math.exp(c["ntc_beta"] * (1 / (t_c + 273.15)
                                                   - 1 / (c["ntc_t0_c"] + 273.15)))
    return supply_v * r / (r + c["ntc_fixed_ohm"])


def tap_table(ratios, r_bottom, fs_v, where):
    """Rows for taps 1..n: where(k) says which input reads tap k."""
    lines = ["| tap | measured at | input | ratio | R top ideal | R top (E96) | ratio with E96 "
             "| at the input, 4.2 V/cell | divider current |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, ratio in enumerate(ratios):
        top = r_bottom * (ratio - 1)
        top96 = e96(top) if top > 0 else 0.0
        real = (top96 + r_bottom) / r_bottom
        v_in = (k + 1) * V_CELL_NOM / real
        i_ua = (k + 1) * V_CELL_NOM / (top96 + r_bottom) * 1e6
        lines.append("| %d | top of cell %d | %s | %.4f | %s | %s | %.4f | %.3f V (of %.3f) | "
                     "%.0f uA |" % (k + 1, k + 1, where(k), ratio, ohm(top), ohm(top96), real,
                                    v_in, fs_v, i_ua))
    return lines


DIAGRAM = """```
 P+ (load and charger +) ─────────────────────────────────┐
                                                          │
 pack + ── cell n ──┬── tap n ─[R top n]─┬─ {tap_in} n
            ...     │                    └─[{rb}]─ GND
        ── cell 2 ──┼── tap 2 ─[R top 2]─┬─ {tap_in} 2
        ── cell 1 ──┴── tap 1 ─[R top 1]─┬─ {tap_in} 1     each cell: bleed resistor
            │                            └─[{rb}]─ GND     switched by an optocoupler
 pack − (B−) = GND ─── GND of {mcu}, {mon}, ADS1115       driven from its bleed pin
            │
        IN− ┤ shunt {shunt} (low side) ├ IN+ ── {mon} ── I2C ── {mcu}
            │
   [discharge FET]═[charge FET]  N-MOSFETs back to back, sources together;
            │                    gates from GPIO {dsg} / GPIO {chg} via gate drivers
 P− (load and charger −)

 {ntc_top} ─[{rf}]─┬─ ADC pin ─ 100 nF ─ GND       one divider per NTC
 {pad}└─ NTC {r0} (B {beta}) ─ GND
```"""


def board_section(name):
    p, c, w = board_literals(name)
    rb = w["tap_r_bottom_ohm"]
    mon = c["current_monitor"].upper()
    out = ["## %s (`boards/%s/board.py`)" % (w["name"], name), ""]
    diag = DIAGRAM.format(tap_in="ADS1115 AIN", rb=ohm(rb) + "Ω", mcu=w["name"].split(" (")[0],
                          mon=mon, shunt="%g mΩ" % (c["shunt_ohm"] * 1000),
                          dsg=p["discharge_fet"], chg=p["charge_fet"], ntc_top=w["ntc_top"],
                          rf=ohm(c["ntc_fixed_ohm"]) + "Ω", r0=ohm(c["ntc_r0_ohm"]) + "Ω",
                          beta=int(c["ntc_beta"]),
                          pad=" " * len("%s ─[%sΩ]─" % (w["ntc_top"], ohm(c["ntc_fixed_ohm"]))))
    out += [diag, ""]
    # pins
    out += ["### Pins", "", "| function | GPIO | note |", "|---|---|---|",
            "| I2C%d SDA | %d | to %s and every ADS1115; 4.7 kΩ pull-up to 3.3 V |"
            % (p["i2c_id"], p["sda"], mon),
            "| I2C%d SCL | %d | %d Hz; 4.7 kΩ pull-up to 3.3 V |"
            % (p["i2c_id"], p["scl"], p["i2c_hz"]),
            "| charge FET | %d | active %s: gate driver input of the charge MOSFET |"
            % (p["charge_fet"], "high" if c["fet_active_high"] else "low"),
            "| discharge FET | %d | active %s: gate driver input of the discharge MOSFET |"
            % (p["discharge_fet"], "high" if c["fet_active_high"] else "low")]
    for k, x in enumerate(p["ntc_adc"]):
        out.append("| NTC %d | %d | ADC input, divider below%s |"
                   % (k + 1, x, "" if k < c["n_ntc"] else " (unused with n_ntc = %d)"
                      % c["n_ntc"]))
    for k, x in enumerate(p.get("tap_adc", ())):
        out.append("| on-chip tap %d | %d | only with CONFIG taps = \"adc\" |" % (k + 1, x))
    for k, x in enumerate(p["bleed"]):
        out.append("| bleed cell %d | %d | active %s: optocoupler LED of cell %d's bleeder |"
                   % (k + 1, x, "high" if c["bleed_active_high"] else "low", k + 1))
    out.append("")
    # I2C
    fs = SHUNT_FS_V[c["current_monitor"]]
    i_fs = fs / c["shunt_ohm"]
    out += ["### I2C devices and address straps", "",
            "| device | address | strap | what |", "|---|---|---|---|",
            "| %s | 0x%02X | %s | shunt monitor |" % (mon, c["current_addr"],
                                                     ina_strap(c["current_addr"]))]
    for j, a in enumerate(c["ads_addrs"]):
        out.append("| ADS1115 #%d | 0x%02X | ADDR to %s | taps %d-%d (AIN0-AIN3) |"
                   % (j + 1, a, ADS_STRAP.get(a, "?"), 4 * j + 1, 4 * j + 4))
    out += ["",
            "Power the ADS1115s from 5 V: an input may not go above VDD + 0.3 V and the taps "
            "reach %.1f V at %.1f V per cell; their I2C pins are open-drain, so the pull-ups "
            "stay at 3.3 V." % (TAP_FS_V, V_CELL_MAX), ""]
    # shunt
    out += ["### Shunt (low side)", "",
            "The shunt sits between pack − and the FETs, so the monitor sees the pack's "
            "current whatever the FETs do. Discharge current flows from IN+ (FET side) to "
            "IN− (pack − side); wired the other way, set CONFIG `invert_current`.", "",
            "| shunt | monitor | full scale | power at full scale |", "|---|---|---|---|",
            "| %g mΩ | %s (%.2f mV) | %.1f A | %.2f W |"
            % (c["shunt_ohm"] * 1000, mon, fs * 1000, i_fs, i_fs * i_fs * c["shunt_ohm"]), ""]
    # taps
    n_ads = 4 * len(c["ads_addrs"])
    n = min(16, n_ads, len(p["bleed"]))
    ratios = c["tap_ratios"] or [(k + 1) * V_CELL_MAX / TAP_FS_V for k in range(n)]
    out += ["### Cell tap dividers (ADS1115, 1-%dS)" % n, "",
            "Tap k is the top of cell k, measured against pack −; cell k's voltage is tap k "
            "minus tap k−1. Each divider is R top from the tap to the input and %s from the "
            "input to GND, sized so that %.1f V per cell reads %.1f V of the ADS1115's "
            "%.3f V range. A pack of n cells wires taps 1..n. Put the ratio of the "
            "resistors you fit (or better, measured with a meter) into CONFIG `tap_ratios`: "
            "a tap's ratio error multiplies the whole stack's voltage, so use 0.1 %% "
            "resistors at 8 cells and more. The lower cells carry the dividers of all taps "
            "above them (cell 1 carries all n): the currents below drain them unevenly, "
            "which the balancer has to make up; for a pack left idle for weeks, take "
            "resistors ten times larger (and measure `tap_ratios`: the ADS1115's input "
            "resistance of some MΩ then shifts them) or switch the dividers' GND with a "
            "MOSFET." % (ohm(rb) + "Ω", V_CELL_MAX, TAP_FS_V, c["ads_fsr_v"]), ""]
    out += tap_table(ratios, rb, c["ads_fsr_v"],
                     lambda k: "#%d AIN%d (0x%02X)" % (k // 4 + 1, k % 4, c["ads_addrs"][k // 4]))
    out.append("")
    if p.get("tap_adc"):
        m = len(p["tap_adc"])
        vref = c.get("adc_vref_v", w["supply_v"])
        adc_ratios = [(k + 1) * V_CELL_MAX / 3.0 for k in range(m)]
        out += ["### Cell tap dividers (on-chip ADC, CONFIG taps = \"adc\", 1-%dS)" % m, "",
                "Coarser than the ADS1115 and only up to %d cells: %.1f V per cell reads "
                "3.0 V." % (m, V_CELL_MAX), ""]
        out += tap_table(adc_ratios, rb, vref, lambda k: "GPIO %d" % p["tap_adc"][k])
        out.append("")
    # NTC
    sv = w["supply_v"]
    temps = (-20, 0, 25, 45, 60)
    out += ["### NTC thermistors", "",
            "%d used (CONFIG `n_ntc`), each in a divider: %s from %s to the ADC pin, the NTC "
            "(%s at %g °C, B = %d) from the pin to GND, 100 nF at the pin. A reading at "
            "either rail counts as an open or shorted sensor. Voltage at the pin:"
            % (c["n_ntc"], ohm(c["ntc_fixed_ohm"]) + "Ω", w["ntc_top"],
               ohm(c["ntc_r0_ohm"]) + "Ω", c["ntc_t0_c"], c["ntc_beta"]), "",
            "| " + " | ".join("%d °C" % t for t in temps) + " |",
            "|" + "---|" * len(temps),
            "| " + " | ".join("%.3f V" % ntc_volts(c, sv, t) for t in temps) + " |", ""]
    # FETs and bleeders
    out += ["### FET and bleed drivers", "",
            "Charge and discharge FETs are N-channel MOSFETs back to back in the low side "
            "(sources joined), each gate driven from its GPIO through a gate driver or a "
            "level shifter to 10-12 V gate drive; pins are made in their off state before any "
            "driver runs, so both paths are open at boot until protection closes them. "
            "Outputs are active %s (CONFIG `fet_active_high`)."
            % ("high" if c["fet_active_high"] else "low"), "",
            "A cell's bleeder is a resistor across the cell switched by an optocoupler or a "
            "photo-MOS relay whose LED the cell's bleed pin drives (active %s): cell k sits "
            "k−1 cells above GND, so a GPIO cannot switch it directly."
            % ("high" if c["bleed_active_high"] else "low"), ""]
    return out


def render():
    lines = ["# Wiring", "",
             "<!-- Made by `bms-host wiring` from boards/*/board.py: do not edit by hand. -->",
             "",
             "Pins, addresses and dividers for each board, computed from its pin map "
             "(`PINS`), its defaults (`CONFIG`) and `WIRING` in `boards/<board>/board.py`. "
             "Change a board there, then run `bms-host wiring` to remake this file.", ""]
    for b in BOARDS:
        lines += board_section(b)
    return "\n".join(lines).rstrip() + "\n"


def run(args):
    text = render()
    out = args.out
    if args.check:
        try:
            with open(out, encoding="utf-8") as f:
                old = f.read()
        except OSError:
            old = None
        if old != text:
            print("%s is out of date with boards/*/board.py: run `bms-host wiring`" % out,
                  file=sys.stderr)
            return 1
        print("%s matches the board files" % out)
        return 0
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UserError("cannot write %s: folder %s does not exist" % (out, folder))
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    print("wrote %s" % out)
    return 0
