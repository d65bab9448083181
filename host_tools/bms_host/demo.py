"""bms-host demo: the main job end to end on the simulated board.

synth (cached) -> fit -> simulated device playing a held-out PyBaMM drive cycle ->
push the calibration (hot reload) -> drive cycle in virtual time, faster than real
time -> SOC against truth: a table and a PNG."""
import csv
import os
import time

import numpy as np

from . import REPO, UserError

HELP = "run the whole job on the simulated board: synth, fit, push, drive cycle, SOC vs truth"
CHUNK_S = 120.0


def configure(p):
    p.add_argument("--out", default="out/demo", help="folder for calibration, table and plot")
    p.add_argument("--cell", default="lgm50")
    p.add_argument("--trace", default=None,
                   help="drive cycle with a soc_true column (default: held-out random "
                        "pulses at 25 degC)")
    p.add_argument("--seconds", type=float, default=3600.0,
                   help="virtual seconds of the drive cycle to run")


def _step(title):
    print("== %s" % title, flush=True)


def run(args):
    from tqdm import tqdm

    from .cli import main as cli_main
    from .device import Device
    from .evaluate import soc_table_arrays
    from .push import push
    from .sim import SimDevice

    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    data_dir = str(REPO / "data" / args.cell)
    trace = args.trace or os.path.join(data_dir, "random_25C.csv")
    cal = os.path.join(args.out, "%s.json" % args.cell)

    _step("synth: PyBaMM DFN traces for %s (cached)" % args.cell)
    if cli_main(["synth", "--cell", args.cell, "--out", data_dir]) != 0:
        raise UserError("synth failed")
    # the cell's fit options, as `make calibration` fits it
    options = REPO / "calibration" / "options" / ("%s.json" % args.cell)
    opt_args = ["--options", str(options)] if options.is_file() else []
    key = _fit_key(data_dir, options if opt_args else None)
    key_file = cal + ".key"
    if os.path.isfile(cal) and os.path.isfile(key_file) and open(key_file).read() == key:
        _step("fit: ECM + thermal calibration (cached: same data and fit code)")
    else:
        _step("fit: ECM + thermal calibration")
        if cli_main(["fit", data_dir, "--out", cal, "--report",
                     os.path.join(args.out, "report")] + opt_args):
            raise UserError("fit failed")
        with open(key_file, "w") as f:
            f.write(key)
    if not os.path.isfile(trace):
        raise UserError("drive cycle %s does not exist" % trace)

    _step("simulated device playing %s" % os.path.basename(trace))
    with SimDevice(trace=trace) as sim:
        sim.wait_ready()
        print("port: %s" % sim.port)
        _step("push %s" % cal)
        checksum = push(sim.port, cal)
        print("device runs calibration %s" % checksum[:16])
        _step("drive cycle: %.0f virtual seconds" % args.seconds)
        hist = []
        t_run = time.time()
        with Device(sim.port) as d:
            d.exec("import bms\nbms.sim.record_history()")
            done = 0.0
            with tqdm(total=args.seconds, unit="s", unit_scale=True, leave=False) as bar:
                while done < args.seconds:
                    step = min(CHUNK_S, args.seconds - done)
                    d.exec("bms.run(%r)" % step, timeout=600)
                    hist.extend(d.eval("bms.sim.take_history()", timeout=60))
                    done += step
                    bar.update(step)
            status = d.exec("bms.status()")
        wall = time.time() - t_run
    print(status, end="")
    print("%.0f virtual seconds in %.1f s: %.0fx faster than real time"
          % (args.seconds, wall, args.seconds / wall))

    truth = _truth(trace)
    est_csv = os.path.join(args.out, "soc_device.csv")
    with open(est_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_s", "soc", "soc_sigma", "temp_core_c", "soc_true"])
        for t, soc, sig, tc in hist:
            w.writerow(["%.1f" % t, "%.5f" % soc, "%.5f" % sig, "%.2f" % tc,
                        "%.5f" % truth(t)])
    png = os.path.join(args.out, "soc.png")
    table = soc_table_arrays([h[0] for h in hist], [h[1] for h in hist],
                             [h[2] for h in hist], [truth(h[0]) for h in hist], png)
    print(table)
    print("plot: %s\ndemo done in %.0f s" % (png, time.time() - t0))
    return 0


def _fit_key(data_dir, options=None):
    """Hash of what the fit depends on: the dataset, the fit options and the fit and model
    code."""
    import hashlib

    h = hashlib.sha256()
    for path in (os.path.join(data_dir, "manifest.json"),  # holds every CSV's hash
                 REPO / "host_tools" / "bms_host" / "fit.py",
                 *sorted((REPO / "host_tools" / "bms_host" / "fitting").glob("*.py")),
                 REPO / "host_tools" / "bms_host" / "ecm.py",
                 REPO / "host_tools" / "bms_host" / "calibration.py",
                 REPO / "device" / "bms" / "model.py",
                 REPO / "device" / "bms" / "calfile.py") + ((options,) if options else ()):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _truth(trace):
    from .traces import read_trace

    tr = read_trace(trace)
    if "soc_true" not in tr:
        raise UserError("drive cycle %s has no soc_true column to compare with" % trace)
    t = tr["time_s"] - tr["time_s"][0]
    s = tr["soc_true"]
    return lambda x: float(np.interp(x, t, s))
