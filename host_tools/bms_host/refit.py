"""Refit a calibration from field telemetry (`bms-host fit --from-db DB --device ID`).

A refit must never make a calibration worse, so it fits only what the recording excites
and proves the result on records it did not fit:

1. records: per boot and cell, the records with a voltage, a current and a temperature;
   a gap of more than a minute starts a new segment (the current in it is unknown);
2. split: every third block of about two minutes is held back, and every second rest of
   5 min whole (the SOC is checked at its end); the rest is fitted;
3. what the recording excites, each with its rule (one sentence in the report when a part
   is kept): R0 scale: records at most 2 s apart (between records the current is unknown:
   at 5 s the RC pairs move between samples and R0 soaks up their error) and at least 8
   current steps of 0.1C in the fitted part, 4 in the held-back part; capacity: a SOC
   swing of 20 % (the OCV must move); thermal: a temperature rise of 1.5 K, and R0
   checkable (the heat depends on it: with R0 off, the thermal terms would absorb it);
4. fit on the fitted rows only: the calibrated model (device/bms/model.py equations:
   OCV, R0, two RC pairs, kinetic term, diffusion shift, core temperature from the
   measured surface) is run over the recorded current and the R0 scale solved by least
   squares, with each segment's initial SOC and where the steps fall between records
   (the phase: a record reads the current at its instant, so over the interval before a
   step record the old current flowed for an unknown part) fitted along, for the old
   calibration too. A record whose current moved by 0.02C or more is simulated through
   but never scored: the device samples current and voltage some milliseconds apart, so
   such a record can pair the new current with the old voltage; left in, one per step
   pulls R0 down by a third on pulse telemetry;
5. validate on the held-back blocks: voltage RMS of the old and the new calibration, the
   surface temperature's RMS for a thermal change, and where the recording has rests of
   5 min, the SOC the device's own filter shows at their ends against the SOC of the
   rested voltage (old and new run over the whole recording);
6. decide: a part is taken only when the held-back error falls clearly (by 10 % and by
   0.3 mV, or 0.05 K), and the SOC error does not grow by more than 0.3 points; when
   nothing is taken the refit refuses in one sentence.

The calibration is written either way, with the validation under provenance.refit
("validation": passed, the reason, the numbers); refused, it holds what was fitted, to be
looked at, and `bms-host push` refuses it unless --force. A refused refit exits with
status 2.
Resistance tables (r0_ohm, r0c_ohm and the ohmic heat's rh_ohm) are scaled, never
reshaped; limits are not touched. The device's own R0 estimate in the records (r0_ohm) is
reported, not used: it comes from 100 ms steps of a filter that may itself be off."""
import copy
import datetime
import hashlib
import os

import numpy as np

from . import UserError, use_device_code
from .calibration import write_calibration
from .refit_model import CellModel, _fit, _fit_thermal, _soc_check, _states, _temp_rms, \
    _voltage_rms
from .refit_records import HOLDOUT_EVERY, REST_S, STEP_C, _steps, load_segments

BLOCK_S = 120.0           # held-back blocks: every HOLDOUT_EVERY-th of about this length
MIN_BLOCKS = 6
MAX_R0_DT_S = 2.0         # R0 from voltage needs records about 1 s apart
JUMP_C = 0.02             # a record whose current moved this much may straddle the step
MIN_STEPS_FIT = 8
MIN_STEPS_HOLD = 4
MIN_SOC_SWING = 0.2
MIN_TEMP_RISE_K = 1.5
GAIN = 0.10               # the held-back error must fall by 10 % ...
GAIN_V_MV = 0.3           # ... and by this much (voltage)
GAIN_T_K = 0.05           # ... or this much (temperature)
SOC_WORSE_PCT = 0.3       # held-back SOC RMSE may grow by at most this (points)


class RefitRefused(UserError):
    """The refit found nothing clearly better: one sentence; the file is marked failed."""


# ---- the refit

def _scaled(cal, scale, cap_ah, thermal):
    new = copy.deepcopy(cal)
    if scale != 1.0:
        for name in ("r0_ohm", "r0c_ohm", "rh_ohm"):
            if name in new["tables"]:
                new["tables"][name] = [[round(v * scale, 7) for v in row]
                                       for row in new["tables"][name]]
    if cap_ah is not None:
        new["cell"]["capacity_ah"] = round(cap_ah, 4)
    if thermal is not None:
        k_sa, k_c = thermal
        th = new["thermal"]
        th["r_surf_amb_k_per_w"] = round(th["r_surf_amb_k_per_w"] * k_sa, 6)
        th["c_core_j_per_k"] = round(th["c_core_j_per_k"] * k_c, 6)
        th["c_surf_j_per_k"] = round(th["c_surf_j_per_k"] * k_c, 6)
    return new


def _clearly_better(old, new, floor):
    return new <= old * (1.0 - GAIN) and old - new >= floor


def refit(cal, per_cell, soc_check=True):
    """Returns (new calibration dict, report dict). report["validation"]["passed"] tells
    whether anything was taken; when not, the new calibration holds what was fitted (the
    old one where nothing was) and report["validation"]["reason"] says why in one
    sentence."""
    model = CellModel(cal)
    cap0 = model.cap_ah
    notes = []
    # all cells share the current and the sensors: one fit over every cell's segments
    segs = [s for c in sorted(per_cell) for s in per_cell[c]]
    dur = sum(float(s.t[-1] - s.t[0]) for s in segs)
    block = min(BLOCK_S, max(10.0, dur / len(segs) / MIN_BLOCKS))
    for s in segs:
        s.split(block, cap0)
        s.mark_steps(JUMP_C * cap0)
    n_fit = int(sum(s.fit_rows.sum() for s in segs))
    n_hold = int(sum(s.hold_rows.sum() for s in segs))
    dt = float(np.median(np.concatenate([np.diff(s.t) for s in segs])))
    steps_fit = sum(_steps(s, s.fit_rows, cap0) for s in segs)
    steps_hold = sum(_steps(s, s.hold_rows, cap0) for s in segs)
    swing = max(float(np.ptp(np.cumsum(s.iq * s.dt))) / 3600.0 / cap0 for s in segs)
    rise = max(float(np.ptp(s.ts)) for s in segs)

    fit_r0 = dt <= MAX_R0_DT_S and steps_fit >= MIN_STEPS_FIT and steps_hold >= MIN_STEPS_HOLD
    why = []
    if not fit_r0:
        if dt > MAX_R0_DT_S:
            why.append("records %.3g s apart, R0 needs about 1 s" % dt)
        else:
            why.append("%d+%d current steps of %.1fC fitted+held back, R0 needs %d+%d"
                       % (steps_fit, steps_hold, STEP_C, MIN_STEPS_FIT, MIN_STEPS_HOLD))
        notes.append("R0 kept: " + why[-1])
    fit_cap = swing >= MIN_SOC_SWING
    if not fit_cap:
        why.append("a SOC swing of %.0f %%, capacity needs %.0f %%"
                   % (100 * swing, 100 * MIN_SOC_SWING))
        notes.append("capacity kept: " + why[-1])
    rls = [s.r0 / model.lookup("r0_ohm", s.soc, s.ts) for s in segs if s.r0 is not None]
    if rls:
        notes.append("the device's own R0 estimate reads x%.2f of the table (reported, not "
                     "used)" % float(np.median(np.concatenate(rls))))

    # the old calibration on the same footing: its own step phase and initial SOCs
    _, _, phi_old, soc0_old = _fit(model, segs, False, False)
    v_old = _voltage_rms(model, segs, 1.0, cap0, phi_old, soc0_old, "hold")
    scale, cap, phi, soc0 = 1.0, cap0, phi_old, soc0_old
    if fit_r0 or fit_cap:
        scale, cap, phi, soc0 = _fit(model, segs, fit_r0, fit_cap)
    v_new = _voltage_rms(model, segs, scale, cap, phi, soc0, "hold")
    candidate = [scale, cap if fit_cap else None, None]   # what was fitted, taken or not
    report = {"records": {"fitted": n_fit, "held_back": n_hold, "spacing_s": round(dt, 3),
                          "current_steps": [steps_fit, steps_hold],
                          "soc_swing": round(swing, 4), "temp_rise_k": round(rise, 2),
                          "step_phase": round(phi_old, 3)},
              "r0_scale": 1.0, "notes": notes}
    val = {"voltage_rms_mv": {"old": round(1000 * v_old, 2), "new": round(1000 * v_new, 2)}}
    take_el = (fit_r0 or fit_cap) and _clearly_better(v_old, v_new, GAIN_V_MV / 1000.0)
    if fit_r0:
        report["r0_scale_fitted"] = round(scale, 4)
    if fit_cap:
        report["capacity_fitted_ah"] = round(cap, 4)
    if (fit_r0 or fit_cap) and not take_el:
        notes.append("electrical fit not taken: held-back voltage RMS %.2f mV -> %.2f mV is "
                     "not clearly lower" % (1000 * v_old, 1000 * v_new))
    if not take_el:
        scale, cap, phi, soc0 = 1.0, cap0, phi_old, soc0_old

    # thermal, with the electrical part as decided
    thermal = None
    if rise >= MIN_TEMP_RISE_K and not fit_r0:
        why.append("thermal terms need R0 checked, the heat depends on it")
        notes.append("thermal terms kept: the heat depends on R0, which these records "
                     "cannot check")
    elif rise >= MIN_TEMP_RISE_K:
        heats = [h for _, _, h in _states(model, segs, scale, cap, soc0, phi)]
        k = _fit_thermal(model, segs, heats)
        candidate[2] = k
        t_old = _temp_rms(model, segs, heats, 1.0, 1.0)
        t_new = _temp_rms(model, segs, heats, *k)
        val["temp_rms_c"] = {"old": round(t_old, 3), "new": round(t_new, 3)}
        if t_new <= t_old * (1.0 - GAIN) and t_old - t_new >= GAIN_T_K:
            thermal = k
            report["thermal"] = {"r_surf_amb_scale": round(k[0], 4),
                                 "heat_capacity_scale": round(k[1], 4)}
        else:
            notes.append("thermal terms kept: held-back temperature RMS %.3f K -> %.3f K is "
                         "not clearly lower" % (t_old, t_new))
    else:
        why.append("a temperature rise of %.1f K, thermal terms need %.1f K"
                   % (rise, MIN_TEMP_RISE_K))
        notes.append("thermal terms kept: " + why[-1])

    new = _scaled(cal, scale, cap if take_el and fit_cap else None, thermal)
    taken = take_el or thermal is not None
    if taken and soc_check:
        soc = _soc_check(model, cal, new, segs, phi_old)
        if soc is None:
            notes.append("SOC not compared: no rest of %d min in the held-back part"
                         % (REST_S // 60))
        else:
            val["soc_rms_pct"] = {"old": round(soc[0], 3), "new": round(soc[1], 3),
                                  "rests": soc[2]}
            if soc[1] > soc[0] + SOC_WORSE_PCT:
                taken = False
                val["reason"] = ("refused: the device's SOC at the held-back rests gets "
                                 "worse with it (RMSE %.2f -> %.2f points)" % soc[:2])
    if taken:
        report["r0_scale"] = round(scale, 4)
        if take_el and fit_cap:
            report["capacity_ah"] = [cap0, round(cap, 4)]
        val["passed"] = True
        val["reason"] = ("held-back voltage RMS %.2f -> %.2f mV" % (1000 * v_old, 1000 * v_new)
                         if take_el else "held-back temperature RMS %.3f -> %.3f K"
                         % (val["temp_rms_c"]["old"], val["temp_rms_c"]["new"]))
    else:
        # what was fitted, for a look (the report) or a push with --force
        new = _scaled(cal, *candidate)
        report["r0_scale"] = round(candidate[0], 4)   # the file's tables against the parent
        val["passed"] = False
        if "reason" not in val:
            if not (fit_r0 or fit_cap or "temp_rms_c" in val):
                val["reason"] = ("refused: the recording excites nothing the refit can "
                                 "check (%s)" % "; ".join(why))
            else:
                val["reason"] = ("refused: nothing fitted is clearly better on the held-back "
                                 "records (voltage RMS %.2f mV old, %.2f mV new): the "
                                 "calibration already fits" % (1000 * v_old, 1000 * v_new))
    val["held_back"] = "every %s block of %.0f s" % (
        {2: "second", 3: "third"}.get(HOLDOUT_EVERY, "%dth" % HOLDOUT_EVERY), block)
    report["validation"] = val
    return new, report


def run_from_db(db_path, device_id, base_calibration_path, out_path, echo=print):
    """Refit base calibration from a device's records; write out_path atomically, with the
    refit's validation in its provenance. Returns the report dict (also printed through
    `echo`); raises RefitRefused (one sentence) after writing when the validation failed."""
    use_device_code()
    from bms import calfile  # importable once use_device_code() has put device/ on the path

    try:
        cal, base_sum = calfile.load(str(base_calibration_path))
    except calfile.CalibrationError as e:
        raise UserError("%s: %s" % (base_calibration_path, e)) from None
    except OSError as e:
        raise UserError("cannot read calibration %s (%s)" % (base_calibration_path,
                                                             e.strerror or e)) from None
    out_path = str(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise UserError("cannot write %s: folder %s does not exist" % (out_path, folder))
    per_cell = load_segments(str(db_path), device_id)
    new, report = refit(cal, per_cell)
    n = sum(len(s.t) for segs in per_cell.values() for s in segs)
    prov = dict(new.get("provenance") or {})
    prov["revision"] = int(prov.get("revision", 1)) + 1
    prov["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(db_path, "rb") as f:
        db_sum = hashlib.sha256(f.read()).hexdigest()
    prov["refit"] = {"source": "field telemetry", "db": os.path.basename(str(db_path)),
                     "db_sha256": db_sum, "device_id": device_id, "records": n,
                     "segments": sum(len(v) for v in per_cell.values()),
                     "parent_checksum": base_sum, "result": report,
                     "validation": report["validation"], "tool": "bms-host fit --from-db"}
    new["provenance"] = prov
    checksum = write_calibration(new, out_path)
    val = report["validation"]
    echo("refit of %s from %d records of %s (%d fitted, %d held back):"
         % (os.path.basename(str(base_calibration_path)), n, device_id,
            report["records"]["fitted"], report["records"]["held_back"]))
    if "r0_scale_fitted" in report:
        echo("  R0 tables (discharge and charge): x%.3f fitted" % report["r0_scale_fitted"])
    if "capacity_fitted_ah" in report:
        echo("  capacity: %.3f Ah -> %.3f Ah fitted" % (cal["cell"]["capacity_ah"],
                                                      report["capacity_fitted_ah"]))
    if "thermal" in report:
        t = report["thermal"]
        echo("  thermal: surface-to-ambient resistance x%.3f, heat capacities x%.3f"
             % (t["r_surf_amb_scale"], t["heat_capacity_scale"]))
    v = val["voltage_rms_mv"]
    echo("  held back: voltage RMS %.2f mV (old) -> %.2f mV (new)" % (v["old"], v["new"]))
    if "soc_rms_pct" in val:
        s = val["soc_rms_pct"]
        echo("  held back: SOC RMSE at %d rest(s) %.2f -> %.2f points"
             % (s["rests"], s["old"], s["new"]))
    for note in report["notes"]:
        echo("  " + note)
    if not val["passed"]:
        raise RefitRefused("%s; wrote what was fitted to %s marked failed (bms-host push "
                           "refuses it without --force)" % (val["reason"], out_path))
    echo("wrote %s (checksum %s); review it, then push it with: bms-host push %s --port PORT"
         % (out_path, checksum[:12], out_path))
    return report
