"""bms-host bench real: the fit and the filter on a real cell, one temperature held out.

`make bench-real` (or `bms-host bench real [--data DIR] [--leave-out 25,45] [--drop ...]`)
fits the measured LG M50 folder (../shared/data/lgm50_measured, cycler exports as they
are) on two of its three ambients (0, 25, 45 degC) and tests on the third, which the fit
never saw:

- SOC on every rate test there: the device's estimator replays the file as measured,
  started 20 SOC points low (a wrong boot); the reference is coulomb counting with the
  measured capacity (the reader's reference, C/10 at 25 degC) from the rested start, its
  SOC read off the measured OCV table. RMSE and max |error| after the first 300 s, the
  3-sigma band's coverage of the reference, the mean sigma and RMSE / mean sigma (1 =
  the band is as wide as the error; below 1 wider than needed);
- the voltage of every 10 s pulse there, simulated open loop from the rested voltage
  before it: RMSE per file, median and worst.

Floors, with 25 or 45 degC held out (interpolation and a short extrapolation): SOC RMSE
<= 1.5 % and max <= 4 % and coverage >= 90 % on every rate test including 2C; pulse
RMSE median <= 20 mV. With 0 degC held out the tables below 25 degC are extrapolated:
shown, not counted.

--drop removes files before the fit (glob on the relative path, or a kind: rate, pulse,
ocv_table, ...), e.g. `--drop pulse` or `--drop 'rate/*_2C.csv'`: what a test buys,
measured (docs/calibrate-your-cell.md).
"""
import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import REPO, UserError, cycler, use_device_code
from .calibration import encode
from .evaluate import plot, soc_metrics
from .fitting import measured
from .fitting.options import read_options
from .fitting.validation import evaluate
from .fitting.writer import build_calibration

DATA_DIR = REPO.parent / "shared" / "data" / "lgm50_measured"
AMBIENTS = (0.0, 25.0, 45.0)
COUNTED = (25.0, 45.0)
SOC_OFFSET = 0.20
SKIP_S = 300.0
FLOOR_RMSE = 1.5
FLOOR_MAX = 4.0
FLOOR_COVER = 90.0
FLOOR_PULSE_MV = 20.0


def configure_args(argv):
    p = argparse.ArgumentParser(prog="bms-host bench real", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA_DIR), help="folder of cycler exports")
    p.add_argument("--leave-out", default=",".join("%g" % a for a in AMBIENTS),
                   help="ambients to hold out, one fit each (default %(default)s)")
    p.add_argument("--drop", action="append", default=[], metavar="GLOB|KIND",
                   help="leave these files out of the fit (repeatable)")
    p.add_argument("--options", default=None, metavar="FILE",
                   help="fit options over the measured defaults (JSON object)")
    p.add_argument("--backend", default=None, help="filter backend (default: the fastest)")
    p.add_argument("--json", default=None, help="also write the results here (JSON)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write a SOC plot per rate test here (PNG)")
    return p.parse_args(argv)


def dropped(test, drops):
    return any(test.kind == d or fnmatch.fnmatch(test.name, d) for d in drops)


def calibration_for(tb, info, cell_id):
    """The calibration dict exactly as the device reads it (encoded, checksummed,
    validated)."""
    use_device_code()
    from bms import calfile
    body = build_calibration(tb, info, cell_id, "nmc", {})
    return calfile.loads(encode(body))[0]


def run_filter(cal, cols, soc0, backend=None):
    """The device's estimator over one measured file. Returns soc, sigma arrays and how
    many steps failed numerically (each re-starts the filter around its last SOC)."""
    use_device_code()
    from bms import backends, estimator
    est = estimator.CellEstimator(cal, backends.make(backend))
    t = cols["time_s"].tolist()
    cur = cols["current_a"].tolist()
    vol = cols["voltage_v"].tolist()
    tsm = cols["temperature_c"].tolist()
    amb = cols["ambient_c"].tolist()
    n = len(t)
    soc = np.empty(n)
    sig = np.empty(n)
    est.init(soc0, tsm[0])
    soc[0], sig[0] = est.soc(), est.soc_sigma()
    for k in range(1, n):
        est.step(cur[k], vol[k], tsm[k], amb[k], t[k] - t[k - 1])
        soc[k] = est.soc()
        sig[k] = est.soc_sigma()
    return soc, sig, est.errors


def rate_result(cal, case, backend=None, plots=None):
    cols = case.cols
    truth = cols["soc_true"]
    soc0 = min(1.0, max(0.0, float(truth[0]) - SOC_OFFSET))
    soc, sig, errors = run_filter(cal, cols, soc0, backend)
    keep = cols["time_s"] - cols["time_s"][0] >= SKIP_S
    m = soc_metrics(soc, sig, truth, keep)
    m["sigma"] = 100.0 * float(np.mean(sig[keep]))
    m["ratio"] = m["rmse"] / m["sigma"] if m["sigma"] > 0 else float("nan")
    m["rate_c"] = case.test.rate_c
    m["name"] = case.test.name
    m["resets"] = errors
    if plots:
        Path(plots).mkdir(parents=True, exist_ok=True)
        plot(cols["time_s"], soc, sig, truth, Path(plots) / (case.name + ".png"))
    return m


def held_out(folder, path, fit_t, test_t, drops, backend=None, log=None, plots=None,
             opts=None):
    """Fit on fit_t (the folder less drops), test on test_t: (rate rows, pulse rmses)."""
    use = cycler.Folder([t for t in folder if not dropped(t, drops)],
                        capacity_ah=folder.capacity_ah, notes=[])
    quiet = log or (lambda *a: None)
    tabs, tb, info = measured.fit_folder(path, ambients=list(fit_t), log=quiet,
                                         folder=use, opts=opts)
    cal = calibration_for(tb, info, "held-out")
    # the test files from the whole folder, at full resolution; SOC from the measured
    # OCV, never from the fit's
    grid = np.asarray(info["opts"]["soc_grid"], dtype=float)
    ocv_rows, _ = measured.measured_ocv(folder, folder.capacity_ah, grid)

    def ocv_at(temp_c):
        return grid, ocv_rows[min(ocv_rows, key=lambda a: abs(a - temp_c))]

    cases = measured.make_cases(folder, folder.capacity_ah, ocv_at, [test_t],
                                thin_rows=False)
    rates = [rate_result(cal, c, backend, plots) for c in cases if c.profile == "rate"]
    pulses = [evaluate(c, tb, folder.capacity_ah)[0]["rmse_mv"] for c in cases
              if c.profile == "pulse"]
    return rates, pulses


def ok(v, floor, above=False):
    return v >= floor if above else v <= floor


def print_table(res, out=sys.stdout):
    print("| held out | test | SOC RMSE % | max % | 3-sigma coverage % | mean sigma % "
          "| RMSE / sigma | filter resets | floors |", file=out)
    print("|---|---|---|---|---|---|---|---|---|", file=out)
    for T, (rates, pulses) in res:
        counted = any(abs(T - c) < 1e-6 for c in COUNTED)
        for m in rates:
            good = ok(m["rmse"], FLOOR_RMSE) and ok(m["max"], FLOOR_MAX) \
                and ok(m["cover"], FLOOR_COVER, above=True)
            verdict = ("pass" if good else "MISS") if counted else \
                "extrapolated (%s)" % ("would pass" if good else "not counted")
            print("| %g degC | %s (%.2fC) | %.2f | %.2f | %.1f | %.2f | %.2f | %d | %s |"
                  % (T, m["name"], m["rate_c"] or 0.0, m["rmse"], m["max"], m["cover"],
                     m["sigma"], m["ratio"], m["resets"], verdict), file=out)
        if pulses:
            med = float(np.median(pulses))
            good = ok(med, FLOOR_PULSE_MV)
            verdict = ("pass" if good else "MISS") if counted else "extrapolated"
            print("| %g degC | %d pulses: voltage RMSE median %.1f mV, worst %.1f mV "
                  "| | | | | | | %s |" % (T, len(pulses), med, max(pulses), verdict), file=out)
    print("\nFloors with 25 or 45 degC held out: SOC RMSE <= %g %%, max <= %g %%, coverage "
          ">= %g %% (after %g s; filter started %d points low), pulse voltage RMSE median "
          "<= %g mV." % (FLOOR_RMSE, FLOOR_MAX, FLOOR_COVER, SKIP_S, 100 * SOC_OFFSET,
                         FLOOR_PULSE_MV), file=out)


def misses(res):
    bad = []
    for T, (rates, pulses) in res:
        if not any(abs(T - c) < 1e-6 for c in COUNTED):
            continue
        for m in rates:
            if not (ok(m["rmse"], FLOOR_RMSE) and ok(m["max"], FLOOR_MAX)
                    and ok(m["cover"], FLOOR_COVER, above=True)):
                bad.append(m["name"])
        if pulses and not ok(float(np.median(pulses)), FLOOR_PULSE_MV):
            bad.append("pulses at %g degC" % T)
    return bad


def main(argv=None):
    args = configure_args(argv)
    try:
        leave = [float(a) for a in args.leave_out.split(",") if a.strip()]
    except ValueError:
        raise UserError("--leave-out must be comma-separated ambients, e.g. 25,45") from None
    folder = cycler.read_folder(args.data)
    opts = read_options(args.options) if args.options else None
    have = sorted({t.ambient_c for t in folder if t.ambient_c is not None
                   and t.kind in measured.FIT_KINDS})
    res = []
    t0 = time.perf_counter()
    for T in leave:
        if not any(abs(T - h) < 1e-6 for h in have):
            raise UserError("no tests at %g degC in %s (it has %s)"
                            % (T, args.data, ", ".join("%g" % h for h in have)))
        fit_t = [h for h in have if abs(h - T) > 1e-6]
        rates, pulses = held_out(folder, args.data, fit_t, T, args.drop, args.backend,
                                 plots=args.plots, opts=opts)
        res.append((T, (rates, pulses)))
        print("bench real: %g degC held out (fit on %s%s): %.0f s"
              % (T, ", ".join("%g" % h for h in fit_t),
                 "; dropped " + ", ".join(args.drop) if args.drop else "",
                 time.perf_counter() - t0), file=sys.stderr)
    print_table(res)
    bad = misses(res)
    if bad:
        print("bench real: below the floors: %s" % ", ".join(bad))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"held_out": T, "rates": r, "pulses_mv": p} for T, (r, p) in res], f,
                      indent=1)
    return 0
