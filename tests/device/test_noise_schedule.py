# The SOC band at rest: at the steep ends of the OCV a voltage bias says little in SOC
# terms, yet a measured cell's rested voltage there still moves for hours after a load, so
# the band keeps the OCV table's own SOC uncertainty; on the flat middle it stays narrower
# than a point. Plain test_* functions with bare asserts: they run under CPython (pytest)
# and MicroPython (mpy_runner).
from bms import backends, estimator, model
from sim import sample_cal

CAP = 5.0


def _rested_sigma(soc):
    cal = sample_cal.calibration(CAP)
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    v = model.ocv(model.pack(cal), soc, 25.0, [0.0] * model.NTAB)
    est.init(soc, 25.0, 0.01)
    for _ in range(600):
        est.step(0.0, v, 25.0, 25.0, 1.0)
    assert abs(est.soc() - soc) < 0.002, est.soc()
    return est.soc_sigma()


def test_band_keeps_the_ocv_uncertainty_at_the_steep_end():
    assert _rested_sigma(0.02) >= 0.004


def test_band_is_narrower_than_a_point_on_the_flat_middle():
    assert _rested_sigma(0.5) < 0.01
