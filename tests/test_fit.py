"""bms-host fit: runs on a small data set, writes a calibration the device accepts; the
committed calibration meets the floors on held-out data; bad input is one sentence."""
import functools
import math

import calsample
import numpy as np
import pytest

from bms_host import REPO, cli, ecm
from bms_host.calibration import read_calibration
from bms_host.fitting import dataset, options, problem, pulses, thermal, validation

CELLS = ("lgm50", "lfp")
HEADER = "time_s,current_a,voltage_v,temperature_c,ambient_c,temp_core_c,soc_true"


def _save(path, t, i, amb, sim):
    data = np.column_stack([t, i, sim["voltage_v"], sim["temp_surface_c"],
                            np.full(len(t), amb), sim["temp_core_c"], sim["soc"]])
    np.savetxt(path, data, delimiter=",", header=HEADER, comments="", fmt="%.8f")


def _segments(segs, dt=1.0):
    i = [0.0]
    for d, c in segs:
        i.extend([c] * int(d / dt))
    i = np.array(i)
    return np.arange(len(i)) * dt, i


def _i0_truth(soc, temp_c):
    """Exchange current (A) of the kinetic test data: Arrhenius-like in T, mild in SOC."""
    return (0.8 + 0.6 * soc) * math.exp(0.045 * (temp_c - 25.0))


def make_dataset(folder, ambients=(0.0, 25.0), kinetic=False):
    """Traces of the sample calibration's own model: C/20 both ways, a 5-step HPPC, and a
    held-out pulse profile, at each ambient. kinetic: the model has an i0_a table too, and
    a fit-role DST-like trace of several current levels is added."""
    cal = calsample.calibration()
    if kinetic:
        tab = cal["tables"]
        tab["i0_a"] = [[_i0_truth(s, t) for s in tab["soc"]] for t in tab["temp_c"]]
    tb = ecm.Tables.from_cal(cal)
    c = cal["cell"]["capacity_ah"]
    folder.mkdir(parents=True, exist_ok=True)
    for amb in ambients:
        tag = ("m%d" % -amb) if amb < 0 else "%d" % amb
        t, i = _segments([(20 * 3600, c / 20.0)], dt=60.0)
        _save(folder / ("pocv_dis_%sC.csv" % tag), t, i, amb,
              ecm.simulate(tb, t, i, amb, 1.0, amb))
        t, i = _segments([(20 * 3600, -c / 20.0)], dt=60.0)
        _save(folder / ("pocv_chg_%sC.csv" % tag), t, i, amb,
              ecm.simulate(tb, t, i, amb, 0.0, amb))
        segs = []
        for _ in range(5):
            segs += [(10, c), (40, 0.0), (10, -0.75 * c), (40, 0.0), (700, c), (900, 0.0)]
        t, i = _segments(segs)
        _save(folder / ("hppc_%sC.csv" % tag), t, i, amb, ecm.simulate(tb, t, i, amb, 1.0, amb))
        t, i = _segments([(d, calsample.drive_current(k * 7)) for k, d in
                          enumerate([5, 20, 10, 30, 15, 60, 10, 40] * 12)])
        _save(folder / ("random_%sC.csv" % tag), t, i, amb,
              ecm.simulate(tb, t, i, amb, 0.85, amb))
        if kinetic:
            levels = [0.1, 0.5, -0.25, 1.0, 0.0, 2.0, -0.5, 0.25, 1.5, 0.0]
            t, i = _segments([(8 + 4 * (k % 5), c * levels[k % len(levels)])
                              for k in range(700)])
            _save(folder / ("dst_%sC.csv" % tag), t, i, amb,
                  ecm.simulate(tb, t, i, amb, 0.95, amb))
    return cal


def test_fit_small_dataset_gives_a_valid_calibration(tmp_path, capsys):
    data = tmp_path / "data"
    make_dataset(data)
    out = tmp_path / "cal.json"
    rep = tmp_path / "report"
    assert cli.main(["fit", str(data), "--out", str(out), "--report", str(rep),
                     "--cell-id", "sample"]) == 0
    cal, checksum = read_calibration(out)        # the device's validator passes
    assert len(checksum) == 64
    assert cal["cell"]["id"] == "sample" and cal["cell"]["chemistry"] == "nmc"
    assert abs(cal["cell"]["capacity_ah"] - 5.0) < 0.05
    assert set(cal["tables"]) >= {"soc", "temp_c", "ocv_v", "r0_ohm", "r0c_ohm", "r1_ohm",
                                  "tau1_s", "r2_ohm", "tau2_s"}
    prov = cal["provenance"]
    assert {"tool_version", "dataset_sha256", "created", "rmse", "fit_options"} <= set(prov)
    # the data come from the model structure itself: the fit must find it again
    held = prov["rmse"]["random_25C"]
    assert held["role"] == "validation"
    # (not zero: the time constants come from per-step HPPC fits and stay fixed)
    assert held["rmse_mv"] < 10.0 and abs(held["bias_mv"]) < 6.0
    assert (rep / "summary.md").exists() and (rep / "random_25C.png").exists()
    assert "Held-out validation cases" in (rep / "summary.md").read_text()
    # deterministic: a second run gives the same tables
    out2 = tmp_path / "cal2.json"
    assert cli.main(["fit", str(data), "--out", str(out2), "--cell-id", "sample"]) == 0
    assert read_calibration(out2)[0]["tables"] == cal["tables"]
    capsys.readouterr()


def test_fit_finds_the_kinetic_term_and_writes_the_report_next_to_the_file(tmp_path):
    data = tmp_path / "data"
    make_dataset(data, kinetic=True)
    out = tmp_path / "cal" / "kin.json"
    assert cli.main(["fit", str(data), "--out", str(out), "--cell-id", "kin"]) == 0
    assert (tmp_path / "cal" / "reports" / "kin" / "summary.md").exists()
    cal, _ = read_calibration(out)
    prov = cal["provenance"]
    assert prov["split"]["fit_profiles"] == ["dst", "hppc", "pocv_chg", "pocv_dis"]
    assert prov["split"]["validation_profiles"] == ["random"]
    tab = cal["tables"]
    j = tab["temp_c"].index(25.0)
    k = tab["soc"].index(0.5)
    assert 0.6 < tab["i0_a"][j][k] / _i0_truth(0.5, 25.0) < 1.6
    # a regression guard, not zero: the time constants come from per-step HPPC fits and
    # stay fixed, which leaves ~5-15 mV even on data of the model's own structure (the
    # linear fit of the same data: dst_0C 13.9 mV, random_0C 19.7 mV)
    for amb in ("0C", "25C"):
        assert prov["rmse"]["dst_" + amb]["rmse_mv"] < 8.0, amb
        held = prov["rmse"]["random_" + amb]
        assert held["rmse_mv"] < 16.0 and abs(held["bias_mv"]) < 8.0, (amb, held)


def test_pulse_fit_keeps_the_time_constants_in_their_ranges():
    # a 700 s pulse and rest of a cell whose pairs are 25 s and 400 s: the time constants
    # come back near those, and a narrower range for the fast pair (opts tau1_range_s)
    # holds it there
    t = np.arange(0.0, 1600.0)
    i = np.where((t > 100) & (t <= 800), 5.0, 0.0)
    v = np.full(len(t), 3.7)
    a1, a2 = math.exp(-1.0 / 25.0), math.exp(-1.0 / 400.0)
    v1 = v2 = 0.0
    for k in range(1, len(t)):
        v1 = a1 * v1 + 0.01 * (1.0 - a1) * i[k]
        v2 = a2 * v2 + 0.02 * (1.0 - a2) * i[k]
        v[k] -= 0.015 * i[k] + v1 + v2
    f = pulses.local_fit(t, i, v, np.full(len(t), 3.7))
    assert 20.0 < f["tau1"] < 30.0 and 350.0 < f["tau2"] < 450.0, f
    g = pulses.local_fit(t, i, v, np.full(len(t), 3.7), tau1_range=(0.5, 10.0))
    assert g["tau1"] <= 10.0 + 1e-9, g


def test_heat_table_fit_recovers_a_known_heat_and_network(tmp_path):
    """Traces of a model whose ohmic heat has its own table (unlike R0) and heats 40 % of
    i*v1 and 20 % of i*v2: the equation-error step finds that table, the fractions and the
    network again when given the true core heat capacity (the scale it cannot see)."""
    cal = calsample.calibration()
    tab = cal["tables"]
    tab["rh_ohm"] = [[0.5 * v * (2.0 - s) for v, s in zip(row, tab["soc"], strict=True)]
                     for row in tab["r0_ohm"]]
    cal["thermal"].update(heat_v1_fraction=0.4, heat_v2_fraction=0.2)
    truth = ecm.Tables.from_cal(cal)
    c = cal["cell"]["capacity_ah"]
    cases = []
    for amb in (0.0, 25.0):
        for k, (soc0, segs) in enumerate((
                (1.0, [(2400, c), (1800, 0.0), (1200, -c), (1800, 0.0)]),
                (0.9, [(d, 2.0 * calsample.drive_current(j * 5)) for j, d in
                       enumerate([20, 40, 10, 60, 30] * 40)]))):
            t, i = _segments(segs)
            sim = ecm.simulate(truth, t, i, amb, soc0, amb)
            cols = {"time_s": t, "current_a": i, "voltage_v": sim["voltage_v"],
                    "temperature_c": sim["temp_surface_c"], "ambient_c": np.full(len(t), amb),
                    "temp_core_c": sim["temp_core_c"], "soc_true": sim["soc"]}
            cases.append(dataset.Case(tmp_path / ("p%d_%gC.csv" % (k, amb)), "p%d" % k, amb,
                                  "fit", cols))
    # the electrical tables as fitted (the truth's), the heat as the voltage model's
    base = dict(cal, tables={k: v for k, v in tab.items() if k != "rh_ohm"})
    opts = dict(options.default_options(), heat_smooth=1e-4, heat_prior=1e-6)
    got = thermal.fit_heat_table(cases, ecm.Tables.from_cal(base), c, opts,
                             cal["thermal"]["c_core_j_per_k"])
    assert got is not None
    rh, th = got
    for k in ("c_surf_j_per_k", "r_core_surf_k_per_w", "r_surf_amb_k_per_w",
              "heat_v1_fraction", "heat_v2_fraction"):
        assert math.isclose(th[k], cal["thermal"][k], rel_tol=0.05, abs_tol=0.02), k
    # the table where the traces go (the rows the data reach), within 5 %
    want = np.array(tab["rh_ohm"])
    reached = np.array(tab["temp_c"]) <= 30.0
    err = np.abs(rh[reached][:, 1:-1] / want[reached][:, 1:-1] - 1.0)
    assert np.median(err) < 0.05, np.median(err)
    # without core temperatures there is nothing to fit it from
    for case in cases:
        del case.cols["temp_core_c"]
    assert thermal.fit_heat_table(cases, ecm.Tables.from_cal(base), c, opts, 50.0) is None


def test_ocv_gaps_are_the_unrested_nodes_between_rested_ones():
    support = np.array([0.0, 0.3, 50.0, 0.0, 0.0, 12.0, 0.5, 40.0, 0.0])
    assert problem._rest_gaps(support).tolist() == [False, False, False, True, True, False, True,
                                                False, False]
    assert not problem._rest_gaps(np.array([0.0, 9.0, 0.0])).any()   # one rest: no gap


def test_fit_rejects_a_corrupt_csv_with_one_sentence(tmp_path, capsys):
    data = tmp_path / "data"
    make_dataset(data, ambients=(25.0,))
    p = data / "hppc_25C.csv"
    lines = p.read_text().splitlines()
    lines[7] = lines[7].replace(",", ",x", 1)
    p.write_text("\n".join(lines) + "\n")
    assert cli.main(["fit", str(data), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 8" in err and "hppc_25C.csv" in err
    assert not (tmp_path / "c.json").exists()
    assert cli.main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "c.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    p.write_text("time_s,current_a\n0,0\n")
    assert cli.main(["fit", str(data), "--out", str(tmp_path / "c.json")]) == 2
    assert "no column voltage_v" in capsys.readouterr().err
    for bad in ("0", "nan", "1e9"):
        assert cli.main(["fit", str(data), "--out", str(tmp_path / "c.json"),
                         "--tau1-max", bad]) == 2
        assert "--tau1-max must be" in capsys.readouterr().err


def test_fit_options_file_is_checked_and_reaches_the_fit(tmp_path, capsys):
    data = tmp_path / "data"
    make_dataset(data, ambients=(25.0,))
    out = tmp_path / "c.json"
    opts = tmp_path / "opts.json"
    for text, says in (("{", "not valid JSON"), ("[1]", "must be a JSON object"),
                       ('{"prior_rr": 1}', "unknown option 'prior_rr'"),
                       ('{"prior_r": "small"}', "'prior_r' in"),
                       ('{"heat_table": 1}', "'heat_table' in"),
                       ('{"trace_norm": "all"}', "one of rows, loaded"),
                       ('{"tau1_range_s": [30, 0.5]}', "0 < low < high"),
                       ('{"i0_range_a": [0.05, "x"]}', "0 < low < high"),
                       ('{"bias_weight": -0.3}', "'bias_weight' in"),
                       ('{"rest_weight": -1}', "finite number >= 0"),
                       ('{"t_extend_c": 1e999}', "t_extend_c' in")):
        opts.write_text(text)
        assert cli.main(["fit", str(data), "--out", str(out), "--options", str(opts)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
        assert not out.exists()
    assert cli.main(["fit", str(data), "--out", str(out), "--options",
                     str(tmp_path / "none.json")]) == 2
    assert "cannot read the fit options" in capsys.readouterr().err
    opts.write_text('{"trace_norm": "loaded", "prior_r": 1, "tau1_range_s": [0.5, 20.0]}')
    assert cli.main(["fit", str(data), "--out", str(out), "--options", str(opts),
                     "--no-report", "--tau1-max", "30"]) == 0
    cal, _ = read_calibration(out)
    got = cal["provenance"]["fit_options"]
    # the file's options over the defaults; --tau1-max wins over the file
    assert got["trace_norm"] == "loaded" and got["prior_r"] == 1
    assert got["tau1_range_s"] == [0.5, 30.0] and got["bias_weight"] == 1.0


def test_trace_weight_counts_loaded_rows_or_all_selected_rows():
    t, i = _segments([(100, 1.0), (2000, 0.0), (50, -1.0)])
    case = dataset.Case("x.csv", "hppc", 25.0, "fit", {"time_s": t, "current_a": i})
    rows, mult = problem._row_selection(case, rest_weight=10)
    # rested rows count rest_weight times: "rows" counts them so, "loaded" only the 150
    # rows under load
    assert len(np.unique(rows)) == len(rows) > 150
    assert set(mult[problem.rest_time(case)[rows] >= options.REST_OCV_S]) == {10.0}
    assert problem._trace_rows(case, rows, mult, "rows") == mult.sum() > len(rows)
    assert problem._trace_rows(case, rows, mult, "loaded") == 150


def test_fit_of_one_ambient_keeps_its_one_temperature_column(tmp_path):
    # no Arrhenius column above it (that needs two columns): a fit of one ambient
    data = tmp_path / "data"
    make_dataset(data, ambients=(25.0,))
    out = tmp_path / "c.json"
    assert cli.main(["fit", str(data), "--out", str(out), "--no-report"]) == 0
    cal, _ = read_calibration(out)
    assert cal["tables"]["temp_c"] == [25.0]


@functools.lru_cache(maxsize=2)
def _held_out_residuals(cell):
    cal_path, data = REPO / "calibration" / (cell + ".json"), REPO / "data" / cell
    if not cal_path.exists() or not (data / "manifest.json").exists():
        pytest.skip("calibration/%s.json or data/%s not generated" % (cell, cell))
    cal, _ = read_calibration(cal_path)
    tb = ecm.Tables.from_cal(cal)
    out = {}
    # the split the calibration was fitted with (held out = every other profile)
    split = cal["provenance"].get("split", {})
    cases, _ = dataset.load_dataset(data, fit_profiles=split.get("fit_profiles"))
    for c in cases:
        if c.role == "validation":
            m, _, _ = validation.evaluate(c, tb, cal["cell"]["capacity_ah"])
            out[c.name] = (c.ambient_c, m)
    return cal, out


def test_a_long_rest_counts_as_the_voltage_it_relaxes_to():
    # 1800 s rest drifting up as 3.7 V - 8 mV exp(-t/600 s), a 300 s rest, a load after
    t, i = _segments([(100, 5.0), (1800, 0.0), (100, 5.0), (300, 0.0), (50, 5.0)])
    since = problem.rest_time(dataset.Case("x.csv", "hppc", 0.0, "fit",
                                            {"time_s": t, "current_a": i}))
    v = np.where(i == 0.0, 3.7 - 0.008 * np.exp(-since / 600.0), 3.6)
    case = dataset.Case("x.csv", "hppc", 0.0, "fit",
                        {"time_s": t, "current_a": i, "voltage_v": v})
    got = problem._relaxed_voltage(case)
    late = since >= options.REST_OCV_S
    assert late.any() and np.abs(got[late] - 3.7).max() < 2e-4     # raw: 0.4 mV short
    assert np.abs(v[late] - 3.7).max() > 2e-3
    assert np.array_equal(got[~late], v[~late])    # loads, short rests and early rows kept


@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_holds_out_every_other_dynamic_profile(cell):
    cal, res = _held_out_residuals(cell)
    split = cal["provenance"]["split"]
    # the LFP cell has voltage hysteresis: its minor loops are fitted too
    assert set(split["fit_profiles"]) == {"pocv_dis", "pocv_chg", "hppc", "pulses", "dst",
                                          "chgsteps", "rate"} | (
        {"minorloops"} if cell == "lfp" else set())
    assert ("hysteresis" in cal) == (cell == "lfp")
    assert set(split["validation_profiles"]) == {"random", "cp", "fastcharge"}
    assert {n.rsplit("_", 1)[0] for n in res} == {"random", "cp", "fastcharge"}
    assert "i0_a" in cal["tables"] and "r0c_ohm" in cal["tables"]


@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_matches_its_provenance(cell):
    cal, res = _held_out_residuals(cell)
    # make calibration's options per cell (fit --options) reached the fit
    path = REPO / "calibration" / "options" / (cell + ".json")
    want = dict(options.default_options(), **(options.read_options(path) if path.exists() else {}))
    got = cal["provenance"]["fit_options"]
    for k in ("tau1_range_s", "trace_norm", "bias_weight", "prior_r"):
        assert got[k] == want[k], k
    # a fit from before rest_relax existed did not extrapolate its rests
    assert got.get("rest_relax", False) == want["rest_relax"]
    for name, (_, m) in res.items():
        rec = cal["provenance"]["rmse"][name]
        assert math.isclose(rec["rmse_mv"], m["rmse_mv"], abs_tol=0.01), name


@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_signed_fits_the_boards_receive_buffer(cell):
    # bms.telemetry's MQTT client takes a signed push whole into a 32 KB buffer (the
    # default rx_buffer); 256 bytes left for the packet's header and topic
    from bms import telemetry
    text = (REPO / "calibration" / ("%s.json" % cell)).read_text()
    assert len(telemetry.sign(b"k" * 32, text, issued=2 ** 40)) + 256 <= 32768


@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_is_the_canonical_text_of_its_content(cell):
    # compact, sorted keys: what `make calibration` writes, byte for byte
    from bms_host import calibration
    path = REPO / "calibration" / ("%s.json" % cell)
    cal, _ = read_calibration(path)
    assert path.read_text() == calibration.encode(cal)
    assert "\n" not in path.read_text()


@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_surface_temperature_meets_the_floor(cell):
    # with the ohmic heat's own table (fit_heat_table); from R0, cp_m10C was 0.72 degC
    _, res = _held_out_residuals(cell)
    bad = ["%s %.2f degC" % (n, m["t_rmse_c"]) for n, (_, m) in sorted(res.items())
           if m["t_rmse_c"] > 0.5]
    assert not bad, "surface temperature above 0.5 degC RMSE: " + ", ".join(bad)


def _floor_misses(cell):
    """validation.floor_misses over the committed calibration's held-out cases: (held-out cases
    above the floors, stress cases above the same numbers), each as 'name mV / degC'."""
    from bms_host.fitting.validation import floor_misses
    _, res = _held_out_residuals(cell)
    results = {n: dict(m, ambient_c=amb, role="validation", profile=n.rsplit("_", 1)[0])
               for n, (amb, m) in res.items()}
    return tuple(["%s %.1f mV / %.2f degC" % (n, results[n]["rmse_mv"], results[n]["t_rmse_c"])
                  for n in names] for names in floor_misses(results))


@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_meets_the_floors(cell):
    # every held-out dynamic profile (random pulses, constant power) at every ambient
    from bms_host.fitting.validation import STRESS_PROFILES
    _, res = _held_out_residuals(cell)
    assert {n.rsplit("_", 1)[0] for n in res} - set(STRESS_PROFILES) == {"random", "cp"}
    bad, _ = _floor_misses(cell)
    assert not bad, "held-out cases above the floors: " + ", ".join(bad)


@pytest.mark.xfail(reason="the 2C fast charge (a stress case, not counted) is above 10 mV: "
                          "lgm50 fastcharge_0C 12.7, fastcharge_m10C 26.3 (2C charge in "
                          "the cold); lfp 15-18 mV at every ambient (see "
                          "calibration/reports/*/summary.md)", strict=False)
@pytest.mark.parametrize("cell", CELLS)
def test_committed_calibration_fast_charge_meets_the_floors_numbers(cell):
    _, stress = _floor_misses(cell)
    assert not stress, "fast charge above the floors' numbers: " + ", ".join(stress)


def test_fit_finds_the_hysteresis_of_a_cell_that_has_one(tmp_path, capsys):
    # the sample model with a 10 mV half gap switching at gamma 40: the C/20 pair gives M,
    # the minor loops' rests gamma (fitting/hysteresis.py); a cell without it gets none
    cal = calsample.calibration()
    nt, ns = len(cal["tables"]["temp_c"]), len(cal["tables"]["soc"])
    cal["hysteresis"] = {"m_v": [[0.010] * ns for _ in range(nt)], "gamma": 40.0}
    tb = ecm.Tables.from_cal(cal)
    c = cal["cell"]["capacity_ah"]
    data = tmp_path / "data"
    data.mkdir()
    t, i = _segments([(20 * 3600, c / 20.0)], dt=60.0)
    _save(data / "pocv_dis_25C.csv", t, i, 25.0, ecm.simulate(tb, t, i, 25.0, 1.0, 25.0))
    t, i = _segments([(20 * 3600, -c / 20.0)], dt=60.0)
    _save(data / "pocv_chg_25C.csv", t, i, 25.0, ecm.simulate(tb, t, i, 25.0, 0.0, 25.0))
    segs = []
    for _ in range(5):
        segs += [(10, c), (40, 0.0), (10, -0.75 * c), (40, 0.0), (700, c), (900, 0.0)]
    t, i = _segments(segs)
    _save(data / "hppc_25C.csv", t, i, 25.0, ecm.simulate(tb, t, i, 25.0, 1.0, 25.0))
    segs = [(2160, c / 2.0), (1200, 0.0)]
    for sign in (-1, 1):
        segs += [(36, sign * c / 2.0), (1200, 0.0)] * 4
    t, i = _segments(segs)
    _save(data / "minorloops_25C.csv", t, i, 25.0, ecm.simulate(tb, t, i, 25.0, 1.0, 25.0))
    out = tmp_path / "cal.json"
    assert cli.main(["fit", str(data), "--out", str(out), "--cell-id", "sample"]) == 0
    got, _ = read_calibration(out)
    m = np.array(got["hysteresis"]["m_v"])
    assert abs(np.median(m) - 0.010) < 0.001, m
    assert 30.0 < got["hysteresis"]["gamma"] < 53.0, got["hysteresis"]
    assert "hysteresis M" in capsys.readouterr().out
    # the same data without the hysteresis: no state
    (data / "minorloops_25C.csv").unlink()
    cal.pop("hysteresis")
    tb = ecm.Tables.from_cal(cal)
    for name in ("pocv_dis", "pocv_chg"):
        path = data / ("%s_25C.csv" % name)
        tr = np.genfromtxt(path, delimiter=",", names=True)
        t, i = tr["time_s"], tr["current_a"]
        _save(path, t, i, 25.0, ecm.simulate(tb, t, i, 25.0, 1.0 if name == "pocv_dis" else 0.0,
                                             25.0))
    assert cli.main(["fit", str(data), "--out", str(out), "--cell-id", "sample"]) == 0
    assert "hysteresis" not in read_calibration(out)[0]
    assert "no hysteresis state" in capsys.readouterr().out


def test_hysteresis_m_beyond_a_steep_ocv_end_holds_then_tapers_to_zero():
    # the C/20 pair's M is model error where the OCV is steep: held from the last node
    # it resolves, falling to 0 over the window's last END_TAPER_SOC; the flat part kept
    from types import SimpleNamespace

    from bms_host.fitting import hysteresis as fh
    g = np.array(options.SOC_GRID)
    ocv = 3.2 + 0.1 * g + 2.0 * np.maximum(g - 0.95, 0.0)   # 1 mV/% then 21 mV/% past 95 %
    tb = SimpleNamespace(soc=g, tab={"ocv_v": np.vstack([ocv, ocv])})
    m = np.full((2, len(g)), 0.010)
    m[:, g >= 0.95] = -0.03                                  # what the pair gives there
    got = fh._steep_ends(m, tb)
    want = np.full(len(g), 0.010)
    for s, f in ((0.95, 1.0), (0.975, 0.5), (0.99, 0.2), (1.0, 0.0)):
        want[g == s] = 0.010 * f
    assert np.allclose(got, want), got


def _branch_case(name, segs, soc0, h0, ocv, m_v, gamma, cap):
    """A trace of a cell that is OCV(soc) + M*h and nothing else (1 s samples)."""
    t, i = _segments(segs)
    soc = ecm.soc_path(soc0, i, ecm.dts(t), cap)
    h = ecm.hysteresis_path(t, i, cap, gamma, h0)
    cols = {"time_s": t, "current_a": i, "voltage_v": ocv(soc) + m_v * h,
            "temperature_c": np.full(len(t), 25.0), "ambient_c": np.full(len(t), 25.0),
            "soc_true": soc}
    case = dataset.Case(name + "_25C.csv", name, 25.0, "fit", cols)
    case.h0 = h0
    return case


def test_branch_pairs_read_m_where_the_ocv_is_flat_only():
    # rests after charges (h = +1) and after discharges (h = -1) at nearby SOCs: half
    # their difference is M where the OCV is flat; on the steep part (a rest's SOC read a
    # little off would be voltage) no pair is taken
    from types import SimpleNamespace

    from bms_host.fitting import hysteresis as fh
    cap, gamma, m_v = 2.0, 40.0, 0.010

    def ocv(s):
        s = np.asarray(s, dtype=float)
        return 3.3 + 0.01 * s + 1.0 * np.maximum(0.45 - s, 0.0)   # 0.1 mV/%, 10 mV/% below 45 %

    tb = SimpleNamespace(ocv=lambda s, t: ocv(s))
    # 2 % of SOC, then 10 min rest, 12 times: down from 60 % on the discharge branch, up
    # from 36 % on the charge branch
    dis = [(720, cap / 10.0), (600, 0.0)] * 12
    chg = [(720, -cap / 10.0), (600, 0.0)] * 12
    got = fh._branch_pairs([_branch_case("dis", dis, 0.6, -1.0, ocv, m_v, gamma, cap),
                            _branch_case("chg", chg, 0.36, 1.0, ocv, m_v, gamma, cap)],
                           tb, cap, gamma)
    assert len(got) >= 8, got
    assert all(s > 0.44 for s, _, _ in got), got
    assert np.allclose([m for _, _, m in got], m_v, atol=2e-4), got
    # a cell with M = 0 gives 0: no pair is read as a gap
    got = fh._branch_pairs([_branch_case("dis", dis, 0.6, -1.0, ocv, 0.0, gamma, cap),
                            _branch_case("chg", chg, 0.36, 1.0, ocv, 0.0, gamma, cap)],
                           tb, cap, gamma)
    assert len(got) >= 8 and np.allclose([m for _, _, m in got], 0.0, atol=1e-6), got


def test_the_manifest_sets_where_a_trace_starts_its_hysteresis(tmp_path):
    # a trace from mid-SOC after a discharge starts on the discharge branch whatever its
    # first current: the manifest's init_hysteresis_state, else ecm.first_branch
    import json
    data = tmp_path / "data"
    make_dataset(data, ambients=(25.0,))
    (data / "manifest.json").write_text(json.dumps({"files": [
        {"file": "hppc_25C.csv", "role": "fit", "init_hysteresis_state": -1.0},
        {"file": "pocv_dis_25C.csv", "role": "fit"}]}))
    cases, _ = dataset.load_dataset(data)
    h0 = {c.name: c.h0 for c in cases}
    assert h0["hppc_25C"] == -1.0 and h0["pocv_dis_25C"] is None and h0["pocv_chg_25C"] is None
    cal = calsample.calibration()
    nt, ns = len(cal["tables"]["temp_c"]), len(cal["tables"]["soc"])
    cal["hysteresis"] = {"m_v": [[0.010] * ns for _ in range(nt)], "gamma": 40.0}
    tb = ecm.Tables.from_cal(cal)
    hppc = next(c for c in cases if c.name == "hppc_25C")
    _, sim_manifest, _ = validation.evaluate(hppc, tb, tb.capacity_ah)
    hppc.h0 = None
    _, sim_rule, _ = validation.evaluate(hppc, tb, tb.capacity_ah)
    # row 0, before any current: 2 M apart (-M against the rule's +M for a discharge)
    assert abs(sim_rule["voltage_v"][0] - sim_manifest["voltage_v"][0] - 0.020) < 1e-6
