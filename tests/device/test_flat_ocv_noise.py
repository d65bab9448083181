# Flat-OCV voltage noise (estimator.FLAT_*): on the flat middle of an LFP-like OCV a few mV
# of persistent model error is many % SOC; the filter, already sure of its SOC, must keep
# coulomb counting there instead of following it, and still read the steep end. Plain
# test_* functions with bare asserts: they run under CPython (pytest) and MicroPython.
from bms import backends, estimator, model
from sim import sample_cal

CAP = 5.0
SOC = sample_cal.SOC
BIAS_V = 0.005            # the model misses the cell by 5 mV for the whole run


def _lfp_ocv(s):
    # 0.2 mV per % SOC above 15 %, about 20 mV per % below
    return 3.3 + 0.02 * (s - 0.5) - 2.0 * (0.15 - s if s < 0.15 else 0.0)


def _cal():
    cal = sample_cal.calibration(CAP)
    cal["tables"]["ocv_v"] = [[_lfp_ocv(s) for s in SOC] for _ in cal["tables"]["temp_c"]]
    return cal


def _drift(soc0, flat):
    """SOC error (points) after 20 min at C/2 with a 5 mV voltage bias, the filter started
    at the truth and sure of it; flat: with the flat-OCV noise, else without."""
    keep = estimator.FLAT_TAU_S
    estimator.FLAT_TAU_S = keep if flat else 0.0
    try:
        cal = _cal()
        est = estimator.CellEstimator(cal, backends.PythonBackend())
        cell = model.Simulator(model.pack(cal), soc0, 25.0)
        est.init(soc0, 25.0, 0.01)
        i = 0.5 * CAP
        for _ in range(600):      # 2 s samples (the qemu port runs this too)
            v = cell.step(i, 25.0, 2.0)
            est.step(i, v + BIAS_V, 25.0, 25.0, 2.0)
        return 100.0 * (est.soc() - cell.soc)
    finally:
        estimator.FLAT_TAU_S = keep


def test_flat_ocv_keeps_the_filter_from_following_a_model_bias():
    with_noise = abs(_drift(0.6, True))
    without = abs(_drift(0.6, False))
    assert with_noise < 0.5 * without, (with_noise, without)


def test_steep_ocv_is_still_read():
    # started 5 points high on the steep end (12 %): the voltage still pulls it back
    cal = _cal()
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    est.init(0.17, 25.0, 0.05)
    v = model.ocv(model.pack(cal), 0.12, 25.0, [0.0] * model.NTAB)
    for _ in range(300):
        est.step(0.0, v, 25.0, 25.0, 1.0)
    assert abs(est.soc() - 0.12) < 0.01, est.soc()


def test_a_diffusion_shift_counts_as_model_error_where_it_moves_the_voltage():
    # 2 mV per % SOC: steep enough that the filter reads it, until a load's shift (whose
    # gain is known to SHIFT_SIGMA_REL) stands for more than FLAT_SOC_PCT of SOC
    cal = sample_cal.calibration(CAP)
    cal["tables"]["ocv_v"] = [[3.3 + 0.2 * (s - 0.5) for s in SOC]
                              for _ in cal["tables"]["temp_c"]]
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    est.init(0.5, 25.0, 0.01)
    est._flat_noise()
    assert est.flat_var == 0.0
    est.shift = 0.1
    est._flat_noise()
    e2 = estimator.FLAT_MODEL_MV ** 2 + (estimator.SHIFT_SIGMA_REL * 10.0 * 2.0) ** 2
    want = e2 * estimator.FLAT_TAU_S * (1.0 - (estimator.FLAT_SOC_PCT * 2.0) ** 2 / e2)
    assert abs(est.flat_var - want) < 1e-3 * want, (est.flat_var, want)
