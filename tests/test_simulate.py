"""bms-host simulate and the shared trace reader."""
import calsample
import numpy as np
import pytest

from bms_host import UserError, cli, ecm
from bms_host.calibration import read_calibration, write_calibration
from bms_host.traces import read_trace


@pytest.fixture()
def cal_path(tmp_path):
    path = tmp_path / "cal.json"
    write_calibration(calsample.calibration(), path)
    return path


def _write_trace(path, n=300, with_truth=True):
    cal = calsample.calibration()
    tb = ecm.Tables.from_cal(cal)
    t = np.arange(n + 1, dtype=float)
    i = np.array([0.0] + [calsample.drive_current(k) for k in range(n)])
    r = ecm.simulate(tb, t, i, 20.0, 0.7, 20.0)
    cols = ["time_s", "current_a", "voltage_v", "temperature_c", "ambient_c"]
    data = [t, i, r["voltage_v"], r["temp_surface_c"], np.full(n + 1, 20.0)]
    if with_truth:
        cols += ["temp_core_c", "soc_true"]
        data += [r["temp_core_c"], r["soc"]]
    np.savetxt(path, np.column_stack(data), delimiter=",", header=",".join(cols), comments="",
               fmt="%.9f")
    return r


def test_simulate_reproduces_a_trace_of_the_same_model(tmp_path, cal_path, capsys):
    trace = tmp_path / "trace.csv"
    truth = _write_trace(trace)
    out = tmp_path / "sim.csv"
    assert cli.main(["simulate", str(trace), "--calibration", str(cal_path), "--out",
                     str(out)]) == 0
    sim = read_trace(out, required=())
    assert list(sim) == ["time_s", "voltage_pred_v", "temp_surface_pred_c", "temp_core_pred_c"]
    assert np.max(np.abs(sim["voltage_pred_v"] - truth["voltage_v"])) < 2e-6
    assert np.max(np.abs(sim["temp_surface_pred_c"] - truth["temp_surface_c"])) < 1e-4
    assert "RMSE" in capsys.readouterr().out


def test_initial_soc_from_voltage_and_from_option(tmp_path, cal_path):
    trace = tmp_path / "plain.csv"
    truth = _write_trace(trace, with_truth=False)
    out = tmp_path / "sim.csv"
    # no soc_true column: the rested first voltage gives the SOC back
    assert cli.main(["simulate", str(trace), "--calibration", str(cal_path), "--out",
                     str(out)]) == 0
    sim = read_trace(out, required=())
    assert np.max(np.abs(sim["voltage_pred_v"] - truth["voltage_v"])) < 1e-4
    assert cli.main(["simulate", str(trace), "--calibration", str(cal_path), "--out",
                     str(out), "--initial-soc", "0.5"]) == 0
    sim = read_trace(out, required=())
    assert np.mean(sim["voltage_pred_v"] - truth["voltage_v"]) < -0.02


@pytest.mark.parametrize("body, words", [
    ("time_s,current_a,voltage_v\n0,0,3.7\n", "no column temperature_c"),
    ("time_s,current_a,voltage_v,temperature_c\n0,0,3.7,25\n1,abc,3.7,25\n", "line 3"),
    ("time_s,current_a,voltage_v,temperature_c\n0,0,3.7,25\n1,nan,3.7,25\n", "not finite"),
    ("time_s,current_a,voltage_v,temperature_c\n0,0,3.7,25\n0,1,3.7,25\n", "does not increase"),
    ("time_s,current_a,voltage_v,temperature_c\n0,0,3.7,25\n1,1,3.7\n", "line 3"),
    ("", "empty"),
])
def test_trace_errors_are_one_sentence(tmp_path, body, words):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(UserError) as e:
        read_trace(p)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_cli_errors(tmp_path, cal_path, capsys):
    out = tmp_path / "sim.csv"
    assert cli.main(["simulate", str(tmp_path / "nope.csv"), "--calibration", str(cal_path),
                     "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    trace = tmp_path / "trace.csv"
    _write_trace(trace)
    bad = tmp_path / "bad.json"
    text = cal_path.read_text()
    bad.write_text(text.replace('"capacity_ah":5', '"capacity_ah":6'))
    assert bad.read_text() != text
    assert cli.main(["simulate", str(trace), "--calibration", str(bad), "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "checksum mismatch" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_calibration_round_trip(tmp_path):
    cal = calsample.calibration()
    p = tmp_path / "c.json"
    checksum = write_calibration(cal, p)
    got, c2 = read_calibration(p)
    assert c2 == checksum and got == cal
    cal["limits"]["v_max"] = 4.4
    with pytest.raises(UserError, match="v_min/v_max"):
        write_calibration(cal, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
