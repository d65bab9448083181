# Device-side tests of the estimator's re-sync at the ends of the OCV (full at the end of
# a CV charge, empty at the lower limit under a small load), as LFP BMSes do. Plain test_*
# functions with bare asserts: they run under CPython (pytest) and MicroPython.

from bms import backends, estimator, model, soh, ukf
from sim import sample_cal

CAP = 5.0


def _est(soc, sigma):
    e = estimator.CellEstimator(sample_cal.calibration(CAP), backends.PythonBackend())
    e.init(soc, 25.0, sigma)
    return e


def _symmetric_pd(P, n):
    for a in range(n):
        assert P[a * n + a] > 0.0, (a, P[a * n + a])
        for b in range(n):
            assert abs(P[a * n + b] - P[b * n + a]) <= 1e-9 * (1.0 + abs(P[a * n + b]))
            # every 2x2 minor of a positive definite matrix is positive
            if b != a:
                assert P[a * n + a] * P[b * n + b] - P[a * n + b] ** 2 > 0.0, (a, b)


def test_end_of_cv_charge_resyncs_a_confidently_wrong_soc_to_full():
    e = _est(0.80, 0.01)      # 18 points low and sure of it: a flat OCV never told it
    v_top = e.limits["v_max"] - 0.005
    i_taper = -0.04 * CAP     # below C/20: the CV hold has tapered
    assert e.step(i_taper, v_top, 25.0, 25.0, 1.0) == ukf.OK
    assert e.resyncs == 1
    assert abs(e.soc() - soh.FULL_SOC) < 0.02, e.soc()
    assert e.soc_sigma() < 0.03, e.soc_sigma()
    _symmetric_pd(e.P, ukf.NX)
    # taken once per visit: the rest of the taper does not pile up more updates
    for _ in range(20):
        e.step(i_taper, v_top, 25.0, 25.0, 1.0)
    assert e.resyncs == 1


def test_no_resync_under_the_cc_current_or_below_the_limit():
    e = _est(0.80, 0.01)
    v_top = e.limits["v_max"] - 0.005
    e.step(-0.5 * CAP, v_top, 25.0, 25.0, 1.0)          # CC: not tapered yet
    e.step(-0.04 * CAP, v_top - 0.1, 25.0, 25.0, 1.0)   # small current, not at the limit
    e.step(0.5 * CAP, v_top, 25.0, 25.0, 1.0)           # nor is a discharge
    e.step(-0.01 * CAP, v_top, 25.0, 25.0, 1.0)         # nor a rest's offset and noise
    assert e.resyncs == 0
    assert e.soc() < 0.9, e.soc()


def test_resync_rearms_after_the_cell_leaves_the_end():
    e = _est(0.80, 0.01)
    v_top = e.limits["v_max"] - 0.005
    e.step(-0.04 * CAP, v_top, 25.0, 25.0, 1.0)
    assert e.resyncs == 1
    e.step(0.0, 4.0, 25.0, 25.0, 1.0)     # rested well below the limit: re-armed
    e.step(-0.04 * CAP, v_top, 25.0, 25.0, 1.0)
    assert e.resyncs == 2


def test_lower_limit_under_small_load_resyncs_to_the_tables_soc():
    e = _est(0.30, 0.01)      # 30 % sure, the cell at its lower limit
    v_low = e.limits["v_min"] + 0.01
    i = 0.1 * CAP
    before = e.soc()
    e.step(i, v_low, 25.0, 25.0, 1.0)
    assert e.resyncs == 1
    # the OCV table's SOC at the voltage plus the modelled drops, give or take its sigma
    tab = [0.0] * model.NTAB
    z = model.soc_from_ocv(e.p, v_low + 0.2, 25.0, tab)   # a generous bound on the drops
    assert e.soc() < before - 0.1, (before, e.soc())
    assert e.soc() <= z + 0.03, (e.soc(), z)
    _symmetric_pd(e.P, ukf.NX)


def test_no_empty_resync_under_a_heavy_load():
    e = _est(0.30, 0.01)
    e.step(1.0 * CAP, e.limits["v_min"] + 0.01, 25.0, 25.0, 1.0)
    assert e.resyncs == 0


def test_pseudo_soc_is_a_kalman_update():
    e = _est(0.50, 0.05)
    n = ukf.NX
    P = e.P
    P[ukf.BIAS] = P[ukf.BIAS * n] = 2.0      # SOC and offset correlated
    p00, p0b, pbb = P[0], P[ukf.BIAS], P[ukf.BIAS * (n + 1)]
    b0 = e.x[ukf.BIAS]
    e.pseudo_soc(0.60, 0.05)                 # 10 points off: inside 3 sigma of the sum
    r = 25.0
    assert 100.0 < 9.0 * (p00 + r)
    k0 = p00 / (p00 + r)
    assert abs(e.x[ukf.SOC] - (50.0 + k0 * 10.0)) < 1e-6
    assert abs(e.x[ukf.BIAS] - (b0 + p0b / (p00 + r) * 10.0)) < 1e-6
    assert abs(P[0] - p00 * r / (p00 + r)) < 1e-6
    assert abs(P[ukf.BIAS * (n + 1)] - (pbb - p0b * p0b / (p00 + r))) < 1e-6
    _symmetric_pd(P, n)


def test_pseudo_soc_resets_a_filter_that_disagrees_beyond_3_sigma():
    e = _est(0.50, 0.01)
    e.P[ukf.BIAS] = e.P[ukf.BIAS * ukf.NX] = 0.1
    e.pseudo_soc(0.90, 0.01)
    assert abs(e.soc() - 0.90) < 1e-6
    assert abs(e.P[0] - 1.0) < 1e-9
    for k in range(1, ukf.NX):
        assert e.P[k] == 0.0 and e.P[k * ukf.NX] == 0.0
    _symmetric_pd(e.P, ukf.NX)
