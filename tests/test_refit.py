"""The fleet refit on host-made telemetry (the device model as the plant): it fits only
what the records excite, proves the result on held-back records, refuses in one sentence
when nothing is clearly better, and push holds back a refit whose validation failed."""
import json
import random

import pytest

from bms_host import REPO, UserError, cli, push, record, refit, use_device_code

LGM50 = str(REPO / "calibration" / "lgm50.json")


def telemetry_db(db, seconds, r0_scale=1.0, cap_scale=1.0, period_s=1, straddle=True,
                 rests=(), seed=3, soc=0.7, pulse=(3, 12), gap=(3, 12)):
    """Records of a cell simulated by the device model (R0 x r0_scale, capacity x
    cap_scale) on random pulses that start and stop on whole seconds, one record every
    period_s. straddle: a record reads the current just after its instant and the
    voltage just before, as the device's sampling can, so a record on a step pairs the
    new current with the old voltage. rests: (start_s, length_s) of long rests."""
    use_device_code()
    from bms import calfile, model, telemetry

    cal, _ = calfile.load(LGM50)
    cap = cal["cell"]["capacity_ah"]
    p = model.pack(cal, capacity_ah=cap * cap_scale)
    sim = model.Simulator(p, soc, 25.0, r0_scale)
    rnd = random.Random(seed)
    # the current in each whole second
    cur = []
    while len(cur) < seconds:
        rest = next((b for a, b in rests if a <= len(cur) < a + b), None)
        if rest:
            cur.extend([0.0] * rest)
            continue
        n = rnd.randint(*pulse)
        cur.extend([rnd.choice([1, 1, -1]) * cap * rnd.uniform(0.3, 1.5)] * n)
        cur.extend([0.0] * rnd.randint(*gap))
    cur = cur[:seconds + 1]
    conn = record.open_db(db)
    v = sim.step(0.0, 25.0, 1e-3)
    for k in range(1, seconds):
        v = sim.step(cur[k - 1], 25.0, 1.0)     # the current of (k-1, k]
        if k % period_s:
            continue
        i = cur[k] if straddle else cur[k - 1]
        st = {"t_ms": k * 1000, "cells": 1, "v": [round(v + rnd.gauss(0, 2e-4), 6)],
              "temp_c": [sim.ts], "i_a": i + rnd.gauss(0, 2e-3), "soc": [sim.soc],
              "r0_ohm": [0.0123]}
        record.insert(conn, telemetry.make_record(st, "cell", 7, k), 1e9 + k)
    # the first record of a boot before the taps are read: no voltage
    record.insert(conn, telemetry.make_record({"t_ms": 0, "cells": 1, "v": [None],
                                               "temp_c": [25.0], "i_a": 0.0}, "cell", 7, 0))
    conn.commit()
    conn.close()
    return cal


def _run(tmp_path, **kw):
    db = str(tmp_path / "tel.sqlite")
    base = telemetry_db(db, **kw)
    out = tmp_path / "refit.json"
    lines = []
    try:
        refit.run_from_db(db, "cell", LGM50, str(out), echo=lines.append)
        err = None
    except refit.RefitRefused as e:
        err = str(e)
    use_device_code()
    from bms import calfile

    new, _ = calfile.load(str(out))
    return base, new, new["provenance"]["refit"], err, lines


def test_steps_read_across_do_not_pull_r0_and_nothing_changes(tmp_path):
    base, new, prov, err, _ = _run(tmp_path, seconds=600)
    res, val = prov["result"], prov["validation"]
    # the records on a step pair the new current with the old voltage: left out, the fit
    # finds the calibration's own R0 (with them it found about x0.7)
    assert abs(res["r0_scale_fitted"] - 1.0) < 0.03, res
    assert not val["passed"] and err and "refused" in err and "\n" not in err
    # the file holds what was fitted, marked failed; nothing else moved
    k = res["r0_scale_fitted"]
    assert new["tables"]["r0_ohm"][1][5] == pytest.approx(base["tables"]["r0_ohm"][1][5] * k,
                                                          rel=1e-3)
    assert new["tables"]["ocv_v"] == base["tables"]["ocv_v"] and new["cell"] == base["cell"]
    assert val["voltage_rms_mv"]["old"] < 1.0
    assert any("device's own R0 estimate" in n for n in res["notes"])


def test_grown_resistance_is_found_and_proved_on_held_back_records(tmp_path):
    base, new, prov, err, lines = _run(tmp_path, seconds=600, r0_scale=1.3)
    res, val = prov["result"], prov["validation"]
    assert err is None and val["passed"], val
    assert abs(res["r0_scale"] / 1.3 - 1.0) < 0.03, res
    for name in ("r0_ohm", "r0c_ohm"):
        assert new["tables"][name][2][10] == pytest.approx(
            base["tables"][name][2][10] * res["r0_scale"], rel=1e-4)
    assert val["voltage_rms_mv"]["new"] < 0.3 * val["voltage_rms_mv"]["old"]
    assert new["limits"] == base["limits"] and new["cell"] == base["cell"]
    assert prov["records"] == 599  # the record without a voltage was passed over
    assert any("held back: voltage RMS" in ln for ln in lines)


def test_five_second_records_are_not_used_for_r0(tmp_path):
    base, new, prov, err, _ = _run(tmp_path, seconds=1500, r0_scale=1.3, period_s=5)
    assert "R0 needs about 1 s" in err and "records 5 s apart" in err
    assert not prov["validation"]["passed"]
    assert new["tables"] == base["tables"]


def test_capacity_with_soc_checked_at_rests(tmp_path):
    # 80 min: pulses drawing about a third of the charge, rests of 6 min among them
    rests = [(900 * k + 540, 360) for k in range(6)]
    base, new, prov, err, _ = _run(tmp_path, seconds=5200, cap_scale=0.85, soc=0.95,
                                   rests=rests, pulse=(10, 40), gap=(2, 6), seed=5)
    res, val = prov["result"], prov["validation"]
    assert err is None and val["passed"], val
    assert new["cell"]["capacity_ah"] == pytest.approx(0.85 * base["cell"]["capacity_ah"],
                                                       rel=0.03)
    soc = val["soc_rms_pct"]
    assert soc["rests"] >= 1 and soc["new"] <= soc["old"] + refit.SOC_WORSE_PCT, soc
    assert res["records"]["soc_swing"] >= refit.MIN_SOC_SWING


def test_push_holds_back_a_failed_refit_unless_forced(tmp_path, capsys):
    _, _, prov, err, _ = _run(tmp_path, seconds=600)
    out = str(tmp_path / "refit.json")
    assert not prov["validation"]["passed"]
    with pytest.raises(UserError, match="failed its own validation.*--force"):
        push.push("/dev/does-not-exist", out)
    # forced, it gets as far as the port
    with pytest.raises(UserError, match="does-not-exist"):
        push.push("/dev/does-not-exist", out, force=True)
    assert cli.main(["push", out, "--port", "/dev/does-not-exist"]) == 2
    assert "failed its own validation" in capsys.readouterr().err
    assert cli.main(["push", out, "--port", "/dev/does-not-exist", "--force"]) == 2
    assert "failed its own validation" not in capsys.readouterr().err
    # a calibration that is not a refit, or whose refit passed, is not held back
    push.refuse_failed_validation(LGM50)
    cal = json.loads(open(out).read())
    cal["provenance"]["refit"]["validation"]["passed"] = True
    (tmp_path / "ok.json").write_text(json.dumps(cal))
    push.refuse_failed_validation(str(tmp_path / "ok.json"))


def test_too_few_records_is_one_sentence(tmp_path):
    db = str(tmp_path / "tel.sqlite")
    telemetry_db(db, seconds=30)
    with pytest.raises(UserError, match="no stretch of 60 records"):
        refit.run_from_db(db, "cell", LGM50, str(tmp_path / "x.json"))
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(UserError, match="no records for device"):
        refit.run_from_db(db, "other", LGM50, str(tmp_path / "x.json"))
