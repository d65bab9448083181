"""bms-host bench zero: what the current sensor's zero (both FETs open) saves in a rest.

## Current-sensor zero

`make bench-zero` (or `bms-host bench zero [--hours H]`) runs the BMS application on the
simulated board (the device code, in CPython, on the calibrated model as the plant: a
simulation, not a measured cell) with a current sensor that reads +30 mA at no current.
One cell rests at SOC 0.6, for each calibration (the LFP, whose OCV is flat there, and
the LG M50). After the boot the filter is put on the plant's SOC (a known start, as
after a full charge), then either the maker asks for the zero (`bms.zero_current()`:
both FETs open until the device has read the sensor's zero, bms/currentzero.py, about
12 s) or not; then the pack rests for H hours (default 12, a night) with the FETs
closed. The table shows the offset each filter holds at the end,
the SOC error and sigma against the plant's SOC, and what counting the offset gives.

Floors (with the zero): the filter's offset within 2 mA of the sensor's and the SOC
within 0.5 points of the plant's, on both cells.
"""
import argparse
import sys

from . import BOARDS_DIR, CALIBRATION_DIR, use_device_code

OFFSET_A = 0.030
SOC0 = 0.6
START_SIGMA = 0.01
CELLS = ("lfp", "lgm50")
FLOOR_OFFSET_MA = 2.0
FLOOR_SOC_PTS = 0.5


def run_case(path, zero, hours):
    """(zero read mA, offset the filter holds mA, SOC error and sigma at the end, in
    points, and what counting the offset from the known start gives, in points)."""
    from bms import calfile
    from sim import board as simboard
    from sim import runner

    cal = calfile.load(str(path))[0]   # the App compacts what it is given: one each
    board = simboard.SimBoard(cells=1, cal=cal, soc=SOC0)
    board.current_offset_a = OFFSET_A
    r = runner.start(board, cal=cal, faultlog_path=None)
    app = r.app
    r.run(5.0)
    c = app.cells[0]
    # a known start (as after a full charge's re-sync): what follows is the offset's
    c.init(board.plant.cells[0].soc, c.temp_core_c(), START_SIGMA)
    t0_ms = app.now_ms
    if zero:
        said = app.zero_current()
        if app.zero_since is None:      # refused: the sentence says why
            raise RuntimeError("bench zero: " + said)
    r.run(15.0)
    if not (app.fet_chg and app.fet_dsg):
        raise RuntimeError("bench zero: the FETs did not close again after the zero")
    r.run(hours * 3600.0, 30.0)
    err = 100.0 * (c.soc() - board.plant.cells[0].soc)
    cc = -100.0 * OFFSET_A * (app.now_ms - t0_ms) / 3.6e6 / c.nominal_ah
    return app.zero.last_ma, c.bias_a() * 1000.0, err, 100.0 * c.soc_sigma(), cc


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bms-host bench zero", description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=12.0, help="rest after the zero (h)")
    args = ap.parse_args(argv)
    if not 0.0 < args.hours <= 48.0:
        print("error: --hours takes 0 to 48 hours, got %g" % args.hours, file=sys.stderr)
        return 2
    use_device_code()
    if str(BOARDS_DIR) not in sys.path:
        sys.path.insert(0, str(BOARDS_DIR))
    import bms.compat  # noqa: F401  (CPython's time gets the ticks_* the drivers use)

    print("Current-sensor zero: 1 cell at SOC %.0f %%, sensor offset %+.0f mA, %g h rest with "
          "the FETs closed (simulated board, the calibrated model as the plant)"
          % (100 * SOC0, 1000 * OFFSET_A, args.hours))
    print("%-6s | %-15s | %7s | %9s | %9s | %9s | %10s" % (
        "cell", "before the rest", "zero mA", "filter mA", "SOC error", "SOC sigma",
        "cc error"))
    ok = True
    for name in CELLS:
        for zero in (True, False):
            read, held, err, sig, cc = run_case(CALIBRATION_DIR / (name + ".json"), zero,
                                                args.hours)
            print("%-6s | %-15s | %7s | %9.1f | %+9.2f | %9.2f | %+10.2f" % (
                name, "zero_current()" if zero else "FETs closed",
                "%.1f" % read if read is not None else "-", held, err, sig, cc))
            if zero:
                ok = ok and abs(held - 1000 * OFFSET_A) <= FLOOR_OFFSET_MA \
                    and abs(err) <= FLOOR_SOC_PTS
    print("(SOC in points against the plant's, the filter started on it before the event; "
          "zero: the sensor's mean with both FETs open; filter: the offset each cell's "
          "filter holds at the end; cc: counting the offset over the same time)")
    print("%s  with the zero: the offset within %g mA and the SOC within %g points on every "
          "cell" % ("PASS" if ok else "FAIL", FLOOR_OFFSET_MA, FLOOR_SOC_PTS))
    return 0 if ok else 1
