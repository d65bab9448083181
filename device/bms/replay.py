# Replay a recorded trace through one cell's estimator: the same code path as the
# device's estimator tick, runnable in MicroPython and CPython (bms-host replay).
from bms import backends, calfile, estimator

OUT_COLUMNS = ("time_s", "soc", "soc_sigma", "voltage_pred_v", "temp_core_c", "r0_ohm",
               "capacity_ah", "soh", "i_discharge_max_a", "i_charge_max_a")
SOP_EVERY_S = 1.0  # SOP is cheap but not free: refresh it once a second


def _columns(header, path):
    names = [h.strip() for h in header.strip().split(",")]
    idx = {}
    for need in ("time_s", "current_a", "voltage_v", "temperature_c"):
        if need not in names:
            raise ValueError("trace %s has no column '%s' (need time_s,current_a,voltage_v,"
                             "temperature_c)" % (path, need))
        idx[need] = names.index(need)
    idx["ambient_c"] = names.index("ambient_c") if "ambient_c" in names else -1
    return idx


def _float(s, line, path):
    try:
        return float(s)
    except ValueError:
        raise ValueError("trace %s line %d: '%s' is not a number" % (path, line, s.strip()))


def run(trace_path, cal, out_path, initial_soc=None, backend=None, cfg=None, max_rows=None):
    """Stream the trace through the estimator, writing one output row per input row (the
    first max_rows data rows when given: the host drops a last line cut short).
    Returns the number of rows."""
    if isinstance(cal, str):
        cal = calfile.load(cal)[0]
    est = estimator.CellEstimator(cal, backends.make(backend), cfg)
    rows = 0
    t_prev = None
    t_sop = None
    fmt = "%.3f,%.6f,%.6f,%.5f,%.3f,%.6f,%.4f,%.5f,%.3f,%.3f\n"
    with open(trace_path) as f, open(out_path, "w") as out:
        idx = _columns(f.readline(), trace_path)
        need = idx["time_s"]
        for k in idx:
            need = max(need, idx[k])
        out.write(",".join(OUT_COLUMNS) + "\n")
        line = 1
        for text in f:
            line += 1
            if max_rows is not None and rows >= max_rows:
                break
            if not text.strip():
                continue
            c = text.split(",")
            if len(c) <= need:
                raise ValueError("trace %s line %d has %d values, fewer than its header's "
                                 "columns" % (trace_path, line, len(c)))
            t = _float(c[idx["time_s"]], line, trace_path)
            i = _float(c[idx["current_a"]], line, trace_path)
            v = _float(c[idx["voltage_v"]], line, trace_path)
            ts = _float(c[idx["temperature_c"]], line, trace_path)
            ta = _float(c[idx["ambient_c"]], line, trace_path) if idx["ambient_c"] >= 0 else 25.0
            if t_prev is None:
                if initial_soc is not None:
                    est.init(initial_soc, ts, None, abs(i) < 0.05 * est.nominal_ah)
                else:
                    est.init_from_measurement(i, v, ts)
                dt = 0.0
            else:
                dt = t - t_prev
                if dt <= 0.0:
                    raise ValueError("trace %s line %d: time does not increase"
                                     % (trace_path, line))
                est.step(i, v, ts, ta, dt)
            t_prev = t
            if t_sop is None or t - t_sop >= SOP_EVERY_S:
                est.update_sop(ta)
                t_sop = t
            out.write(fmt % (t, est.soc(), est.soc_sigma(), est.voltage_pred_v(),
                             est.temp_core_c(), est.r0_ohm(), est.capacity_ah(), est.soh(),
                             est.i_dis[1], est.i_chg[1]))
            rows += 1
    return rows
