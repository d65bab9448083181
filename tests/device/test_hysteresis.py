# Device-side tests of the voltage hysteresis (bms/hysteresis.py) and the estimator's use
# of it. Plain test_* functions with bare asserts: CPython (pytest) and MicroPython.
import math

from bms import backends, calfile, estimator, hysteresis, model, ukf
from sim import sample_cal

CAP = 5.0
M_V = 0.010
GAMMA = 40.0


def _cal(m=M_V, gamma=GAMMA):
    cal = sample_cal.calibration(CAP)
    nt, ns = len(cal["tables"]["temp_c"]), len(cal["tables"]["soc"])
    cal["hysteresis"] = {"m_v": [[m] * ns for _ in range(nt)], "gamma": gamma}
    return cal


def test_current_moves_the_branch_and_a_rest_keeps_it():
    hy = hysteresis.Hysteresis(_cal())
    cap_as = CAP * 3600.0
    for _ in range(180):                  # 5 % of SOC discharged: exp(-40 * 0.05) left
        hy.advance(CAP, 1.0, cap_as)
    assert -1.0 <= hy.h < -0.85, hy.h
    assert hy.sigma < 0.15 * hysteresis.SIGMA_UNKNOWN, hy.sigma
    h = hy.h
    for _ in range(3600):                 # an hour of a sensor's offset: inside the rest band
        hy.advance(0.01 * CAP, 1.0, cap_as)
    assert hy.h == h
    for k in range(3600):                 # its noise: every other sample past the band
        hy.advance((0.03 if k % 2 else 0.0) * CAP, 1.0, cap_as)
    assert hy.h == h
    assert hy.still_s == 7200.0, hy.still_s   # what is unknown of h stays unknown
    for _ in range(36):                   # 1 % charged back
        hy.advance(-CAP, 1.0, cap_as)
    a = math.exp(-GAMMA * 0.01)
    assert abs(hy.h - (a * h + 1.0 - a)) < 1e-5, hy.h      # float32 ports: 1e-5
    assert hy.still_s == 0.0
    v, s = hy.volts(0.5, 25.0)
    assert abs(v - M_V * hy.h) < 1e-7 and abs(s - M_V * hy.sigma) < 1e-7


def test_an_unknown_branch_weighs_no_more_the_longer_a_rest_lasts():
    # a boot on an unknown branch: its offset M*h stays while the cell rests, so an hour
    # of rest must not count as six independent readings of it (HYST_PERSIST_S each)
    e = estimator.CellEstimator(_cal(), backends.PythonBackend())
    e.init(0.5, 25.0, 0.1)
    var = []
    for k in range(360):
        e.step(0.0, 3.7, 25.0, 25.0, 10.0)
        if k in (0, 359):
            var.append(e._hysteresis(0.0, 3.7, 10.0, CAP * 3600.0)[1])
    m = M_V * 1000.0 * hysteresis.SIGMA_UNKNOWN
    assert abs(var[0] - m * m * (estimator.HYST_PERSIST_S + 20.0) / 10.0) < 1.0, var
    assert var[1] > 6.0 * var[0], var


def _run(est_cal, plant_h0=1.0, soc0=0.9, rest_s=3600):
    """A cell with hysteresis (the calibration's model plus M*h) discharged at C/2 from
    soc0 to 0.5, then rested; returns (true SOC, estimate) at the end."""
    cal = _cal()
    p = model.pack(cal)
    plant = model.Simulator(p, soc0, 25.0)
    hy = hysteresis.Hysteresis(cal)
    hy.reset(plant_h0, 0.0)
    e = estimator.CellEstimator(est_cal, backends.PythonBackend())
    e.init(soc0, 25.0, 0.02)
    dt = 10.0                 # 10 s samples: the qemu port runs this too
    steps = int((soc0 - 0.5) * 3600.0 / 0.5 / dt)
    for k in range(steps + int(rest_s / dt)):
        i = 0.5 * CAP if k < steps else 0.0
        v = plant.step(i, 25.0, dt) + hy.advance(i, dt, p[model.CAP_AS]) * M_V
        e.step(i, v, plant.ts, 25.0, dt)
    return plant.soc, e.soc()


def test_estimator_reads_a_rested_cell_right_on_its_discharge_branch():
    truth, with_h = _run(_cal())
    _, without = _run(sample_cal.calibration(CAP))
    assert abs(with_h - truth) < 0.005, (with_h, truth)
    # the gap read as charge: M below the mid OCV looks like less SOC
    assert without - truth < -2.0 * abs(with_h - truth), (without, with_h, truth)


def test_the_voltage_prediction_includes_the_hysteresis():
    e = estimator.CellEstimator(_cal(), backends.PythonBackend())
    e.init(0.6, 25.0, 0.02)
    for _ in range(60):
        e.step(0.5 * CAP, 3.6, 25.0, 25.0, 10.0)
    assert abs(e.voltage_pred_v() - (e.out[ukf.OUT_V] + e.hyst_v)) < 1e-6
    assert e.hyst_v < -0.5 * M_V, e.hyst_v


def _bad(cal, words):
    try:
        calfile.validate(cal)
    except calfile.CalibrationError as err:
        assert words in str(err), str(err)
        return
    raise AssertionError("accepted: " + words)


def test_calibration_hysteresis_is_checked():
    calfile.validate(_cal())
    _bad(_cal(gamma=0.0), "hysteresis.gamma")
    _bad(_cal(m=-0.001), "hysteresis.m_v")
    _bad(_cal(m=0.5), "hysteresis.m_v")
    cal = _cal()
    cal["hysteresis"]["m_v"] = cal["hysteresis"]["m_v"][:1]
    _bad(cal, "one row per temperature")
    cal = _cal()
    del cal["hysteresis"]["gamma"]
    _bad(cal, "hysteresis.gamma")
