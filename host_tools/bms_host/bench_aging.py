"""bms-host bench aging: state of health on aged cells living a maker's use.

## Ageing

`make bench-aging` (or `bms-host bench aging [--backend B] [--cases ...]`) replays the
multi-day traces of `data/lgm50_aged<LEVEL>/use_<T>C.csv` (`bms-host synth --cell lgm50
--aged-use 100,95,87,80 --out data`: the LG M50 aged by parameter changes to ~95, 87 and
80 % of its capacity with the resistance growth that goes with them, and the fresh cell,
each in 4 days of partial cycles between ~30 and ~80 % SOC with long rests and a full CV
charge every second day, at 25 and 10 degC; samples every 1 s under load, 10 s charging,
30 s at rest) through the device estimator
with the FRESH calibration (calibration/lgm50.json), as a sensor would see them: 5 mV,
20 mA (+30 mA offset) and 0.1 degC noise, seeded. The filter boots from the first
sample, as a device does. Half-way (day 2, 02:00, in the night's rest) the device
reboots: the state of health is saved to a file by the device's store (bounded change
per day) with the SOC, and a new estimator restores them and boots from the stored SOC
unless the first voltage contradicts it.

Floors: on every aged case the capacity SOH stays within +-2 points of the true ratio
(the cell's C/20 capacity at 25 degC over the fresh cell's) from day 3 to the end; SOC
RMSE <= 1.0 % over the last day (true SOC against the cell's own capacity); on the fresh
cell the SOH stays within +-2 points of 1.0 from day 3 on (no drift). Shown without
floors: the SOH sigma, the share of the time after day 3 that the 3-sigma band covers the
true ratio, the resistance factor against the true 10 s pulse-resistance growth, the
number of capacity measurements, the 3-sigma coverage of the SOC.
"""
import argparse
import os
import sys
import tempfile
import time
import zlib

import numpy as np

from . import CALIBRATION_DIR, REPO, use_device_code
from .bench_accuracy import pick_backend

LEVELS = (100, 95, 87, 80)
AMBIENTS = (25, 10)
SEED = 20261203
V_NOISE = 0.005
I_NOISE = 0.020
I_OFFSET = 0.030
T_NOISE = 0.1
DAY_S = 86400.0
SOH_FROM_S = 3 * DAY_S
REBOOT_S = 2 * DAY_S + 2 * 3600.0
FLOOR_SOH = 0.02
FLOOR_RMSE = 1.0


def case_name(level, amb):
    return "aged%d_%dC" % (level, amb)


def trace_path(level, amb):
    return REPO / "data" / ("lgm50_aged%d" % level) / ("use_%dC.csv" % amb)


def truth_of(level):
    import json
    man = json.loads((REPO / "data" / ("lgm50_aged%d" % level) / "manifest.json").read_text())
    return man["capacity_retention"], man["resistance_growth"]


def measure(tr, seed):
    rng = np.random.default_rng(seed)
    n = len(tr["time_s"])
    return {"time_s": tr["time_s"],
            "current_a": tr["current_a"] + I_OFFSET + rng.normal(0.0, I_NOISE, n),
            "voltage_v": tr["voltage_v"] + rng.normal(0.0, V_NOISE, n),
            "temperature_c": tr["temperature_c"] + rng.normal(0.0, T_NOISE, n),
            "ambient_c": tr["ambient_c"]}


def run_case(cal, level, amb, backend, reboot=True):
    from .traces import read_trace

    use_device_code()
    from bms import backends, estimator, sohstore

    tr = read_trace(trace_path(level, amb))
    meas = measure(tr, SEED + zlib.crc32(case_name(level, amb).encode()))
    t = meas["time_s"].tolist()
    cur = meas["current_a"].tolist()
    vol = meas["voltage_v"].tolist()
    tsm = meas["temperature_c"].tolist()
    amb_c = meas["ambient_c"].tolist()
    n = len(t)
    out = {k: np.empty(n) for k in ("soc", "sigma", "soh", "soh_sigma", "r0", "r0_sigma")}
    from bms import soh
    tmpdir = tempfile.mkdtemp(prefix="bench-aging-")
    store = sohstore.SohStore(os.path.join(tmpdir, "soh.json"))
    checksum = "bench"

    def boot(k):
        # as the App boots: what flash keeps (SOH, and the SOC since it keeps that too),
        # then the first measurement
        e = estimator.CellEstimator(cal, backends.make(backend))
        store.restore([e], checksum)
        e.init_from_measurement(cur[k], vol[k], tsm[k])
        return e

    est = boot(0)
    rebooted = None
    t0 = time.perf_counter()
    for k in range(n):
        if k:
            dt = t[k] - t[k - 1]
            est.step(cur[k], vol[k], tsm[k], amb_c[k], dt)
            store.tick([est], dt, checksum)
            if reboot and rebooted is None and t[k] >= REBOOT_S:
                store.save([est], checksum)
                before = est.cap.capacity_ah
                soc_before = est.soc()
                est = boot(k)
                rebooted = (before, est.cap.capacity_ah, 100.0 * (soc_before - tr["soc_true"][k]),
                            100.0 * (est.soc() - tr["soc_true"][k]), 100.0 * est.soc_sigma(),
                            est.boot_from)
        out["soc"][k] = est.soc()
        out["sigma"][k] = est.soc_sigma()
        out["soh"][k] = est.soh()
        out["soh_sigma"][k] = est.cap.soh_sigma()
        out["r0"][k] = est.r0_growth()
        out["r0_sigma"][k] = est.cap.r_sigma(est)
    wall = time.perf_counter() - t0
    for name in ("soh.json", "soh.json.tmp"):
        try:
            os.remove(os.path.join(tmpdir, name))
        except OSError:
            pass
    os.rmdir(tmpdir)
    cap_true, r_true = truth_of(level)
    tt = np.asarray(t)
    late = tt >= SOH_FROM_S
    last = tt >= tt[-1] - DAY_S
    err = 100.0 * (out["soc"] - tr["soc_true"])
    soh_err = out["soh"][late] - cap_true
    return {
        "level": level, "amb": amb, "days": tt[-1] / DAY_S, "cap_true": cap_true,
        "r_true": r_true, "soh_3d": float(out["soh"][late][0]),
        "soh_end": float(out["soh"][-1]), "soh_sigma_end": float(out["soh_sigma"][-1]),
        "soh_maxerr": float(np.max(np.abs(soh_err))),
        "soh_cover": 100.0 * float(np.mean(np.abs(soh_err) <= 3.0 * out["soh_sigma"][late])),
        "rmse": float(np.sqrt(np.mean(err[last] ** 2))),
        "max": float(np.max(np.abs(err[last]))),
        "cover": 100.0 * float(np.mean(np.abs(err[last]) <= 300.0 * out["sigma"][last])),
        "r0_end": float(out["r0"][-1]), "r0_sigma_end": float(out["r0_sigma"][-1]),
        "r10_end": soh.pulse_growth(est),
        "pairs": est.cap.pairs, "rebooted": rebooted, "wall_s": wall,
        "us": 1e6 * wall / max(1, n - 1), "errors": est.errors,
    }


def floors(r):
    f = {"soh": r["soh_maxerr"] <= FLOOR_SOH, "rmse": r["rmse"] <= FLOOR_RMSE}
    return f


HEADER = ("case", "days", "true", "SOH@3d", "SOH end", "sigma", "max|err|", "cov3s",
          "pairs", "SOC rmse", "max", "cov3s", "R10 true", "R10 est", "R0 fac", "sigma",
          "floors")


def _row(r):
    f = floors(r)
    return (case_name(r["level"], r["amb"]), "%.1f" % r["days"], "%.3f" % r["cap_true"],
            "%.3f" % r["soh_3d"], "%.3f" % r["soh_end"], "%.3f" % r["soh_sigma_end"],
            "%.3f" % r["soh_maxerr"], "%.0f" % r["soh_cover"], "%d" % r["pairs"],
            "%.2f" % r["rmse"], "%.2f" % r["max"], "%.0f" % r["cover"],
            "%.3f" % r["r_true"], "%.3f" % r["r10_end"], "%.3f" % r["r0_end"],
            "%.3f" % r["r0_sigma_end"],
            " ".join("%s:%s" % (k, "ok" if v else "FAIL") for k, v in f.items()))


def print_table(results, out=None):
    out = out or sys.stdout
    rows = [HEADER] + [_row(r) for r in results]
    widths = [max(len(r[k]) for r in rows) for k in range(len(HEADER) - 1)]
    for r in rows:
        out.write(" | ".join(c.rjust(widths[k]) if k else c.ljust(widths[k])
                             for k, c in enumerate(r[:-1])) + " | " + r[-1] + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bms-host bench aging",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["native", "ulab", "python"], default=None,
                    help="filter backend (default: native if built, else python)")
    ap.add_argument("--cases", nargs="+", default=None,
                    help="cases to run, e.g. aged80_25C aged100_10C (default: all)")
    ap.add_argument("--no-reboot", action="store_true", help="no reboot half-way")
    ap.add_argument("--calibration", default=str(CALIBRATION_DIR / "lgm50.json"))
    args = ap.parse_args(argv)
    backend = pick_backend(args.backend)
    if backend is None:
        return 2
    from bms import calfile
    cases = [(lv, a) for lv in LEVELS for a in AMBIENTS]
    if args.cases:
        names = {case_name(lv, a): (lv, a) for lv, a in cases}
        bad = [c for c in args.cases if c not in names]
        if bad:
            print("error: unknown case %s: choose from %s" % (bad[0], " ".join(names)),
                  file=sys.stderr)
            return 2
        cases = [names[c] for c in args.cases]
    for lv, a in cases:
        if not trace_path(lv, a).is_file():
            print("error: no trace %s: run `bms-host synth --cell lgm50 --aged-use "
                  "100,95,87,80 --out data`" % trace_path(lv, a), file=sys.stderr)
            return 2
    cal = calfile.load(args.calibration)[0]
    print("Ageing: LG M50 (PyBaMM DFN) aged to ~95/87/80 %% and fresh, %d days of a maker's "
          "use | fresh calibration | backend %s | noise 5 mV, 20 mA, +30 mA offset | reboot "
          "at day %.2f%s" % (4, backend, REBOOT_S / DAY_S, " (off)" if args.no_reboot else ""))
    results = []
    for lv, a in cases:
        results.append(run_case(cal, lv, a, backend, reboot=not args.no_reboot))
    print_table(results)
    print("(true = C/20 capacity at 25 degC over the fresh cell's; SOH@3d, max|err| and "
          "cov3s: capacity SOH from day 3 to the end, cov3s = share inside 3 sigma; SOC "
          "columns over the last day; R10 = growth of the 10 s 1C pulse resistance at 50 % "
          "and 25 degC, true (PyBaMM) and as the RLS factor on R0 (R0 fac, with its sigma) "
          "makes it with the calibration's RC pairs and kinetics)")
    boots = ["%s %.3f/%.3f" % (case_name(r["level"], r["amb"]), r["rebooted"][0],
                               r["rebooted"][1]) for r in results if r["rebooted"]]
    if boots:
        print("reboot at day %.2f, capacity Ah in memory / restored from the flash file "
              "(at most 10 %% of nominal per day from the calibration): %s"
              % (REBOOT_S / DAY_S, ", ".join(boots)))
        socs = ["%s %+.2f/%+.2f +- %.2f (%s)" % ((case_name(r["level"], r["amb"]),)
                                                 + tuple(r["rebooted"][2:]))
                for r in results if r["rebooted"]]
        print("SOC error at the reboot (points), in memory / right after the boot +- its "
              "sigma (started from): %s" % ", ".join(socs))
    print("time per step: %.1f us (backend %s, with SOH)"
          % (sum(r["us"] for r in results) / len(results), backend))
    ok_all = True
    print("\nFloors:")
    for key, text in (("soh", "capacity SOH within +-%d points of the truth from day 3 on"
                       % round(100 * FLOOR_SOH)),
                      ("rmse", "SOC RMSE <= %.1f %% over the last day" % FLOOR_RMSE)):
        bad = [case_name(r["level"], r["amb"]) for r in results if not floors(r)[key]]
        ok_all = ok_all and not bad
        print("  %s  %s: %d/%d%s" % ("PASS" if not bad else "FAIL", text,
                                     len(results) - len(bad), len(results),
                                     (" (fails: %s)" % ", ".join(bad)) if bad else ""))
    print("\nSUMMARY: %s" % ("ALL FLOORS PASS" if ok_all else "SOME FLOORS FAIL"))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
