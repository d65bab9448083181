# Device-side tests of the estimator parts: UKF convergence and honesty, NaN skip, RLS,
# SOP against the model, long-run finiteness (SOH: test_soh.py). Plain test_* functions with
# bare asserts: they run under CPython (pytest) and MicroPython (mpy_runner).
import math
import sys

from bms import backends, estimator, model, rls, sop, ukf
from sim import sample_cal

MPY = sys.implementation.name == "micropython"
CAP = 5.0


class _Rng:
    """Seeded Gaussian noise that behaves the same in CPython and MicroPython (whose
    random module has no Random class)."""

    def __init__(self, seed):
        self.s = seed * 2654435761 % 4294967296 or 1

    def _u(self):
        self.s = (1664525 * self.s + 1013904223) % 4294967296
        return (self.s + 0.5) / 4294967296.0

    def gauss(self, mu, sigma):
        r = math.sqrt(-2.0 * math.log(self._u()))
        return mu + sigma * r * math.cos(6.283185307 * self._u())


def _plant(soc, temp_c=25.0, cap_ah=CAP):
    cal = sample_cal.calibration(cap_ah)
    return model.Simulator(model.pack(cal), soc, temp_c)


def _est():
    return estimator.CellEstimator(sample_cal.calibration(CAP), backends.PythonBackend())


def test_filter_converges_from_20_points_off_and_covers_truth():
    plant = _plant(0.75)
    est = _est()
    est.init(0.55, 25.0)
    sig0 = est.soc_sigma()
    rng = _Rng(1)
    worst_late = 0.0
    n = 900 if MPY else 1500
    for k in range(n):
        i = sample_cal.drive_current(k, CAP)
        v = plant.step(i, 25.0, 1.0) + rng.gauss(0.0, 0.002)
        assert est.step(i + 0.01, v, plant.ts + rng.gauss(0.0, 0.05), 25.0, 1.0) == ukf.OK
        if k > n - 300:
            err = abs(est.soc() - plant.soc)
            worst_late = max(worst_late, err)
            assert err <= 3.0 * est.soc_sigma(), (k, err, est.soc_sigma())
    assert worst_late < 0.02, worst_late
    assert est.soc_sigma() < 0.25 * sig0, (est.soc_sigma(), sig0)
    assert abs(est.temp_core_c() - plant.tc) < 1.0


def test_nan_measurement_is_skipped():
    plant = _plant(0.6)
    est = _est()
    est.init(0.6, 25.0, 0.02)
    nan = float("nan")
    for k in range(60):
        i = sample_cal.drive_current(k, CAP)
        plant.step(i, 25.0, 1.0)
        assert est.step(i, nan, nan, 25.0, 1.0) == ukf.OK
    assert est.soc() == est.soc()
    # Without measurements the SOC is coulomb counted: it follows the plant closely.
    assert abs(est.soc() - plant.soc) < 0.005, (est.soc(), plant.soc)
    for k in range(ukf.NX):
        assert est.x[k] == est.x[k]
    for v in est.P:
        assert v == v


def test_rls_tracks_a_50_percent_step_in_r0_within_10_minutes():
    plant = _plant(0.8)
    p = plant.p
    r = rls.R0Estimator(forget=estimator.RLS_FORGET, p0=estimator.RLS_P0)
    tab = [0.0] * model.NTAB
    rng = _Rng(2)
    t_step = 600
    for k in range(t_step + 600):
        if k == t_step:
            plant.r0s = 1.5
        i = sample_cal.drive_current(k, CAP)
        v = plant.step(i, 25.0, 1.0) + rng.gauss(0.0, 0.001)
        model.lookup(p, plant.soc, plant.tc, tab)
        r0_tab = tab[model.R0] if i >= 0 else tab[model.R0C]
        r.update(i, v, plant.v1 + plant.v2, r0_tab)
        if k == t_step - 1:
            assert abs(r.scale - 1.0) < 0.05, r.scale
    assert abs(r.scale - 1.5) < 0.075, r.scale


def test_a_step_to_rest_is_learnt_against_the_resistance_of_its_loaded_side():
    # The ohmic drop that vanishes when a charge ends is the charge R0 (R0C), while the
    # current at rest reads 0 (or a few mA either way). Set against the discharge R0, a
    # cell whose R0C is twice its R0 read as grown from the calibration it was made of.
    cal = sample_cal.calibration(CAP)
    tabs = cal["tables"]
    tabs["r0c_ohm"] = [[2.0 * v for v in row] for row in tabs["r0_ohm"]]
    plant = model.Simulator(model.pack(cal), 0.5, 25.0)
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    est.init(0.5, 25.0)
    for k in range(80):
        i = -CAP if (k // 5) % 2 else 0.0       # 5 s charge at 1C, 5 s rest, in turn
        v = plant.step(i, 25.0, 1.0)
        assert est.step(i, v, plant.ts, 25.0, 1.0) == ukf.OK
    r = est.rls
    assert r.updates >= 10 and 0.9 < r.scale < 1.1, (r.updates, r.scale)


def test_sop_limits_never_cross_voltage_limits():
    cal = sample_cal.calibration(CAP)
    lim = cal["limits"]
    tab = [0.0] * model.NTAB
    socs = (0.08, 0.5, 0.95) if MPY else (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97)
    for temp in (0.0, 25.0, 45.0):
        for soc in socs:
            p = model.pack(cal)
            st = (soc, 0.0, 0.0, temp, temp)
            cell = (p[model.CAP_AS], 1.0, 0.0)
            for h in sop.HORIZONS_S:
                i_dis, i_chg = sop.limits(p, cell, st, temp, lim, h, tab)
                for i in (i_dis, -i_chg):
                    if i == 0.0:
                        continue  # no current allowed: nothing the SOP could push over
                    s = model.Simulator(p, soc, temp)
                    for _ in range(int(h)):
                        v = s.step(i, temp, 1.0)
                        assert lim["v_min"] - 0.005 <= v <= lim["v_max"] + 0.005, \
                            (temp, soc, h, i, v)


def test_diffusion_shift_lags_the_current_and_moves_the_ocv():
    cal = sample_cal.calibration(CAP)
    p = model.pack(cal)
    g, tau = p[model.SHIFT_GAIN], p[model.SHIFT_TAU]
    assert g > 0.0
    d = 0.0
    for _ in range(int(tau)):                 # one time constant of 1C at 25 degC
        d = model.shift_ahead(p, d, CAP, 25.0, 1.0)
    want = g * CAP * (1.0 - math.exp(-1.0))
    assert abs(d - want) < 1e-5 * want   # float32 after 100 steps: ~4e-7
    tab = [0.0] * model.NTAB
    v = model.voltage(p, 0.5, 0.0, 0.0, 25.0, 0.0, tab, 1.0, d)
    assert abs(v - model.ocv(p, 0.5 - d, 25.0, tab)) < 1e-12   # at rest: OCV at soc - d
    assert v < model.ocv(p, 0.5, 25.0, tab) - 1e-4
    # slower and larger in the cold (Arrhenius), and it relaxes back at rest
    d = 0.0
    for _ in range(int(tau)):
        d = model.shift_ahead(p, d, CAP, 0.0, 1.0)
    end = model.shift_ahead(p, 0.0, CAP, 0.0, 1e6)
    assert end > 2.5 * g * CAP                # a larger end value
    assert d / end < 0.5 * (1.0 - math.exp(-1.0))   # reached more slowly
    for _ in range(3000):
        d = model.shift_ahead(p, d, 0.0, 25.0, 1.0)
    assert abs(d) < 1e-9
    # the gain on charge is its own: a charge settles at -g_chg * I
    p[model.SHIFT_GAIN_CHG] = 0.25 * g
    assert abs(model.shift_ahead(p, d, -CAP, 25.0, 1e6) + 0.25 * g * CAP) < 1e-12
    assert abs(model.shift_ahead(p, d, CAP, 25.0, 1e6) - g * CAP) < 1e-12


def test_a_soc_past_full_is_projected_with_the_states_correlated_with_it():
    est = _est()
    est.init(0.9, 25.0, 0.02)
    n = ukf.NX
    x, P = est.x, est.P
    x[ukf.SOC] = 103.0
    x[ukf.BIAS] = 40.0
    P[ukf.BIAS * n] = P[ukf.BIAS] = 1.5     # SOC-offset covariance (% * mA)
    p_before = list(P)
    v1 = x[ukf.V1]
    est.project_soc(100.0)
    assert x[ukf.SOC] == 100.0
    want = 40.0 - 3.0 * 1.5 / P[0]          # the offset takes its share of the 3 points
    assert abs(x[ukf.BIAS] - want) < 1e-9 * abs(want), (x[ukf.BIAS], want)
    assert x[ukf.V1] == v1 - 3.0 * P[ukf.V1 * n] / P[0]
    assert list(P) == p_before               # the covariance is left as it was


def test_the_soc_keeps_what_its_voltage_readings_put_in_it():
    # an OCV of 2 mV per % SOC, read at rest: the SOC's sensitivity to an unseen voltage
    # bias becomes 1 / slope, to the shift's gain error the shift itself (one for one); a
    # direct SOC measurement (re-sync) leaves them the share its gain does not take
    cal = sample_cal.calibration(CAP)
    cal["tables"]["ocv_v"] = [[3.3 + 0.2 * (s - 0.5) for s in sample_cal.SOC]
                              for _ in cal["tables"]["temp_c"]]
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    est.init(0.5, 25.0, 0.05)
    assert est.s_bias == 0.0 and est.s_shift == 0.0
    sig0 = est.soc_sigma()
    tab = [0.0] * model.NTAB
    v = model.ocv(model.pack(cal), 0.5, 25.0, tab)
    for _ in range(300):
        est.step(0.0, v, 25.0, 25.0, 2.0)
    assert abs(est.s_bias - 0.5) < 0.05, est.s_bias          # % per mV = 1 / slope
    # twice, updates that took three quarters of the SOC's variance, under a 0.1 shift:
    # the shift's error enters at gain * slope * 10 points, gain = 0.75 / slope (0.375)
    own = est.P[0]
    s_bias = est.s_bias
    est.s_shift = 0.0
    est.shift = 0.1
    est.flat_slope = 2.0
    for _ in range(2):
        est.cons_p = (4.0 * own, 0.0, 0.0)        # the variance the last look saw
        est.flat_age_s = 0.0
        est._consider(CAP * 3600.0)
    want_shift = 0.25 * (0.375 * 2.0 * 10.0) + 0.375 * 2.0 * 10.0
    want_bias = 0.25 * (0.25 * s_bias + 0.375) + 0.375
    assert abs(est.s_shift - want_shift) < 1e-5, (est.s_shift, want_shift)
    assert abs(est.s_bias - want_bias) < 1e-6, (est.s_bias, want_bias)
    consider = (est.s_bias * estimator.BIAS_BASE_MV) ** 2 \
        + (est.s_shift * estimator.SHIFT_SIGMA_REL) ** 2
    assert consider > 8.0          # ~(3 %)^2 of the bias and (1.5 %)^2 of the shift
    assert abs(est.soc_state()[1] - math.sqrt(own + consider) * 0.01) < 1e-6
    assert est.soc_sigma() > est.soc_state()[1] and est.soc_sigma() < sig0
    b, sh = est.s_bias, est.s_shift
    est.pseudo_soc(est.soc(), 0.01)                         # a re-sync at 1 % sigma
    f = 1.0 / (own + 1.0)
    assert abs(est.s_bias - f * b) < 1e-6 * b and abs(est.s_shift - f * sh) < 1e-6 * sh


def test_ocv_rises_past_the_top_of_the_soc_grid_and_all_else_holds():
    p = model.pack(sample_cal.calibration(CAP))
    ns = int(p[model.N_SOC])
    g0, gn = p[model.HEADER], p[model.HEADER + ns - 1]
    tab = [0.0] * model.NTAB
    t = 17.0   # between two temperature rows
    vn = model.ocv(p, gn, t, tab)
    span = model.OCV_TOP_SPAN
    slope = (vn - model.ocv(p, gn - span, t, tab)) / span
    assert slope > 0.1
    for x in (gn + 0.01, gn + 0.3):
        assert abs(model.ocv(p, x, t, tab) - (vn + slope * (x - gn))) < 1e-9
        r1_top = model.lookup(p, gn, t, tab)[model.R1]
        assert model.lookup(p, x, t, tab)[model.R1] == r1_top
    # below the grid (the steep end-of-discharge knee) every table holds its end value
    low = list(model.lookup(p, g0, t, tab))
    assert list(model.lookup(p, g0 - 0.05, t, tab)) == low


def _learned(est, cap_ah):
    """Give est a trusted learned capacity of cap_ah (as soh.py anchors one)."""
    c = est.cap
    c.pairs = estimator.CAP_MIN_PAIRS
    c.capacity_ah = cap_ah
    c.sigma_ah = 0.01 * est.nominal_ah


def test_params_are_read_only_and_cells_sharing_them_equal_cells_with_their_own():
    """Cells of different capacities and R0 factors sharing one params array: the array
    is unchanged, value for value, after their steps and SOP, and each cell's results
    are those of a twin with an array of its own."""
    cal = sample_cal.calibration(CAP)
    b = backends.choose()[0]            # the fastest here: native on a firmware with it
    shared = b.alloc(model.pack(cal))
    before = list(shared)
    caps = (CAP, 0.8 * CAP, 1.1 * CAP)
    pairs = []
    for j in range(3):
        pair = (estimator.CellEstimator(cal, b, params=shared), estimator.CellEstimator(cal, b))
        for est in pair:
            _learned(est, caps[j])
            est.r0_slow = (1.0, 1.3, 0.8)[j]
            est.init((0.7, 0.5, 0.6)[j], 25.0)
        pairs.append(pair)
    assert pairs[1][0].capacity_ah() == caps[1] and pairs[1][0].r0_feed() != 1.0
    plants = [_plant(0.8, cap_ah=caps[0]), _plant(0.4, cap_ah=caps[1]),
              _plant(0.6, cap_ah=caps[2])]
    n = 200 if MPY else 900
    for k in range(n):
        for j in range(3):
            i = sample_cal.drive_current(k, CAP) * (1.0, -0.5, 0.8)[j]
            v = plants[j].step(i, 25.0, 1.0)
            for est in pairs[j]:
                est.step(i, v, plants[j].ts, 25.0, 1.0)
        if k % 100 == 0:
            for a, o in pairs:
                a.update_sop(25.0)
                o.update_sop(25.0)
                assert list(a.i_dis) == list(o.i_dis) and list(a.i_chg) == list(o.i_chg)
            assert list(shared) == before
    assert list(shared) == before
    for a, o in pairs:
        assert list(a.x) == list(o.x) and list(a.P) == list(o.P) and a.shift == o.shift != 0.0
    assert pairs[0][0].soc() != pairs[1][0].soc()


def test_filter_stays_finite_over_20000_steps():
    n = 3000 if MPY else 20000
    plant = _plant(0.9)
    est = _est()
    est.init(0.7, 25.0)
    rng = _Rng(4)
    for k in range(n):
        i = sample_cal.drive_current(k, CAP)
        if plant.soc < 0.1:
            i = -abs(i)
        elif plant.soc > 0.95:
            i = abs(i)
        v = plant.step(i, 25.0, 1.0) + rng.gauss(0.0, 0.005)
        est.step(i + 0.03, v, plant.ts + rng.gauss(0.0, 0.1), 25.0, 1.0)
    assert est.errors == 0
    assert est.status == ukf.OK
    assert 0.0 < est.soc_sigma() < 0.1
    assert abs(est.soc() - plant.soc) < 0.03, (est.soc(), plant.soc)
    for v in est.P:
        assert v == v and not math.isinf(v)


def test_a_native_module_of_another_layout_is_refused():
    try:
        from bms import ukf_native
    except ImportError:
        return      # no bms_native in this runtime: nothing to refuse

    class Fake:
        TYPECODE = "f"
        ABI = ukf.ABI
        LAYOUT = ukf.LAYOUT

    assert ukf_native.mismatch(Fake) is None
    Fake.ABI = ukf.ABI + 1
    why = ukf_native.mismatch(Fake)
    assert "ABI %d" % (ukf.ABI + 1) in why and "rebuild" in why
    try:
        ukf_native.Backend(Fake)
        raise AssertionError("a module of another ABI was accepted")
    except ValueError as e:
        assert str(e) == why
    Fake.ABI = ukf.ABI
    Fake.LAYOUT = (ukf.NX, 5, ukf.CFG_SIZE, ukf.OUT_SIZE, 16, model.NTAB)
    assert "(6, 5, 12, 5, 16, 10)" in ukf_native.mismatch(Fake)
    # the module this runtime has is the one this software was written for
    assert ukf_native.mismatch(ukf_native.bms_native) is None
