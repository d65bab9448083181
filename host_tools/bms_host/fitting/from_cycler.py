"""`bms-host fit DIR` on a folder of cycler exports: what was found and what is missing,
the fit (fitting.measured), the calibration and its report."""
import re
import time
from pathlib import Path

from .. import UserError, cycler
from ..calibration import read_calibration, write_calibration
from . import inventory, measured
from .options import read_options
from .report import default_report_dir, summary_table, write_report
from .writer import build_calibration


def is_profile_folder(folder):
    """A folder of {profile}_{ambient}C.csv traces as bms-host synth writes them (the
    synthetic fit), rather than cycler exports."""
    names = [p.stem for p in Path(folder).glob("*.csv")]
    return all(any(re.match(r"^%s_m?\d+(\.\d+)?C$" % p, n) for n in names)
               for p in ("pocv_dis", "pocv_chg", "hppc"))


def run(args, ambients=None):
    t0 = time.perf_counter()
    if not Path(args.data).is_dir():
        raise UserError("data folder %s does not exist" % args.data)
    folder = cycler.read_folder(args.data, args.mapping)
    opts = read_options(args.options) if args.options else {}
    if args.tau1_max is not None:
        opts["tau1_range_s"] = [opts.get("tau1_range_s", [0.5])[0], args.tau1_max]
    tabs, tb, info = measured.fit_folder(args.data, ambients=ambients, folder=folder,
                                         opts=opts)
    cases = info["cases"]
    print("fit: found in %s:" % args.data)
    for line in inventory.found(folder, cases):
        print("  " + line)
    print("fit: %s; capacity %.4f Ah (%s)" % (info["ocv_source"], info["capacity_ah"],
                                              "; ".join(folder.notes) or "reader"))
    gaps = inventory.missing(folder, cases, info)
    print("fit: missing:" if gaps else "fit: nothing missing")
    for line in gaps:
        print("  " + line)
    fit_s = time.perf_counter() - t0
    results, sims = measured.evaluate_cases(cases, tb, info["capacity_ah"])
    folded = measured.fold_pulses(results)
    cell_id = args.cell_id or Path(args.data).resolve().name
    body = build_calibration(tb, info, cell_id, args.chemistry or "nmc", folded)
    write_calibration(body, args.out)
    read_calibration(args.out)
    print(summary_table(folded))
    print("fit: wrote %s: fit %.1f s, with validation %.1f s"
          % (args.out, fit_s, time.perf_counter() - t0))
    report = args.report
    if report is None and not args.no_report:
        report = default_report_dir(args.out, cell_id)
    if report:
        # plots of the long tests only (one per pulse would be a hundred)
        long_sims = {n: s for n, s in sims.items() if results[n]["profile"] != "pulse"}
        write_report(report, info, tb, folded, long_sims, fit_s, args.out)
        path = Path(report) / "summary.md"
        text = path.read_text()
        text += "\n".join(["", "## Measured data", "",
                            "Every test above was used by the fit (no held-out cases): "
                            "`make bench-real` fits on two ambients and tests SOC and "
                            "pulse voltage on the third. The floors quoted above are the "
                            "synthetic data's.", "", "## Data found", ""]
                          + ["- " + s for s in inventory.found(folder, cases)]
                          + ["", "## What is missing and what it costs", ""]
                          + ["- " + s for s in gaps] + [""])
        path.write_text(text)
        print("fit: report in %s (%.1f s total)" % (report, time.perf_counter() - t0))
    return 0
