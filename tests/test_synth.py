"""Checks on the committed synthetic data (data/<cell>/) and a tiny end-to-end synth run."""
import csv
import hashlib
import json
import math
import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
HEADER = ["time_s", "current_a", "voltage_v", "temperature_c", "ambient_c", "temp_core_c",
          "soc_true"]
VALIDATION = {"dst", "random", "cp", "fastcharge"}
CELL_DIRS = [d for d in ("lgm50", "lfp", "lgm50_aged") if (DATA / d / "manifest.json").exists()]
# the LG M50 aged to ~95/87/80 % and fresh, days of a maker's use (bms-host synth --aged-use)
USE_DIRS = sorted(p.parent.name for p in DATA.glob("lgm50_aged[0-9]*/manifest.json"))
CELL_DIRS += USE_DIRS


def _load(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER, "%s: header %r" % (path.name, rows[0])
    cols = list(zip(*[[float(x) for x in r] for r in rows[1:]], strict=True))
    return dict(zip(HEADER, cols, strict=True))


_CACHE = {}


def load(path):
    if path not in _CACHE:
        _CACHE[path] = _load(path)
    return _CACHE[path]


def manifest(cell):
    return json.loads((DATA / cell / "manifest.json").read_text())


def test_fresh_cells_are_committed():
    assert "lgm50" in CELL_DIRS, "data/lgm50/manifest.json missing: run bms-host synth"


@pytest.mark.parametrize("cell", CELL_DIRS)
def test_manifest_hashes_and_size(cell):
    man = manifest(cell)
    h = hashlib.sha256()
    total = 0
    for f in sorted(man["files"], key=lambda f: f["file"]):
        path = DATA / cell / f["file"]
        data = path.read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f["file"]
        h.update(f["file"].encode() + b"\0" + f["sha256"].encode() + b"\n")
    assert h.hexdigest() == man["dataset_sha256"]
    # the repository's size: each fit experiment adds to it (the pulse test 3.6 MB)
    assert total < 14e6, "%s is %.1f MB" % (cell, total / 1e6)
    on_disk = {p.name for p in (DATA / cell).glob("*.csv")}
    assert on_disk == {f["file"] for f in man["files"]}


@pytest.mark.parametrize("cell", CELL_DIRS)
def test_traces_are_sane(cell):
    man = manifest(cell)
    vmin, vmax = man["voltage_limits_v"]
    q = man["c20_capacity_25c_ah"]
    for f in man["files"]:
        d = load(DATA / cell / f["file"])
        t = d["time_s"]
        n = len(t)
        assert n >= 2, f["file"]
        assert all(t[k] > t[k - 1] for k in range(1, n)), "%s: time not increasing" % f["file"]
        for col in HEADER:
            assert all(math.isfinite(x) for x in d[col]), "%s: %s" % (f["file"], col)
        assert min(d["voltage_v"]) >= vmin - 0.002 and max(d["voltage_v"]) <= vmax + 0.002, (
            "%s: voltage outside %s..%s" % (f["file"], vmin, vmax))
        assert all(x == f["ambient_c"] for x in d["ambient_c"])
        assert d["current_a"][0] == 0.0
        # coulomb balance: soc_true follows the integral of the zero-order-hold current
        ah = 0.0
        worst = 0.0
        for k in range(1, n):
            ah += d["current_a"][k] * (t[k] - t[k - 1]) / 3600.0
            worst = max(worst, abs(d["soc_true"][0] - ah / q - d["soc_true"][k]))
        assert worst < 2e-5 + 1e-4 * ah / q + 5e-6 * n ** 0.5, "%s: soc drift %g" % (
            f["file"], worst)
        assert abs(ah - f["discharged_ah"]) < 1e-3, f["file"]
        if ah > 0.05 * q:
            assert d["soc_true"][-1] < d["soc_true"][0]
        assert abs(t[-1] - f["duration_s"]) < 1e-2
        assert f["role"] in ("fit", "validation")
        if f["profile"] in VALIDATION:
            assert f["role"] == "validation", "%s must not be used for fitting" % f["file"]
        assert f["end_reason"]


@pytest.mark.parametrize("cell", CELL_DIRS)
def test_sampling_is_one_second_for_dynamic(cell):
    for f in manifest(cell)["files"]:
        if f["profile"].startswith("pocv"):
            assert f["sample_s"] >= 30
            continue
        # 1 s for dynamic profiles; the rate test's slow CC legs and rests take 5 s and
        # days-long use traces 1 s on the trips, 10 s charging, 30 s in long rests (a step
        # that ends on a limit or a CV hold, and each step's last sample, fall off-grid)
        t = load(DATA / cell / f["file"])["time_s"]
        steps = [t[k] - t[k - 1] for k in range(1, len(t))]
        if f["profile"] == "use":
            assert f["sample_s"] == [1.0, 10.0, 30.0], f["file"]
            off_grid = sum(1 for s in steps if min(abs(s - x) for x in f["sample_s"]) > 0.05)
            assert off_grid <= 0.02 * len(steps), "%s: %d off-grid" % (f["file"], off_grid)
            continue
        # the minor loops (rests of 20 min between 36 s steps) 12 s
        dt = {"rate": 5.0, "minorloops": 12.0}.get(f["profile"], 1.0)
        assert f["sample_s"] == dt, f["file"]
        off_grid = sum(1 for s in steps if abs(s - dt) > 1e-6)
        allowed = 4 * (1 + len(f["notes"]))
        assert off_grid <= allowed, "%s: %d off-grid" % (f["file"], off_grid)


@pytest.mark.parametrize("cell", [c for c in CELL_DIRS if c in ("lgm50", "lfp")])
def test_every_ambient_has_fit_and_validation_and_a_long_trace(cell):
    man = manifest(cell)
    assert len(man["ambients_c"]) >= 4
    assert min(man["ambients_c"]) <= 0 and max(man["ambients_c"]) >= 45
    for amb in man["ambients_c"]:
        fs = [f for f in man["files"] if f["ambient_c"] == amb]
        profiles = {f["profile"] for f in fs}
        assert {"pocv_dis", "pocv_chg", "hppc"} <= profiles, amb
        assert VALIDATION <= profiles, amb
        dyn = [f for f in fs if f["profile"] in ("dst", "random", "cp")]
        assert max(f["duration_s"] for f in dyn) > 7200, "no dynamic trace > 2 h at %s" % amb


@pytest.mark.parametrize("cell", [c for c in CELL_DIRS if c in ("lgm50", "lfp")])
def test_fast_charge_heats_core_above_surface(cell):
    d = load(DATA / cell / "fastcharge_25C.csv")
    rise = max(c - s for c, s in zip(d["temp_core_c"], d["temperature_c"], strict=True))
    limit = 1.0 if cell == "lgm50" else 0.3
    assert rise >= limit, "core only %.2f K above the can" % rise
    assert min(d["current_a"]) < 0
    assert max(d["voltage_v"]) > manifest(cell)["voltage_limits_v"][1] - 0.01


@pytest.mark.parametrize("cell", [c for c in CELL_DIRS if c in ("lgm50", "lfp")])
def test_stepped_charge_is_fit_data_unlike_the_held_out_fast_charge(cell):
    man = manifest(cell)
    q_nom = man["nominal_capacity_ah"]
    vmax = man["voltage_limits_v"][1]
    steps = [f for f in man["files"] if f["profile"] == "chgsteps"]
    if not steps:
        pytest.skip("no chgsteps traces in data/%s" % cell)
    assert {f["ambient_c"] for f in steps} == set(man["ambients_c"])
    for f in steps:
        assert f["role"] == "fit"
        d = load(DATA / cell / f["file"])
        i = d["current_a"]
        assert max(i) <= 0.0, "%s: charge and rest only" % f["file"]
        # never the held-out 2C: 0.5C, 1C and 1.5C blocks only
        assert {round(-x / q_nom, 3) for x in i if x < 0} <= {0.5, 1.0, 1.5}, f["file"]
        assert max(d["voltage_v"]) > vmax - 0.01, "%s never reaches the upper limit" % f["file"]
        # ends on the 30 min rest after the limit
        assert all(x == 0.0 for x in i[-1800:]), f["file"]


@pytest.mark.parametrize("cell", [c for c in CELL_DIRS if c in ("lgm50", "lfp")])
def test_pulse_test_has_every_current_level_at_every_ambient(cell):
    # fit data: 30 s pulses at 0.5/1/2C discharge and 0.5/1C charge from full down to the
    # lower limit (charge muted only near full), each followed by a minute's rest
    man = manifest(cell)
    q_nom = man["nominal_capacity_ah"]
    pulses = [f for f in man["files"] if f["profile"] == "pulses"]
    assert {f["ambient_c"] for f in pulses} == set(man["ambients_c"])
    for f in pulses:
        assert f["role"] == "fit"
        d = load(DATA / cell / f["file"])
        i, soc = d["current_a"], d["soc_true"]
        levels = {round(x / q_nom, 3) for x in i if x != 0.0}
        assert levels == {0.5, 1.0, 2.0, -0.5, -1.0}, (f["file"], levels)
        assert min(soc) < 0.1, "%s stops at SOC %.2f" % (f["file"], min(soc))
        low = [k for k in range(len(i)) if i[k] < 0.0]
        assert low and soc[low[-1]] < 0.2, "%s: no charge pulse below 20 %% SOC" % f["file"]
        # pulses are 30 s: every run of one current level lasts at most 30 s but the 1C
        # discharge between the steps (300 s)
        run, longest = 1, {}
        for k in range(2, len(i)):
            run = run + 1 if i[k] == i[k - 1] else 1
            longest[i[k]] = max(longest.get(i[k], 0), run)
        assert max(v for x, v in longest.items() if x not in (0.0, round(q_nom, 4))) <= 30


def _v_at_soc(d, soc):
    """The first voltage sample at or past `soc`, in the direction the run moves."""
    s0 = d["soc_true"][0]
    k = next(k for k, x in enumerate(d["soc_true"]) if (x - soc) * (s0 - soc) <= 0)
    return d["voltage_v"][k]


def test_lfp_pocv_pair_shows_the_hysteresis_gap():
    # the LFP cell has a one-state OCP hysteresis (synth_cells.HYSTERESIS): its C/20 charge
    # runs above its discharge by the overpotential both ways (~10 mV at 25 degC) plus the
    # branch gap, 2 * half_gap_v
    if "lfp" not in CELL_DIRS:
        pytest.skip("no data/lfp")
    man = manifest("lfp")
    hyst = man["ocp_hysteresis"]
    for f in man["files"]:
        assert f["init_hysteresis_state"] == (1.0 if f["init_soc_stoich"] >= 1.0 else -1.0)
    dis, chg = load(DATA / "lfp" / "pocv_dis_25C.csv"), load(DATA / "lfp" / "pocv_chg_25C.csv")
    for soc in (0.2, 0.5, 0.8):
        gap = _v_at_soc(chg, soc) - _v_at_soc(dis, soc)
        assert 2 * hyst["half_gap_v"] < gap < 2 * hyst["half_gap_v"] + 0.03, (soc, gap)


@pytest.mark.parametrize("cell", [c for c in ("lgm50", "lfp") if c in CELL_DIRS])
def test_every_start_is_labelled_on_the_full_start_scale(cell):
    # set_initial_state places a start at stoichiometric SOC s linearly in the electrodes'
    # windows, so its Q_rem0 = Q_c20 - (1 - s) * window: the simulated starts inside (0.1,
    # 0.9) give the window, and a start at empty (rested on the cut-off, below a C/20
    # discharge's end) must lie on the same line, below 0 (it was labelled 0)
    man = manifest(cell)
    q = {}
    for f in man["files"]:
        q.setdefault(f["init_soc_stoich"], set()).add(f["q_rem0_ah"])
    assert all(len(v) == 1 for v in q.values()), q
    q = {s: v.pop() for s, v in q.items()}
    q_c20 = man["c20_capacity_25c_ah"]
    assert abs(q[1.0] - q_c20) < 1e-6
    window = (q[0.9] - q[0.1]) / 0.8
    assert window > q_c20
    for s, q0 in q.items():
        assert abs(q0 - (q_c20 - (1.0 - s) * window)) < 2e-4 * q_c20, (s, q0)
    assert q[0.0] < -1e-3 * q_c20
    # the C/20 charge from empty stops at the upper cut-off before the OCV gets there
    chg = load(DATA / cell / "pocv_chg_25C.csv")
    assert chg["soc_true"][0] < 0 and 0.98 < max(chg["soc_true"]) < 1.0


@pytest.mark.parametrize("cell", [c for c in ("lgm50", "lfp") if c in CELL_DIRS])
def test_an_empty_start_is_labelled_from_the_stoichiometry_window(cell):
    # synth_dfn.c20_remaining_ah below the C/20 end: Q_c20 less the window's charge, the
    # window the one the simulated starts at 0.1 and 0.9 (C/20 discharges) imply
    pytest.importorskip("pybamm")
    from bms_host.synth_cells import cell_spec
    from bms_host.synth_dfn import c20_remaining_ah, window_charge_ah

    man = manifest(cell)
    q = {f["init_soc_stoich"]: f["q_rem0_ah"] for f in man["files"]}
    spec = cell_spec(cell)
    window = window_charge_ah(spec)
    assert abs(window - (q[0.9] - q[0.1]) / 0.8) < 1e-4 * window
    q_c20 = q[1.0]    # (the manifest's c20_capacity_25c_ah is rounded)
    assert math.isclose(c20_remaining_ah(spec, 0.0, q_c20), q_c20 - window, abs_tol=1e-12)
    assert abs(c20_remaining_ah(spec, 0.0, q_c20) - q[0.0]) < 1e-9


@pytest.mark.parametrize("cell", [c for c in ("lgm50", "lfp") if c in CELL_DIRS])
def test_manifest_keys_are_the_codes(cell):
    # the committed files are what `bms-host synth` makes now: a change of the simulation or
    # of the soc_true label (synth.file_key) shows here until the data are regenerated
    pytest.importorskip("pybamm")
    import argparse

    from bms_host import synth
    from bms_host.synth_files import _file_name, _pybamm_version

    man = manifest(cell)
    if man["pybamm_version"] != _pybamm_version():
        pytest.skip("data made with PyBaMM %s" % man["pybamm_version"])
    spec, tasks = synth.plan(argparse.Namespace(cell=cell, quick=False, profiles=None,
                                                ambients=None))
    keys = {f["file"]: f["input_key"] for f in man["files"]}
    for p, a in tasks:
        key = synth.file_key(spec, a, p)
        assert keys[_file_name(p, a)] == key, _file_name(p, a)
        # only the starts at empty carry a label tag; the rest keep the simulation's key
        assert (key == synth.experiment_key(spec, a, p)) == (p["init_soc"] > 0)


def test_aged_use_levels_fade_and_grow_in_order():
    if len(USE_DIRS) < 4:
        pytest.skip("data/lgm50_aged<LEVEL> missing: bms-host synth --cell lgm50 --aged-use "
                    "100,95,87,80 --out data")
    by = {int(d[len("lgm50_aged"):]): manifest(d) for d in USE_DIRS}
    assert abs(by[100]["capacity_retention"] - 1.0) < 1e-4
    assert abs(by[100]["c20_capacity_25c_ah"] - manifest("lgm50")["c20_capacity_25c_ah"]) < 1e-3
    levels = sorted(by)
    for lo, hi in zip(levels[:-1], levels[1:], strict=True):
        assert by[lo]["capacity_retention"] < by[hi]["capacity_retention"]
        assert by[lo]["resistance_growth"] > by[hi]["resistance_growth"]
    for lv, man in by.items():
        # each level lands within 1.5 points of its name; resistance grows with fade
        assert abs(man["capacity_retention"] - lv / 100.0) < 0.015, (lv, man["capacity_retention"])
        assert man["resistance_growth"] >= 1.0 + 1.2 * (1.0 - man["capacity_retention"]) - 1e-3


@pytest.mark.parametrize("cell", USE_DIRS)
def test_aged_use_is_days_of_partial_cycles_rests_and_full_charges(cell):
    man = manifest(cell)
    vmax = man["voltage_limits_v"][1]
    assert {f["ambient_c"] for f in man["files"]} >= {25.0, 10.0}
    for f in man["files"]:
        d = load(DATA / cell / f["file"])
        t, i, v, soc = d["time_s"], d["current_a"], d["voltage_v"], d["soc_true"]
        assert t[-1] > 3.5 * 86400, f["file"]
        assert 0.15 < min(soc) < 0.4 and max(soc) > 0.96, (f["file"], min(soc), max(soc))
        # full charges end in a CV hold: at the upper limit with the current tapering to C/20
        full = 0
        for k in range(1, len(t) - 1):
            if v[k] > vmax - 0.005 and -0.06 * 5.0 <= i[k] < 0 and i[k + 1] == 0.0:
                full += 1
        assert full >= 2, "%s: %d CV ends" % (f["file"], full)
        # long rests (>= 2 h) on both sides of the window, every day
        rests, run = [], 0.0
        for k in range(1, len(t)):
            if i[k] == 0.0:
                run += t[k] - t[k - 1]
            else:
                if run >= 7200:
                    rests.append(soc[k - 1])
                run = 0.0
        assert sum(1 for s in rests if s < 0.45) >= 3 and sum(1 for s in rests if s > 0.7) >= 3, (
            f["file"], rests)


def test_pocv_capacity_close_to_nominal():
    man = manifest("lgm50")
    q = man["c20_capacity_25c_ah"]
    assert 0.85 * man["nominal_capacity_ah"] < q < 1.1 * man["nominal_capacity_ah"]
    d = load(DATA / "lgm50" / "pocv_dis_25C.csv")
    assert abs(d["soc_true"][0] - 1.0) < 1e-3
    assert abs(d["soc_true"][-1]) < 5e-3


def test_synth_quick_end_to_end_and_cache(tmp_path, monkeypatch):
    pytest.importorskip("pybamm")
    monkeypatch.setenv("BMS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYBAMM_DISABLE_TELEMETRY", "true")
    from bms_host import cli

    out = tmp_path / "out"
    t0 = time.time()
    assert cli.main(["synth", "--cell", "lgm50", "--out", str(out), "--quick", "--jobs", "1"]) == 0
    first = time.time() - t0
    d = _load(out / "pulse_25C.csv")
    assert d["time_s"][:3] == (0.0, 1.0, 2.0)
    assert len(d["time_s"]) == 121
    # zero-order hold: row k carries the current applied over (t_{k-1}, t_k]
    assert d["current_a"][10] == 0.0 and d["current_a"][11] == 5.0 and d["current_a"][30] == 5.0
    assert d["current_a"][31] == 0.0
    assert d["voltage_v"][30] < d["voltage_v"][31]
    man = json.loads((out / "manifest.json").read_text())
    assert man["files"][0]["sha256"] == hashlib.sha256(
        (out / "pulse_25C.csv").read_bytes()).hexdigest()
    # identical inputs: near-instant, files untouched
    mtime = os.stat(out / "pulse_25C.csv").st_mtime_ns
    t0 = time.time()
    assert cli.main(["synth", "--cell", "lgm50", "--out", str(out), "--quick", "--jobs", "1"]) == 0
    assert time.time() - t0 < max(1.0, first / 5)
    assert os.stat(out / "pulse_25C.csv").st_mtime_ns == mtime
    # a second output folder is filled from the cache without simulating
    out2 = tmp_path / "out2"
    t0 = time.time()
    assert cli.main(["synth", "--cell", "lgm50", "--out", str(out2), "--quick", "--jobs", "1"]) == 0
    assert time.time() - t0 < max(2.0, first / 2)
    assert (out2 / "pulse_25C.csv").read_bytes() == (out / "pulse_25C.csv").read_bytes()


def test_synth_user_errors(tmp_path):
    from bms_host import cli

    assert cli.main(["synth", "--cell", "lgm50", "--out", str(tmp_path), "--quick",
                     "--ambients", "hot"]) == 2
    assert cli.main(["synth", "--cell", "lgm50", "--out", str(tmp_path), "--quick",
                     "--jobs", "8"]) == 2
    assert cli.main(["synth", "--cell", "lgm50", "--out", str(tmp_path),
                     "--aged-use", "100,42"]) == 2
    assert cli.main(["synth", "--cell", "lgm50", "--out", str(tmp_path),
                     "--aged-use", "ninety"]) == 2
    assert cli.main(["synth", "--cell", "lfp", "--out", str(tmp_path),
                     "--aged-use", "95"]) == 2
