"""bms-host fit on a folder of cycler exports as they are: a small folder written like the
lab's (Arbin-style columns, discharge negative, uneven sampling, ambients in the names)
from a known model, fitted end to end; the pieces of the measured fit on their own."""
import math

import calsample
import numpy as np
import pytest

from bms_host import cli, ecm
from bms_host.calibration import read_calibration
from bms_host.fitting import measured

HEADER = "Test_Time(s),Current(A),Voltage(V),Temperature(C)"


def _write(path, t, i, sim):
    path.parent.mkdir(parents=True, exist_ok=True)
    # the cycler's sign: discharge negative
    data = np.column_stack([t, -i, sim["voltage_v"], sim["temp_surface_c"]])
    np.savetxt(path, data, delimiter=",", header=HEADER, comments="", fmt="%.5f")


def _profile(segs):
    """(duration s, current A, sample period s) segments -> time, current (row k's
    current over (t[k-1], t[k]])."""
    t, i = [0.0], [0.0]
    for d, c, dt in segs:
        n = int(round(d / dt))
        t.extend(t[-1] + dt * np.arange(1, n + 1))
        i.extend([c] * n)
    return np.array(t), np.array(i)


def make_folder(root, ambients=(0.0, 25.0)):
    cal = calsample.calibration()
    tb = ecm.Tables.from_cal(cal)
    cap = cal["cell"]["capacity_ah"]
    for amb in ambients:
        tag = "%gC" % amb
        # rested full, 1C to 0.3 % SOC, 2 h rest, C/3 charge, rest; 10 s log, 1 s at changes
        t, i = _profile([(60, 0.0, 10.0), (10, cap, 1.0), (3580, cap, 10.0), (10, 0.0, 1.0),
                         (3590, 0.0, 10.0), (10, -cap / 3, 1.0), (10270, -cap / 3, 10.0),
                         (3600, 0.0, 30.0)])
        _write(root / "rate" / ("%s_1C.csv" % tag), t, i,
               ecm.simulate(tb, t, i, amb, 1.0, amb))
        for k, soc in enumerate((0.2, 0.5, 0.8)):
            t, i = _profile([(0.5, 0.0, 0.5), (10, cap, 0.1), (10, 0.0, 0.1)])
            _write(root / "pulse" / ("%s_soc%d_cell1.csv" % (tag, k + 1)), t, i,
                   ecm.simulate(tb, t, i, amb, soc, amb))
    s = np.linspace(0.0, 1.0, 101)
    ocv = tb.ocv(s, np.full(len(s), 25.0))
    np.savetxt(root / "ocv_25C.csv", np.column_stack([100 * s, ocv, 0 * s]), delimiter=",",
               header="soc_pct,ocv_mean_v,hysteresis_v", comments="", fmt="%.5f")
    return cal, tb


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("measured")
    data = root / "lab"
    cal, tb = make_folder(data)
    out = root / "cal.json"
    return data, out, cal, tb


def test_fit_of_cycler_exports_as_they_are(fitted, capsys):
    data, out, truth, tb = fitted
    # a shorter search than the default (the test's time): fewer i0 iterations, no
    # diffusion candidates
    opts = out.parent / "opts.json"
    opts.write_text('{"i0_max_nfev": 8, "shift_candidates": []}')
    assert cli.main(["fit", str(data), "--out", str(out), "--no-report", "--options",
                     str(opts), "--cell-id", "lab"]) == 0
    text = capsys.readouterr().out
    cal, _ = read_calibration(out)           # the device's validator passes
    # what it found, one sentence per file, and what is missing
    assert "rate/25C_1C.csv: rate test at 25 degC: 1.00C discharge" in text
    assert "pulse/0C_soc2_cell1.csv: 1 pulse at 0 degC" in text
    assert "ocv_25C.csv: OCV table at 25 degC" in text
    assert "no test below 0 degC: the cold tables (down to -20 degC) are extrapolated" in text
    assert "OCV measured at 25 degC only" in text
    assert "no charge pulses" in text
    # capacity: the 25 degC discharge (1C for 3590 s)
    cap = truth["cell"]["capacity_ah"]
    assert math.isclose(cal["cell"]["capacity_ah"], cap * 3590 / 3600, rel_tol=0.005)
    tab = cal["tables"]
    assert tab["temp_c"][0] == -20.0 and tab["temp_c"][-1] == 65.0
    assert {0.0, 25.0} <= set(tab["temp_c"])
    # the pulses' R0 comes back (the data are the model's own)
    j, k = tab["temp_c"].index(25.0), tab["soc"].index(0.5)
    r0 = tb.lookup("r0_ohm", np.array([0.5]), np.array([25.0]))[0]
    assert 0.8 < tab["r0_ohm"][j][k] / r0 < 1.25
    # cold resistances above warm ones, and on beyond the data (Arrhenius)
    j0 = tab["temp_c"].index(0.0)
    assert tab["r0_ohm"][0][k] >= tab["r0_ohm"][j0][k] > tab["r0_ohm"][j][k]
    # the long tests are reproduced open loop
    rm = cal["provenance"]["rmse"]
    assert rm["rate_25C_1C"]["rmse_mv"] < 20.0, rm["rate_25C_1C"]
    assert rm["pulses_25C_median"]["rmse_mv"] < 10.0


def test_table_temperatures_reach_the_limits_without_wide_gaps():
    assert measured.table_temps([0.0, 25.0, 45.0]) == [-20.0, 0.0, 25.0, 45.0, 65.0]
    t = measured.table_temps([0.0, 45.0])
    assert t[0] == -20.0 and t[-1] == 65.0 and len(t) == 5 and 15.0 < t[2] < 30.0
    assert max(np.diff(measured.table_temps([25.0]))) <= measured.MAX_GAP_C


def test_arrhenius_fill_is_log_linear_in_inverse_temperature():
    rows = np.array([[4.0], [1.0]])
    got = measured.arrhenius_fill([0.0, 25.0], rows, [0.0, 10.0, 25.0, 45.0], rising=False)
    x = 1.0 / (np.array([0.0, 10.0, 25.0]) + 273.15)
    want10 = math.exp(math.log(4.0) + (x[1] - x[0]) / (x[2] - x[0]) * math.log(0.25))
    assert got[0, 0] == pytest.approx(4.0) and got[2, 0] == pytest.approx(1.0)
    assert got[1, 0] == pytest.approx(want10)
    assert got[3, 0] < 1.0       # a resistance falls on beyond the warmest data


def test_between_ambients_a_resistance_is_a_constant_and_an_activated_part():
    # 1.6x from 0 to 45 degC, less than the activation alone (7.9x): the constant part
    # takes the rest, and 25 degC sits below the log-linear line (the LG M50's 10 s pulse
    # resistance: 1.43x from 0 to 25, 1.12x from 25 to 45 degC)
    rows = np.array([[1.6], [1.0]])
    got = measured.arrhenius_fill([0.0, 45.0], rows, [0.0, 25.0, 45.0], rising=False)
    x = 1.0 / (np.array([0.0, 25.0, 45.0]) + 273.15)
    g = np.exp(measured.RES_ACTIVATION_K * (x - x[2]))
    b = 0.6 / (g[0] - 1.0)
    assert got[1, 0] == pytest.approx(1.0 - b + b * g[1])
    loglin = math.exp((x[1] - x[2]) / (x[0] - x[2]) * math.log(1.6))
    assert 1.0 < got[1, 0] < loglin
    assert got[1, 0] == pytest.approx(1.12, rel=0.01)
    # an exchange current keeps the log-linear line
    up = measured.arrhenius_fill([0.0, 45.0], 1.0 / rows, [25.0], rising=True)
    assert up[0, 0] == pytest.approx(1.0 / loglin)


def test_beyond_the_warmest_data_the_slope_flattens_but_not_below_the_coldest():
    rows = np.array([[4.0], [1.0]])
    temps = [-20.0, 0.0, 25.0, 45.0]
    got = measured.arrhenius_fill([0.0, 25.0], rows, temps, rising=False)
    x = 1.0 / (np.array(temps) + 273.15)
    f45 = (x[3] - x[1]) / (x[2] - x[1])
    f_m20 = (x[0] - x[1]) / (x[2] - x[1])
    # warmer: a fraction WARM_SLOPE of the line's further fall; colder: the whole line
    want45 = math.exp(math.log(4.0) + (1.0 + measured.WARM_SLOPE * (f45 - 1.0))
                      * math.log(0.25))
    assert got[3, 0] == pytest.approx(want45)
    assert got[0, 0] == pytest.approx(math.exp(math.log(4.0) + f_m20 * math.log(0.25)))
    full45 = math.exp(math.log(4.0) + f45 * math.log(0.25))
    assert full45 < got[3, 0] < 1.0
    # an exchange current (rising) likewise rises less steeply past the warmest data
    up = measured.arrhenius_fill([0.0, 25.0], 1.0 / rows, temps, rising=True)
    assert up[3, 0] == pytest.approx(1.0 / want45)


def test_thinning_keeps_the_charge_and_the_steps():
    t, i = _profile([(60, 0.0, 1.0), (600, 5.0, 1.0), (600, 0.0, 1.0)])
    cols = {"time_s": t, "current_a": i, "voltage_v": 3.7 - 0.01 * i}
    out = measured.thin(cols)
    assert len(out["time_s"]) < len(t) / 3
    q = np.sum(i[1:] * np.diff(t))
    assert np.sum(out["current_a"][1:] * np.diff(out["time_s"])) == pytest.approx(q)
    # every row of the first minute after the step is kept
    on = np.nonzero((t > 60) & (t <= 120))[0]
    assert set(t[on]) <= set(out["time_s"])


def _held_value(strong):
    """R0 at a column without data (strong prior, prior 20 mOhm) when one data row asks
    for 40 mOhm there: the regularised least squares of the fit, solved directly."""
    from bms_host.fitting import problem
    from bms_host.fitting.options import default_options
    soc, temps = [0.0, 0.5, 1.0], [0.0, 25.0, 45.0]
    ns, nt = len(soc), len(temps)
    npar = ns * nt
    P = npar * len(problem.LIN)
    tabs = {n: np.full((nt, ns), 0.02) for n in ("r0_ohm", "r0c_ohm", "r1_ohm", "r2_ohm")}
    ocv = np.tile([3.0, 3.6, 4.2], (nt, 1))
    opts = dict(default_options(), _strong_prior_t=[2])
    if strong is not None:
        opts["strong_prior"] = strong
    R, rhs = problem._regularisation(soc, temps, tabs, ocv, opts, np.full(P, 100.0), P)
    gi = problem.LIN.index("r0_ohm") * npar + 2 * ns + 1
    row = np.zeros(P)
    row[gi] = 1.0
    A = np.vstack([R, row])
    b = np.concatenate([rhs, [0.04]])
    x = np.linalg.lstsq(A, b, rcond=None)[0]
    return x[gi]


def test_a_column_without_data_is_held_as_firmly_as_asked():
    default, firm = _held_value(None), _held_value(300.0)
    assert 0.02 < firm < default < 0.04
    assert firm - 0.02 < 0.2 * (default - 0.02)
    # the measured fit asks for the firmer hold
    assert measured.measured_options()["strong_prior"] > 30.0
