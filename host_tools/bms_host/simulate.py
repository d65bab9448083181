"""`bms-host simulate TRACE.csv --calibration CAL.json --out SIM.csv`: run the calibrated
model open loop on a trace's current and ambient temperature.

Initial SOC: --initial-soc, else the trace's soc_true in row 0, else the OCV inversion of the
first voltage (a rested cell). Initial temperatures: temp_core_c / temperature_c of row 0
(else the ambient). Output columns: time_s,voltage_pred_v,temp_surface_pred_c,
temp_core_pred_c (plus voltage_v and temperature_c of the trace when it has them, so the
two can be compared in one file).
"""
import numpy as np

from . import UserError, plausible

HELP = "run the calibrated cell model open loop on a trace's current (prediction CSV)"

COLUMNS = ("time_s", "voltage_pred_v", "temp_surface_pred_c", "temp_core_pred_c")


def configure(p):
    p.add_argument("trace", help="CSV with time_s,current_a[,voltage_v,temperature_c,ambient_c]")
    p.add_argument("--calibration", required=True, help="calibration JSON (bms-host fit)")
    p.add_argument("--out", required=True, help="output CSV (never one of the inputs)")
    p.add_argument("--initial-soc", type=float, default=None,
                   help="start SOC 0..1 (default: soc_true column, else from the first voltage)")
    plausible.add_option(p)


def simulate_trace(cols, cal, initial_soc=None):
    """Dict of predicted columns for a trace (dict of numpy columns) and calibration dict."""
    from . import ecm
    tb = ecm.Tables.from_cal(cal)
    n = len(cols["time_s"])
    amb = cols.get("ambient_c")
    if amb is None:
        amb = np.full(n, 25.0)
    ts0 = float(cols["temperature_c"][0]) if "temperature_c" in cols else float(amb[0])
    tc0 = float(cols["temp_core_c"][0]) if "temp_core_c" in cols else ts0
    if initial_soc is not None:
        soc0 = float(initial_soc)
    elif "soc_true" in cols:
        soc0 = float(cols["soc_true"][0])
    elif "voltage_v" in cols:
        soc0 = tb.soc_from_ocv(float(cols["voltage_v"][0]), tc0)
    else:
        raise UserError("the trace has neither soc_true nor voltage_v: give --initial-soc")
    sim = ecm.simulate(tb, cols["time_s"], cols["current_a"], amb, soc0, tc0, ts0)
    return {"time_s": cols["time_s"], "voltage_pred_v": sim["voltage_v"],
            "temp_surface_pred_c": sim["temp_surface_c"], "temp_core_pred_c": sim["temp_core_c"],
            "soc_pred": sim["soc"]}


def run(args):
    from .calibration import read_calibration
    from .traces import guard_output, read_trace, write_columns

    if args.initial_soc is not None and not 0.0 <= args.initial_soc <= 1.0:
        raise UserError("--initial-soc must be between 0 and 1, got %g" % args.initial_soc)
    guard_output(args.out, args.trace, args.calibration)
    cal, _ = read_calibration(args.calibration)
    cols = read_trace(args.trace, required=("time_s", "current_a"), min_rows=2,
                      only=("voltage_v", "temperature_c", "ambient_c", "temp_core_c", "soc_true"))
    if not getattr(args, "allow_implausible", False):
        plausible.check(cols, cal, args.trace)
    with np.errstate(all="ignore"):  # a deliberate out-of-range trace may overflow
        out = simulate_trace(cols, cal, args.initial_soc)
    res = {k: out[k] for k in COLUMNS}
    bad = ~np.isfinite(np.column_stack([res[k] for k in COLUMNS[1:]])).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise UserError("the model's prediction left the finite range at time_s %g (line %d, "
                        "current %g A): the trace drives the cell far outside what the "
                        "calibration describes; nothing was written"
                        % (cols["time_s"][k], k + 2, cols["current_a"][k]))
    write_columns(args.out, res, fmt=["%.3f", "%.6f", "%.4f", "%.4f"])
    msg = "simulate: wrote %s (%d rows)" % (args.out, len(res["time_s"]))
    if "voltage_v" in cols:
        e = out["voltage_pred_v"] - cols["voltage_v"]
        msg += "; voltage RMSE %.2f mV, mean error %+.2f mV" % (
            float(np.sqrt(np.mean(e * e))) * 1e3, float(np.mean(e)) * 1e3)
    print(msg)
    return 0
