"""Refit a calibration from field telemetry (`bms-host fit --from-db DB --device ID`).

What field records can tell about an aged cell, relative to its calibration:
- R0 scale: resistance growth. When records carry the device's own RLS estimate
  (`r0_ohm`) its ratio to the table is used; otherwise it is fitted from current and
  voltage: the calibrated model (device/bms/model.py equations: OCV, R0, two RC pairs,
  core temperature from the measured surface temperature) is run over the recorded current
  and the R0 scale solved by least squares. This needs records at about 1 s: at 5 s the
  RC pairs have moved between samples and the fit has little to work with.
- capacity: from `capacity_ah` in records (device SOH estimator), else fitted together
  with each boot's initial SOC when the SOC swing is large enough (>= 20 %).
- thermal: a scale on the surface-to-ambient resistance and on the heat capacities,
  fitted to the measured temperature with the initial temperature of each boot as
  ambient, when the temperature moved enough (>= 1.5 K).
Resistance tables (r0_ohm, r0c_ohm) are scaled, never reshaped; limits are not touched."""
import datetime
import json
import os
import sqlite3

from . import UserError

MIN_SOC_SWING = 0.2
MIN_TEMP_RISE_K = 1.5
MIN_RECORDS = 60


# ---- model pieces, vectorised over records (same equations as device/bms/model.py)

class Segment:
    """One boot's records for one cell, in sequence order."""

    def __init__(self, t_s, i_a, v, temp, soc, r0=None, cap=None):
        import numpy as np

        self.t = np.asarray(t_s, float)
        self.i = np.asarray(i_a, float)
        self.v = np.asarray(v, float)
        self.ts = np.asarray(temp, float)
        self.soc = np.asarray(soc, float)
        self.r0 = None if r0 is None else np.asarray(r0, float)
        self.cap = None if cap is None else np.asarray(cap, float)
        dt = np.diff(self.t, prepend=self.t[0])
        dt[0] = 0.0
        self.dt = dt


class CellModel:
    def __init__(self, cal):
        from .ecm import Tables

        # ecm.Tables: the device's tables with its defaults for r0c, r2c and i0
        self.tables = Tables.from_cal(cal)
        self.cap_ah = float(cal["cell"]["capacity_ah"])
        self.th = dict(cal["thermal"])

    def lookup(self, name, soc, temp):
        return self.tables.lookup(name, soc, temp)

    def core_temp(self, seg, heat_w, c_scale=1.0):
        # core node: C_core dTc/dt = Q - (Tc - Ts)/R_cs, backward Euler with measured Ts
        c = self.th["c_core_j_per_k"] * c_scale
        r = self.th["r_core_surf_k_per_w"]
        tc = [float(seg.ts[0])]
        for k in range(1, len(seg.t)):
            dt = seg.dt[k] or 1.0
            tc.append((c / dt * tc[-1] + heat_w[k] + seg.ts[k] / r) / (c / dt + 1.0 / r))
        return tc

    def parts(self, seg, soc0, cap_ah, tc):
        """Per record of one segment: v without the R0 drop, R0 * i, the heat less its
        ohmic part, and the ohmic heat's resistance times i (model.step: rh_ohm, else R0);
        the ohmic heat is i * r0_scale * that."""
        import numpy as np

        from .ecm import kinetic_np, shift_path

        soc = soc0 - np.cumsum(seg.i * seg.dt) / (cap_ah * 3600.0)
        soc_prev = np.concatenate(([soc0], soc[:-1]))
        tc = np.asarray(tc, float)
        tc_prev = np.concatenate(([tc[0]], tc[:-1]))
        r1 = self.lookup("r1_ohm", soc_prev, tc_prev)
        # R2 on charge steps from r2c_ohm (model.step chooses by the sign of the current)
        r2 = np.where(seg.i >= 0, self.lookup("r2_ohm", soc_prev, tc_prev),
                      self.lookup("r2c_ohm", soc_prev, tc_prev))
        a1 = np.exp(-seg.dt / self.lookup("tau1_s", soc_prev, tc_prev))
        a2 = np.exp(-seg.dt / self.lookup("tau2_s", soc_prev, tc_prev))
        b1 = (r1 * (1.0 - a1) * seg.i).tolist()
        b2 = (r2 * (1.0 - a2) * seg.i).tolist()
        a1 = a1.tolist()
        a2 = a2.tolist()
        v1 = [0.0] * len(b1)
        v2 = [0.0] * len(b1)
        x1 = x2 = 0.0  # a boot is assumed to start from rest
        for k in range(len(b1)):
            x1 = a1[k] * x1 + b1[k]
            x2 = a2[k] * x2 + b2[k]
            v1[k] = x1
            v2[k] = x2
        v1 = np.asarray(v1)
        v2 = np.asarray(v2)
        r0 = np.where(seg.i >= 0, self.lookup("r0_ohm", soc, tc),
                      self.lookup("r0c_ohm", soc, tc))
        kin = kinetic_np(seg.i, self.lookup("i0_a", soc, tc), tc)
        # the diffusion shift (model.shift_update) from rest at the segment's start
        d = shift_path(np.concatenate(([0.0], np.cumsum(seg.dt))),
                       np.concatenate(([0.0], seg.i)), np.concatenate(([tc[0]], tc)),
                       self.tables.diffusion)[1:]
        base = self.tables.ocv(soc - d, tc) - v1 - v2 - kin
        # the loss that heats the cell, less the ohmic part: i*(k1 v1 + kinetic) + k2 i v2
        k1 = float(self.th.get("heat_v1_fraction", 1.0))
        k2 = float(self.th.get("heat_v2_fraction", 1.0))
        rh = self.lookup("rh_ohm", soc, tc) if self.tables.heat_rh else r0
        return base, r0 * seg.i, seg.i * (k1 * v1 + kin) + k2 * seg.i * v2, rh * seg.i


def _fit_electrical(model, segs, fit_capacity):
    """Returns (r0_scale, capacity_ah, rms_v, soc0 per segment)."""
    import numpy as np
    from scipy.optimize import least_squares

    tcs = [list(s.ts) for s in segs]
    scale = 1.0

    def solve(theta, want_scale=False):
        cap = model.cap_ah * (theta[0] if fit_capacity else 1.0)
        soc0 = theta[1:]
        ys, xs = [], []
        for s, z0, tc in zip(segs, soc0, tcs, strict=True):
            base, x, _, _ = model.parts(s, z0, cap, tc)
            ys.append(base - s.v)
            xs.append(x)
        y = np.concatenate(ys)
        x = np.concatenate(xs)
        k = float(y @ x / (x @ x)) if x @ x > 0 else 1.0
        return (y - k * x) if not want_scale else (k, cap, y - k * x)

    theta = np.array([1.0] + [float(np.clip(s.soc[0], 0.0, 1.0)) for s in segs])
    lo = np.array([0.5] + [0.0] * len(segs))
    hi = np.array([1.5] + [1.0] * len(segs))
    for _ in range(3):  # core temperature depends on the heat, hence on the R0 scale
        theta = least_squares(solve, theta, bounds=(lo, hi), x_scale=0.05,
                              diff_step=1e-4).x
        scale, cap, resid = solve(theta, want_scale=True)
        new = []
        for s, z0, tc in zip(segs, theta[1:], tcs, strict=True):
            _, _, q, xh = model.parts(s, z0, cap, tc)
            heat = s.i * scale * xh + q
            new.append(model.core_temp(s, heat))
        tcs = new
    return scale, cap, float(np.sqrt(np.mean(resid ** 2))), theta[1:]


def _fit_thermal(model, segs, scale, cap, soc0s):
    """Scales (r_surf_amb, heat capacities) from the measured temperature, or None."""
    import numpy as np
    from scipy.optimize import least_squares

    heats = []
    for s, z0 in zip(segs, soc0s, strict=True):
        _, _, q, xh = model.parts(s, z0, cap, s.ts)
        heats.append(s.i * scale * xh + q)
    th = model.th

    def predict(theta, s, heat):
        k_sa, k_c = theta
        cc, cs = th["c_core_j_per_k"] * k_c, th["c_surf_j_per_k"] * k_c
        g1, g2 = 1.0 / th["r_core_surf_k_per_w"], 1.0 / (th["r_surf_amb_k_per_w"] * k_sa)
        ta = float(s.ts[0])
        tc = ts = ta
        out = [ts]
        for k in range(1, len(s.t)):
            dt = s.dt[k] or 1.0
            kc, ks = cc / dt, cs / dt
            a11, a22 = kc + g1, ks + g1 + g2
            b1, b2 = kc * tc + heat[k], ks * ts + g2 * ta
            det = a11 * a22 - g1 * g1
            tc, ts = (b1 * a22 + g1 * b2) / det, (a11 * b2 + g1 * b1) / det
            out.append(ts)
        return np.asarray(out)

    def resid(theta):
        return np.concatenate([predict(theta, s, h) - s.ts
                               for s, h in zip(segs, heats, strict=True)])

    r = least_squares(resid, [1.0, 1.0], bounds=([0.2, 0.2], [5.0, 5.0]), diff_step=1e-3)
    return r.x, float(np.sqrt(np.mean(r.fun ** 2)))


# ---- records

def load_segments(db_path, device_id):
    """Per cell: list of Segments (one per boot with enough records)."""
    if not os.path.isfile(db_path):
        raise UserError("telemetry database %s does not exist: record one with "
                        "bms-host record" % db_path)
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
        rows = conn.execute("SELECT boot, json FROM records WHERE device_id=? "
                            "ORDER BY boot, seq", (device_id,)).fetchall()
        conn.close()
    except sqlite3.Error as e:
        raise UserError("cannot read %s as a telemetry database (%s)" % (db_path, e)) from None
    if not rows:
        raise UserError("no records for device %r in %s" % (device_id, db_path))
    boots = {}
    for boot, text in rows:
        boots.setdefault(boot, []).append(json.loads(text))
    cells = None
    per_cell = {}
    for recs in boots.values():
        recs = [r for r in recs if "v" in r and "i_a" in r and r.get("temp_c")]
        if len(recs) < MIN_RECORDS:
            continue
        cells = len(recs[0]["v"])
        t = [r["t_ms"] / 1000.0 for r in recs]
        i = [r["i_a"] for r in recs]
        temp = [sum(r["temp_c"]) / len(r["temp_c"]) for r in recs]
        for c in range(cells):
            soc = [(r.get("soc") or [r.get("soc_pack", 0.5)] * cells)[c] for r in recs]
            r0 = [r["r0_ohm"][c] for r in recs] if all("r0_ohm" in r for r in recs) else None
            cap = [r["capacity_ah"][c] for r in recs] \
                if all("capacity_ah" in r for r in recs) else None
            per_cell.setdefault(c, []).append(
                Segment(t, i, [r["v"][c] for r in recs], temp, soc, r0, cap))
    if not per_cell:
        raise UserError("device %r has fewer than %d records with voltage, current and "
                        "temperature per boot in %s: record longer" % (device_id, MIN_RECORDS,
                                                                      db_path))
    return per_cell


def refit(cal, per_cell):
    """Returns (new calibration dict, report dict)."""
    import copy

    import numpy as np

    model = CellModel(cal)
    scales, caps, rms, notes = [], [], [], []
    soc0s = {}
    for c, segs in sorted(per_cell.items()):
        if segs[0].r0 is not None:
            ratio = np.concatenate([s.r0 / model.lookup("r0_ohm", s.soc, s.ts) for s in segs])
            scales.append(float(np.median(ratio)))
            notes.append("cell %d: R0 from the device's RLS estimate" % c)
        swing = max(float(np.ptp(np.cumsum(s.i * s.dt))) / 3600.0 / model.cap_ah for s in segs)
        fit_cap = swing >= MIN_SOC_SWING and segs[0].cap is None
        s_vi, cap_vi, r, soc0 = _fit_electrical(model, segs, fit_cap)
        soc0s[c] = (segs, soc0, cap_vi)
        if segs[0].r0 is None:
            scales.append(s_vi)
        rms.append(r)
        if segs[0].cap is not None:
            caps.append(float(np.median(np.concatenate([s.cap[-max(1, len(s.cap) // 5):]
                                                        for s in segs]))))
        elif fit_cap:
            caps.append(cap_vi)
    scale = float(np.median(scales))
    new = copy.deepcopy(cal)
    for name in ("r0_ohm", "r0c_ohm"):
        if name in new["tables"]:
            new["tables"][name] = [[round(v * scale, 7) for v in row]
                                   for row in new["tables"][name]]
    report = {"r0_scale": round(scale, 4), "r0_scale_per_cell": [round(s, 4) for s in scales],
              "voltage_rms_mv": round(1000 * float(np.mean(rms)), 2), "notes": notes}
    if caps:
        report["capacity_ah"] = [cal["cell"]["capacity_ah"], round(float(np.median(caps)), 4)]
        new["cell"]["capacity_ah"] = report["capacity_ah"][1]
    else:
        notes.append("capacity kept: SOC swing below %d %%" % (100 * MIN_SOC_SWING))
    # thermal: one fit over cell 0's segments (all cells share the sensors)
    segs, soc0, cap_fit = soc0s[min(soc0s)]
    rise = max(float(np.ptp(s.ts)) for s in segs)
    if rise >= MIN_TEMP_RISE_K:
        (k_sa, k_c), t_rms = _fit_thermal(model, segs, scale, cap_fit, soc0)
        th = new["thermal"]
        th["r_surf_amb_k_per_w"] = round(th["r_surf_amb_k_per_w"] * k_sa, 6)
        th["c_core_j_per_k"] = round(th["c_core_j_per_k"] * k_c, 6)
        th["c_surf_j_per_k"] = round(th["c_surf_j_per_k"] * k_c, 6)
        report["thermal"] = {"r_surf_amb_scale": round(float(k_sa), 4),
                             "heat_capacity_scale": round(float(k_c), 4),
                             "temp_rms_c": round(t_rms, 3)}
    else:
        notes.append("thermal terms kept: temperature moved only %.1f K (< %.1f K)"
                     % (rise, MIN_TEMP_RISE_K))
    return new, report


def run_from_db(db_path, device_id, base_calibration_path, out_path, echo=print):
    """Refit base calibration from a device's records; write out_path atomically.
    Returns the report dict (also printed through `echo`)."""
    import hashlib

    from . import use_device_code
    from .calibration import write_calibration

    use_device_code()
    from bms import calfile

    try:
        cal, base_sum = calfile.load(str(base_calibration_path))
    except calfile.CalibrationError as e:
        raise UserError("%s: %s" % (base_calibration_path, e)) from None
    per_cell = load_segments(str(db_path), device_id)
    new, report = refit(cal, per_cell)
    n = sum(len(s.t) for s in per_cell[min(per_cell)])
    prov = dict(new.get("provenance") or {})
    prov["revision"] = int(prov.get("revision", 1)) + 1
    prov["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(db_path, "rb") as f:
        db_sum = hashlib.sha256(f.read()).hexdigest()
    prov["refit"] = {"source": "field telemetry", "db": os.path.basename(str(db_path)),
                     "db_sha256": db_sum, "device_id": device_id, "records": n,
                     "boots": len(per_cell[min(per_cell)]), "parent_checksum": base_sum,
                     "result": report, "tool": "bms-host fit --from-db"}
    new["provenance"] = prov
    out_path = str(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise UserError("cannot write %s: folder %s does not exist" % (out_path, folder))
    # validated (never a file the device would reject), then written atomically
    checksum = write_calibration(new, out_path)
    echo("refit of %s from %d records of %s (%d boot(s)):"
         % (os.path.basename(str(base_calibration_path)), n, device_id,
            prov["refit"]["boots"]))
    echo("  R0 tables (discharge and charge): x%.3f  (per cell %s; model fit rms %.1f mV)"
         % (report["r0_scale"], report["r0_scale_per_cell"], report["voltage_rms_mv"]))
    if "capacity_ah" in report:
        echo("  capacity: %.3f Ah -> %.3f Ah" % tuple(report["capacity_ah"]))
    if "thermal" in report:
        t = report["thermal"]
        echo("  thermal: surface-to-ambient resistance x%.3f, heat capacities x%.3f "
             "(rms %.2f K)" % (t["r_surf_amb_scale"], t["heat_capacity_scale"],
                               t["temp_rms_c"]))
    for note in report["notes"]:
        echo("  " + note)
    echo("wrote %s (checksum %s); review it, then push it with: bms-host push %s --port PORT"
         % (out_path, checksum[:12], out_path))
    return report
