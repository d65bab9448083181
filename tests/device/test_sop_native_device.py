# The state of power in C (bms_native.sop) against the Python reference (sop.limits) on
# the device's own float type. Plain test_* functions: they run under CPython (pytest)
# and MicroPython (mpy_runner). Without bms_native, or with a build that predates sop
# (the PyPI unix port, a firmware without the module), there is nothing to check and
# each test returns at once.
import sys

from bms import backends, model, sop, ukf
from sim import sample_cal

MPY = sys.implementation.name == "micropython"

try:
    import bms_native
    HAVE = hasattr(bms_native, "sop")
except ImportError:
    bms_native = None
    HAVE = False


def _native():
    from bms import ukf_native
    return ukf_native.Backend()


def _close(ref, got):
    # 1 % or 0.05 A, whichever is larger
    tol = 0.01 * abs(ref)
    return abs(got - ref) <= (tol if tol > 0.05 else 0.05)


def _compare(cal, lim, states, shift):
    b = _native()
    p = b.alloc(model.pack(cal))
    pl = [v for v in p]                      # the same float32 values for the reference
    cap = b.alloc([0.9 * pl[model.CAP_AS], 1.1, shift])   # this cell's values, in float32
    cell = (cap[0], cap[1], cap[2])
    nat = sop.make(lim, b)
    ref = sop.Python(lim)
    tab = [0.0] * model.NTAB
    bad = []
    for st in states:
        x = b.alloc(st)
        assert nat.update(p, x, st[3] - 2.0, None, *cell) == ukf.OK
        ref.update(pl, [v for v in x], st[3] - 2.0, tab, *cell)
        for k in range(len(sop.HORIZONS_S)):
            if not (_close(ref.i_dis[k], nat.i_dis[k]) and _close(ref.i_chg[k], nat.i_chg[k])):
                bad.append((st, k, ref.i_dis[k], nat.i_dis[k], ref.i_chg[k], nat.i_chg[k]))
    return bad


def _states():
    socs = (3.0, 30.0, 70.0, 97.0) if MPY else (0.0, 3.0, 15.0, 30.0, 50.0, 70.0, 90.0,
                                                  97.0, 100.0)
    temps = (0.0, 25.0, 44.0) if MPY else (-10.0, 0.0, 10.0, 25.0, 35.0, 44.0, 50.0)
    out = []
    for soc in socs:
        for tc in temps:
            for v1, v2 in ((0.0, 0.0), (20.0, -15.0)):
                out.append([soc, v1, v2, tc, tc - 1.0, 0.0])
    return out


def test_native_sop_agrees_with_python():
    if not HAVE:
        return
    cal = sample_cal.calibration()
    for shift in (0.0, 0.01):
        bad = _compare(cal, cal["limits"], _states(), shift)
        assert not bad, bad[:3]


def test_native_sop_agrees_where_the_voltage_limits_decide():
    if not HAVE:
        return
    cal = sample_cal.calibration()
    lim = dict(cal["limits"])
    lim["i_discharge_max_a"] = 500.0          # rated currents out of the way
    lim["i_charge_max_a"] = 500.0
    bad = _compare(cal, lim, _states(), 0.005)
    assert not bad, bad[:3]


def test_native_sop_is_what_the_native_backend_gets():
    if not HAVE:
        return
    b = _native()
    s = sop.make(sample_cal.calibration()["limits"], b)
    assert isinstance(s, sop.Native)
    assert isinstance(sop.make(sample_cal.calibration()["limits"], backends.PythonBackend()),
                      sop.Python)


def test_native_sop_gives_no_current_on_a_nan_state():
    if not HAVE:
        return
    cal = sample_cal.calibration()
    b = _native()
    s = sop.make(cal["limits"], b)
    x = b.alloc([50.0, 0.0, 0.0, float("nan"), 25.0, 0.0])
    p = model.pack(cal)
    assert s.update(b.alloc(p), x, 25.0, None, p[model.CAP_AS], 1.0, 0.0) == ukf.ERR_NONFINITE
    for k in range(len(sop.HORIZONS_S)):
        assert s.i_dis[k] == 0.0 and s.i_chg[k] == 0.0
