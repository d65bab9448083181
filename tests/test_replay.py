"""bms-host replay: the same device code in CPython and in the host MicroPython, every
backend, and one clear sentence for a bad trace."""
import csv
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAL = ROOT / "calibration" / "lgm50.json"
BMS_HOST = str(Path(sys.executable).parent / "bms-host")
COLUMNS = ["time_s", "soc", "soc_sigma", "voltage_pred_v", "temp_core_c", "r0_ohm",
           "capacity_ah", "soh", "i_discharge_max_a", "i_charge_max_a"]


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """600 steps of a held-out PyBaMM profile with sensor noise and an extra column."""
    rng = random.Random(3)
    src = ROOT / "data" / "lgm50" / "random_25C.csv"
    out = tmp_path_factory.mktemp("replay") / "trace.csv"
    with open(src) as f, open(out, "w", newline="") as g:
        r = csv.DictReader(f)
        w = csv.writer(g)
        w.writerow(["time_s", "current_a", "voltage_v", "temperature_c", "ambient_c", "note"])
        for k, row in enumerate(r):
            if k > 600:
                break
            w.writerow([row["time_s"], "%.4f" % (float(row["current_a"]) + 0.03
                                                 + rng.gauss(0, 0.02)),
                        "%.5f" % (float(row["voltage_v"]) + rng.gauss(0, 0.005)),
                        row["temperature_c"], row["ambient_c"], "x"])
    return out


def replay(trace, out, *extra):
    return subprocess.run([BMS_HOST, "replay", str(trace), "--calibration", str(CAL), "--out",
                           str(out), *extra], capture_output=True, text=True, timeout=600)


def read(path):
    with open(path) as f:
        r = csv.DictReader(f)
        assert r.fieldnames == COLUMNS
        return [{k: float(v) for k, v in row.items()} for row in r]


def max_soc_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x["soc"] - y["soc"]) for x, y in zip(a, b, strict=True))


def test_micropython_runtime_agrees_with_cpython(trace, tmp_path):
    r1 = replay(trace, tmp_path / "c.csv", "--initial-soc", "0.7")
    r2 = replay(trace, tmp_path / "m.csv", "--initial-soc", "0.7", "--runtime", "micropython")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    a, b = read(tmp_path / "c.csv"), read(tmp_path / "m.csv")
    assert len(a) == 601
    assert max_soc_diff(a, b) < 1e-4
    # The filter pulled the wrong start towards the truth (about 0.89 at the start).
    assert abs(a[-1]["soc"] - 0.7) > 0.1


def test_backends_agree(trace, tmp_path):
    ref = None
    for backend in ("python", "ulab", "native"):
        r = replay(trace, tmp_path / (backend + ".csv"), "--backend", backend)
        assert r.returncode == 0, r.stderr
        rows = read(tmp_path / (backend + ".csv"))
        if ref is None:
            ref = rows
        else:  # float32 backends against the double-precision reference
            assert max_soc_diff(ref, rows) < 1e-4, backend


@pytest.mark.parametrize("body,words", [
    ("time_s,current_a,voltage_v\n0,1,3.7\n", "no column temperature_c"),
    ("time_s,current_a,voltage_v,temperature_c\n0,1,3.7,25\n0,1,3.7,25\n",
     "time_s does not increase"),
    ("time_s,current_a,voltage_v,temperature_c\n0,1,3.7,25\n1,abc,3.7,25\n",
     "'abc' is not a number"),
])
def test_bad_trace_one_sentence_and_no_output(tmp_path, body, words):
    bad = tmp_path / "bad.csv"
    bad.write_text(body)
    out = tmp_path / "est.csv"
    for runtime in ("cpython", "micropython"):
        r = replay(bad, out, "--runtime", runtime)
        assert r.returncode == 2, r
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # no output, no .part


def test_missing_files(tmp_path):
    r = replay(tmp_path / "nope.csv", tmp_path / "o.csv")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_a_calibration_reformatted_by_json_tool_replays_the_same(trace, tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(subprocess.run([sys.executable, "-m", "json.tool", str(CAL)],
                                     capture_output=True, text=True, check=True).stdout)
    ref = tmp_path / "ref.csv"
    assert replay(trace, ref, "--initial-soc", "0.7").returncode == 0
    for runtime in ("cpython", "micropython"):
        out = tmp_path / ("%s.csv" % runtime)
        r = subprocess.run([BMS_HOST, "replay", str(trace), "--calibration", str(pretty),
                            "--out", str(out), "--initial-soc", "0.7", "--runtime", runtime],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert max_soc_diff(read(ref), read(out)) < 1e-4, runtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpython.csv", "micropython.csv",
                                                           "pretty.json", "ref.csv"]
