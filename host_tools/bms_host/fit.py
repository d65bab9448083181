"""`bms-host fit DIR --out CAL.json`: fit the device's cell model to traces.

The model is device/bms/model.py: OCV(soc, T) - R0*i - v1 - v2 with two RC pairs, every
parameter a table over SOC x core temperature (bilinear), and a two-node thermal network.
The steps live in the `fitting` package, all deterministic:

1. capacity (fitting.ocv): the charge of the C/20 discharge at 25 degC (the SOC reference
   of soc_true);
2. OCV(soc, T) (fitting.ocv): mean of the C/20 charge and discharge curves per
   temperature, anchored at the rested first rows (full and empty);
3. first estimates per HPPC step (SOC level) and temperature (fitting.pulses): R0
   (discharge), R0 (charge), R1, tau1, R2, tau2 by variable projection (taus nonlinear,
   the rest linear least squares);
4. global refinement (fitting.problem, fitting.refine): with the time constants fixed, the
   terminal voltage is linear in the OCV, R0, R0c, R1 and R2 tables, so all of them are
   refined at once by bounded linear least squares against the fit-role traces (sample by
   sample, at the measured core temperature), with extra rows that drive the MEAN error of
   every trace, split by current direction, to zero (SOC accuracy rests on bias, not on
   RMS), smoothness along SOC and temperature, and a weak pull to the C/20 OCV; around it
   the exchange current by variable projection;
5. thermal (fitting.thermal): the four parameters of the core-surface-ambient network by
   nonlinear least squares on the surface (and, lightly weighted, core) temperature of the
   fit traces, driven by the model's own heat; then, where the traces carry the core
   temperature, the ohmic heat's own table Rh, the heated fractions of v1 and v2 and the
   network again by equation error, the core's heat capacity held from the first pass;
6. validation (fitting.validation): every case re-simulated open loop, fully coupled
   (model thermal state drives the tables), exactly as the device runs it; the report
   (fitting.report) and the calibration body (fitting.writer).
"""
import sys
import time
from pathlib import Path

from . import UserError
from .calibration import read_calibration, write_calibration
from .fitting import from_cycler
from .fitting.from_cycler import is_profile_folder
from .fitting.options import FIT_PROFILES, read_options, TAU1_RANGE, TAU2_RANGE
from .fitting.pipeline import fit_dataset
from .fitting.report import default_report_dir, summary_table, write_report
from .fitting.validation import evaluate, floor_misses
from .fitting.writer import LIMITS, build_calibration, guess_chemistry


HELP = "fit the cell model (OCV, R0, two RC pairs, thermal) to traces; write a calibration"


def configure(p):
    p.add_argument("data", metavar="DIR", nargs="?",
                   help="folder of traces: cycler exports as they are (rate tests, pulses, "
                   "OCV, any vendor's columns), or {profile}_{ambient}C.csv from bms-host "
                   "synth")
    p.add_argument("--mapping", default=None, metavar="FILE",
                   help="cycler exports: JSON mapping over what the reader guesses (kinds, "
                   "ambients, columns, sign; default DIR/cycler.json if present)")
    p.add_argument("--out", required=True, help="calibration file to write (JSON)")
    p.add_argument("--report", default=None,
                   help="folder for the validation report (PNG plots, summary.md); default "
                   "reports/<cell id>/ next to the calibration file")
    p.add_argument("--no-report", action="store_true", help="write no report folder")
    p.add_argument("--cell-id", default=None, help="cell id in the file (default: from the data)")
    p.add_argument("--chemistry", choices=sorted(LIMITS), default=None,
                   help="cell chemistry (default: from the manifest, else nmc)")
    p.add_argument("--ambients", default=None,
                   help="comma-separated subset of ambients to use, e.g. 25,0 (default: all)")
    p.add_argument("--fit-profiles", default=",".join(FIT_PROFILES),
                   help="comma-separated profiles the fit uses (default %(default)s); every "
                   "other profile is held out for validation, whatever the manifest says")
    p.add_argument("--tau1-max", type=float, default=None, metavar="S",
                   help="upper bound in seconds of the fast RC pair's time constant "
                   "(default %g; the slow pair's starts at %g s)" % (TAU1_RANGE[1],
                                                                   TAU2_RANGE[0]))
    p.add_argument("--options", default=None, metavar="FILE",
                   help="JSON object of fit options over the defaults "
                   "(fitting.options.default_options; e.g. calibration/options/lgm50.json); "
                   "--tau1-max wins over it")
    p.add_argument("--no-validate", action="store_true",
                   help="skip re-simulating the held-out cases")
    p.add_argument("--from-db", metavar="DB", default=None,
                   help="refit from field telemetry (the SQLite file or postgresql:// URL "
                   "bms-host record writes) instead of synthetic data: needs --device and "
                   "--calibration (the base)")
    p.add_argument("--device", default=None, help="device id in the telemetry database")
    p.add_argument("--calibration", default=None, help="base calibration for --from-db")


def run(args):
    if args.from_db:
        from . import refit
        if not args.device or not args.calibration:
            raise UserError("--from-db needs --device ID and --calibration BASE.json")
        refit.run_from_db(args.from_db, args.device, args.calibration, args.out)
        return 0
    if not args.data:
        raise UserError("give the folder of traces to fit (e.g. data/lgm50), or --from-db")
    t0 = time.perf_counter()
    ambients = None
    if args.ambients:
        try:
            ambients = [float(a) for a in args.ambients.split(",") if a.strip()]
        except ValueError:
            raise UserError("--ambients must be comma-separated numbers, e.g. 25,0") from None
    if not is_profile_folder(args.data):
        return from_cycler.run(args, ambients)
    fit_profiles = [f.strip() for f in args.fit_profiles.split(",") if f.strip()]
    if not fit_profiles:
        raise UserError("--fit-profiles needs at least one profile, e.g. %s"
                        % ",".join(FIT_PROFILES))
    opts = dict(read_options(args.options) if args.options else {},
                fit_profiles=fit_profiles)
    if args.tau1_max is not None:
        if not TAU1_RANGE[0] < args.tau1_max <= TAU2_RANGE[1]:
            raise UserError("--tau1-max must be a time constant in seconds from %g to %g"
                            % (TAU1_RANGE[0], TAU2_RANGE[1]))
        opts["tau1_range_s"] = [TAU1_RANGE[0], args.tau1_max]
    tabs, tb, info = fit_dataset(args.data, ambients, opts)
    fit_only_s = time.perf_counter() - t0
    manifest = info["manifest"]
    chem = args.chemistry or guess_chemistry(manifest, args.data)
    cell_id = args.cell_id or manifest.get("cell") or Path(args.data).resolve().name
    results, sims = {}, {}
    for c in info["cases"]:
        if args.no_validate and c.role != "fit":
            continue
        m, sim, err = evaluate(c, tb, info["capacity_ah"])
        m["role"] = c.role
        m["ambient_c"] = c.ambient_c
        m["profile"] = c.profile
        results[c.name] = m
        sims[c.name] = (sim, err)
    body = build_calibration(tb, info, cell_id, chem, results)
    write_calibration(body, args.out)
    read_calibration(args.out)  # round trip through the device's validator
    fit_s = time.perf_counter() - t0
    print(summary_table(results))
    print("fit: wrote %s: fit %.1f s, with validation %.1f s" % (args.out, fit_only_s, fit_s))
    report = args.report
    if report is None and not args.no_report:
        report = default_report_dir(args.out, cell_id)
    if report:
        write_report(report, info, tb, results, sims, fit_s, args.out)
        print("fit: report in %s (%.1f s total)" % (report, time.perf_counter() - t0))
    bad, stress = floor_misses(results)
    if bad:
        print("fit: held-out cases above the floors: %s" % ", ".join(bad), file=sys.stderr)
    if stress:
        print("fit: stress cases above the floors' numbers (not counted): %s"
              % ", ".join(stress), file=sys.stderr)
    return 0
