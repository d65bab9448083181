"""What a maker feeds replay and simulate: a trace in the wrong units or sign, an output
path that names the input, a logger's last line cut short, an empty file. Each is refused
(or dropped) with one sentence; nothing is overwritten and nothing is left behind."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bms_host import cli

ROOT = Path(__file__).resolve().parents[1]
CAL = ROOT / "calibration" / "lgm50.json"
BMS_HOST = str(Path(sys.executable).parent / "bms-host")
ROWS = 500   # DST at 25 degC: the first 500 s hold rests and current steps both ways


def _variant(path, change=None, rows=ROWS):
    """Write the first rows of a PyBaMM DST trace with `change(row dict)` applied."""
    with open(ROOT / "data" / "lgm50" / "dst_25C.csv") as f, open(path, "w", newline="") as g:
        r = csv.DictReader(f)
        w = csv.DictWriter(g, fieldnames=r.fieldnames, lineterminator="\n")
        w.writeheader()
        for k, row in enumerate(r):
            if k >= rows:
                break
            if change:
                change(row)
            w.writerow(row)
    return path


def _scale(col, factor, offset=0.0):
    def change(row):
        row[col] = repr(float(row[col]) * factor + offset)
    return change


def _kelvin(row):
    for c in ("temperature_c", "ambient_c", "temp_core_c"):
        row[c] = repr(float(row[c]) + 273.15)


MISTAKES = {
    "current in mA": (_scale("current_a", 1000.0), "milliamperes"),
    "voltage in mV": (_scale("voltage_v", 1000.0), "millivolts"),
    "temperature in K": (_kelvin, "kelvin"),
    "time in ms": (_scale("time_s", 1000.0), "milliseconds"),
    "current sign flipped": (_scale("current_a", -1.0), "sign looks flipped"),
}


def _main(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command", ["replay", "simulate"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_unit_mistake_is_named_in_one_sentence(tmp_path, capsys, command, mistake):
    change, words = MISTAKES[mistake]
    trace = _variant(tmp_path / "log.csv", change)
    before = trace.read_bytes()
    out = tmp_path / "out.csv"
    rc, _, err = _main(capsys, command, trace, "--calibration", CAL, "--out", out)
    assert rc == 2, err
    assert words in err and "--allow-implausible" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert trace.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]   # no output, no .part


def test_a_correct_trace_passes_every_check(tmp_path, capsys):
    trace = _variant(tmp_path / "log.csv")
    for command in ("replay", "simulate"):
        rc, out, err = _main(capsys, command, trace, "--calibration", CAL, "--out",
                             tmp_path / ("%s.csv" % command))
        assert rc == 0 and err == "", err


@pytest.mark.parametrize("mistake", ["current in mA", "time in ms", "temperature in K"])
def test_override_runs_a_deliberate_case_without_a_traceback(tmp_path, mistake):
    trace = _variant(tmp_path / "log.csv", MISTAKES[mistake][0])
    for command in ("replay", "simulate"):
        out = tmp_path / ("%s.csv" % command)
        r = subprocess.run([BMS_HOST, command, str(trace), "--calibration", str(CAL), "--out",
                            str(out), "--allow-implausible"], capture_output=True, text=True,
                           timeout=300)
        assert "Traceback" not in r.stderr and "Error:" not in r.stderr, r.stderr
        assert " inf " not in r.stdout and "nan" not in r.stdout.lower(), r.stdout
        if r.returncode == 0:
            assert out.exists()
        else:   # the model may leave its range: then one sentence, and no output
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def _spellings(tmp_path, trace):
    os.symlink(trace, tmp_path / "link.csv")
    os.link(trace, tmp_path / "hard.csv")
    sub = tmp_path / "sub"
    sub.mkdir()
    return [str(trace), str(sub / ".." / trace.name), str(tmp_path / "link.csv"),
            str(tmp_path / "hard.csv"), os.path.relpath(trace)]


@pytest.mark.parametrize("command", ["replay", "simulate"])
def test_out_never_overwrites_an_input(tmp_path, capsys, command):
    trace = _variant(tmp_path / "log.csv", rows=50)
    before = trace.read_bytes()
    cal_before = CAL.read_bytes()
    for out in _spellings(tmp_path, trace) + [str(CAL)]:
        rc, _, err = _main(capsys, command, trace, "--calibration", CAL, "--out", out)
        assert rc == 2 and "would destroy the input" in err, (out, err)
        assert len(err.strip().splitlines()) == 1
    assert trace.read_bytes() == before and CAL.read_bytes() == cal_before


@pytest.mark.parametrize("command", ["replay", "simulate"])
def test_a_last_line_cut_short_is_dropped_with_a_warning(tmp_path, capsys, command):
    trace = _variant(tmp_path / "log.csv", rows=200)
    with open(trace, "a") as f:
        f.write("200,1.2")      # the logger lost power mid-line: no line end
    out = tmp_path / "out.csv"
    rc, _, err = _main(capsys, command, trace, "--calibration", CAL, "--out", out)
    assert rc == 0, err
    assert "warning:" in err and "line 202 is cut short" in err and "dropped" in err, err
    with open(out) as f:
        assert len(f.read().strip().splitlines()) == 1 + 200


def test_a_broken_line_inside_the_trace_is_still_refused(tmp_path, capsys):
    trace = _variant(tmp_path / "log.csv", rows=20)
    lines = trace.read_text().splitlines(keepends=True)
    lines[5] = "5,1.2\n"
    trace.write_text("".join(lines))
    rc, _, err = _main(capsys, "replay", trace, "--calibration", CAL, "--out", tmp_path / "o.csv")
    assert rc == 2 and "line 6" in err, err


@pytest.mark.parametrize("command", ["replay", "simulate"])
@pytest.mark.parametrize("body,words", [
    ("", "is empty"),
    ("time_s,current_a,voltage_v,temperature_c\n", "header but no data rows"),
    ("time_s,current_a,voltage_v,temperature_c\n0,1,3.7,25\n", "at least 2"),
    ("\x00\x01\x02binary\xff", "not a text CSV file"),
])
def test_an_empty_or_header_only_trace_is_refused(tmp_path, capsys, command, body, words):
    trace = tmp_path / "log.csv"
    trace.write_bytes(body.encode("latin-1"))
    rc, _, err = _main(capsys, command, trace, "--calibration", CAL, "--out", tmp_path / "o.csv")
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_an_interrupted_replay_leaves_no_part_file(tmp_path, capsys, monkeypatch):
    from bms_host import replay

    trace = _variant(tmp_path / "log.csv", rows=50)

    def crash(trace, cal, out, *a, **k):
        with open(out, "w") as f:
            f.write("time_s,soc\n0,0.5\n")   # half the result written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(replay, "replay_cpython", crash)
    rc, _, _ = _main(capsys, "replay", trace, "--calibration", CAL, "--out", tmp_path / "o.csv")
    assert rc == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_a_failed_write_of_simulate_leaves_no_part_file(tmp_path, capsys, monkeypatch):
    import numpy as np

    trace = _variant(tmp_path / "log.csv", rows=50)
    real = np.savetxt

    def crash(fname, *a, **k):
        real(fname, *a, **k)
        raise RuntimeError("disk went away")

    monkeypatch.setattr(np, "savetxt", crash)
    with pytest.raises(RuntimeError):
        cli.main(["simulate", str(trace), "--calibration", str(CAL), "--out",
                  str(tmp_path / "o.csv")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_simulate_never_reports_an_infinite_rmse(tmp_path, capsys, monkeypatch):
    import numpy as np

    from bms_host import simulate

    trace = _variant(tmp_path / "log.csv", rows=50)
    real = simulate.simulate_trace

    def diverging(cols, cal, soc=None):
        out = real(cols, cal, soc)
        out["voltage_pred_v"][30:] = np.inf   # what a model driven far out of range gives
        return out

    monkeypatch.setattr(simulate, "simulate_trace", diverging)
    rc, out, err = _main(capsys, "simulate", trace, "--calibration", CAL, "--out",
                         tmp_path / "o.csv", "--allow-implausible")
    assert rc == 2 and "inf" not in out + err and "line 32" in err, (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]
