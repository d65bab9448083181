# The ulab filter backend (numpy standing in for ulab.numpy) against the python reference.
import ast
import math
import random
from pathlib import Path

import numpy as np
import pytest

from bms import backends, calfile, estimator, model, ukf, ukf_ulab

ROOT = Path(__file__).resolve().parents[1]
CAL_PATH = ROOT / "calibration" / "lgm50.json"
NSTEPS = 2500


def calibration():
    # The pipeline's LG M50 calibration when it exists, else the small test one.
    if CAL_PATH.exists():
        return calfile.load(str(CAL_PATH))[0]
    import calsample
    return calsample.calibration()


def drive_current(k, cap_ah):
    # Dynamic load for 1 s samples: pulses, regen and rest, net about C/3 discharge, plus
    # a slow ripple so the current is never piecewise constant for long.
    ph = k % 120
    if ph < 20:
        i = 0.4
    elif ph < 30:
        i = 1.5
    elif ph < 40:
        i = -0.5
    elif ph < 70:
        i = 0.25
    elif ph < 75:
        i = 2.0
    elif ph < 90:
        i = 0.0
    else:
        i = 0.35
    return cap_ah * (i + 0.05 * math.sin(k / 7.0))


def replay(be, cal, nsteps=NSTEPS, seed=1, cfg=None, dt_s=1.0):
    """Drive backend `be` with a model plant (true start 90 %, filter starts at 70 %).
    Returns per-step SOC (fraction) and the final x, P, cfg."""
    rng = random.Random(seed)
    cap = cal["cell"]["capacity_ah"]
    p_list = model.pack(cal)
    sim = model.Simulator(p_list, 0.9, 25.0)
    p = be.alloc(p_list)
    c = be.alloc(cfg if cfg is not None else ukf.default_cfg())
    x = be.alloc([70.0, 0.0, 0.0, 25.0, 25.0, 0.0])
    P = be.alloc([0.0] * 36)
    for k, s in enumerate((15.0, 10.0, 10.0, 2.0, 1.0, 50.0)):
        P[k * 7] = s * s
    out = be.alloc([0.0] * ukf.OUT_SIZE)
    u = be.alloc(ukf.make_u(0.0, 25.0, dt_s, 0.0, 25.0, p_list[model.CAP_AS]))
    shift = 0.0
    socs = []
    for k in range(nsteps):
        i = drive_current(k, cap) + 0.03           # 30 mA sensor offset for the bias state
        ta = 25.0 + 3.0 * math.sin(k / 400.0)
        v = sim.step(i - 0.03, ta, dt_s) + rng.gauss(0.0, 0.002)
        ts = sim.ts + rng.gauss(0.0, 0.1)
        if k % 97 == 5:
            v = float("nan")
        if k % 131 == 7:
            ts = float("nan")
        if k == 1500:
            v += 0.3                               # a glitch: the gate must clip it
        shift = model.shift_ahead(p, shift, i, float(x[ukf.TC]), dt_s)   # as in estimator
        u[ukf.U_I] = i
        u[ukf.U_TA] = ta
        u[ukf.U_V] = v
        u[ukf.U_TS] = ts
        u[ukf.U_SHIFT] = shift
        st = be.step(x, P, p, c, u, out)
        assert st == ukf.OK, (k, st)
        socs.append(float(x[ukf.SOC]) / 100.0)
    return (np.array(socs), [float(v) for v in x], [float(v) for v in P],
            float(c[ukf.CFG_RV]), sim)


@pytest.fixture(scope="module")
def reference():
    return replay(backends.PythonBackend(), calibration())


def test_float64_agrees_with_reference(reference):
    socs, x, P, rv, sim = replay(ukf_ulab.Backend(float64=True), calibration())
    diff = np.max(np.abs(socs - reference[0]))
    assert diff < 1e-9, diff
    assert np.allclose(x, reference[1], rtol=1e-9, atol=1e-9)
    assert np.allclose(P, reference[2], rtol=1e-7, atol=1e-9)
    assert abs(rv - reference[3]) < 1e-9
    # and the filter actually works on this replay
    assert abs(socs[-1] - sim.soc) < 0.02


def test_float32_agrees_with_reference(reference):
    socs = replay(ukf_ulab.Backend(), calibration())[0]
    diff = np.max(np.abs(socs - reference[0]))
    assert diff < 1e-4, diff


def _one_step(be, v_meas, ts_meas, P_diag=(25.0, 4.0, 4.0, 1.0, 0.5, 100.0)):
    cal = calibration()
    p = be.alloc(model.pack(cal))
    cfg = be.alloc(ukf.default_cfg())
    x = be.alloc([55.0, 3.0, 1.0, 27.0, 26.0, 5.0])
    P = be.alloc([0.0] * 36)
    for k, s in enumerate(P_diag):
        P[k * 7] = s
    P[1] = P[6] = 0.5
    out = be.alloc([0.0] * ukf.OUT_SIZE)
    u = be.alloc(ukf.make_u(2.5, 25.0, 1.0, v_meas, ts_meas, 0.9 * p[model.CAP_AS], 1.2, 0.004))
    st = be.step(x, P, p, cfg, u, out)
    return st, [float(v) for v in x], [float(v) for v in P], [float(v) for v in cfg], \
        [float(v) for v in out]


@pytest.mark.parametrize("v_meas, ts_meas", [(float("nan"), 26.1), (3.6, float("nan")),
                                             (float("nan"), float("nan")), (3.6, 26.1)])
def test_nan_measurement_is_skipped(v_meas, ts_meas):
    ref = _one_step(backends.PythonBackend(), v_meas, ts_meas)
    got = _one_step(ukf_ulab.Backend(float64=True), v_meas, ts_meas)
    assert ref[0] == got[0] == ukf.OK
    for a, b in zip(ref[1:], got[1:], strict=True):
        assert np.allclose(a, b, rtol=1e-10, atol=1e-10)
    assert all(v == v for v in got[1] + got[2])
    if v_meas != v_meas:
        assert got[4][ukf.OUT_INNOV] == 0.0                # no voltage innovation
        assert got[3][ukf.CFG_RV] == ukf.default_cfg()[ukf.CFG_RV]   # noise not adapted


@pytest.mark.parametrize("float64", [True, False])
@pytest.mark.parametrize("bad", ["negative", "nan"])
def test_non_pd_P_returns_status_2(float64, bad):
    diag = [25.0, 4.0, 4.0, -1.0, 0.5, 100.0] if bad == "negative" else \
        [25.0, float("nan"), 4.0, 1.0, 0.5, 100.0]
    ref = _one_step(backends.PythonBackend(), 3.6, 26.1, diag)
    got = _one_step(ukf_ulab.Backend(float64=float64), 3.6, 26.1, diag)
    assert ref[0] == got[0] == ukf.ERR_NOT_PD
    assert got[4][ukf.OUT_STATUS] == ukf.ERR_NOT_PD
    assert all(v == v for v in got[1])                     # x untouched, no NaN
    # the jitter retry touched P exactly as the reference did
    assert np.allclose(ref[2], got[2], equal_nan=True)


def _random_points(cal, rng, n):
    soc = cal["tables"]["soc"]
    temp = cal["tables"]["temp_c"]
    # exactly on grid nodes and on the ends first, then random ones, beyond both ends too
    pts = [(soc[0], temp[0]), (soc[-1], temp[-1]), (soc[-1], temp[-1] + 5.0),
           (soc[0] - 1.0, temp[-1]), (soc[len(soc) // 2], temp[len(temp) // 2])]
    while len(pts) < n:
        pts.append((rng.uniform(soc[0] - 0.3, soc[-1] + 0.3),
                    rng.uniform(temp[0] - 25.0, temp[-1] + 25.0)))
    return pts


def _check_lookup(cal, rtol):
    be = ukf_ulab.Backend(float64=True)
    p_list = model.pack(cal)
    p = be.alloc(p_list)
    rng = random.Random(7)
    pts = _random_points(cal, rng, 13 * 20)
    tab = [0.0] * model.NTAB
    for c in range(0, len(pts), 13):
        chunk = pts[c:c + 13]
        soc = np.array([s for s, _ in chunk])
        temp = np.array([t for _, t in chunk])
        got = be.lookup(p, soc, temp)
        for s, (sv, tv) in enumerate(chunk):
            want = model.lookup(p_list, sv, tv, tab)
            for k in range(model.NTAB):
                assert got[k, s] == pytest.approx(want[k], rel=rtol, abs=1e-15), (k, sv, tv)


def test_lookup_equals_model_lookup():
    _check_lookup(calibration(), 1e-12)


def test_lookup_single_row_grids():
    # n_temp = 1 and n_soc = 1: ulab's interp needs two points, so these take a side path.
    cal = calibration()
    tabs = cal["tables"]
    one_t = dict(cal, tables=dict(tabs, temp_c=[25.0]))
    one_s = dict(cal, tables=dict(tabs, soc=[0.5]))
    for name in model.TABLES:
        if name in tabs:
            one_t["tables"][name] = [tabs[name][0]]
            one_s["tables"][name] = [[row[0]] for row in tabs[name]]
    _check_lookup(one_t, 1e-12)
    _check_lookup(one_s, 1e-12)


def test_estimator_runs_on_ulab_backend():
    cal = calibration()
    be = backends.make("ulab")
    assert be.name == "ulab"
    est = estimator.CellEstimator(cal, backend=be)
    sim = model.Simulator(model.pack(cal), 0.8, 25.0)
    for k in range(300):
        i = drive_current(k, cal["cell"]["capacity_ah"])
        v = sim.step(i, 25.0, 1.0)
        assert est.step(i, v, sim.ts, 25.0, 1.0) == ukf.OK
    assert abs(est.soc() - sim.soc) < 0.05
    assert est.errors == 0


# -- ulab's numpy subset ----------------------------------------------------------------
# Compiled from ulab's documentation and its module table:
#   https://micropython-ulab.readthedocs.io/en/latest/ (numpy-functions, numpy-universal,
#   numpy-linalg, ulab-ndarray), https://docs.circuitpython.org/en/latest/shared-bindings/
#   ulab/numpy/ and code/numpy/numpy.c (ulab_numpy_globals_table) in v923z/micropython-ulab.
ULAB_NUMPY = {
    "array", "ndarray", "float", "bool", "uint8", "int8", "uint16", "int16", "e", "pi",
    "inf", "nan", "arange", "concatenate", "diag", "empty", "eye", "full", "linspace",
    "logspace", "ones", "zeros", "interp", "trapz", "clip", "equal", "not_equal",
    "isfinite", "isinf", "maximum", "minimum", "nonzero", "where", "convolve", "all", "any",
    "argmax", "argmin", "argsort", "asarray", "cross", "diff", "dot", "trace", "flip",
    "max", "mean", "median", "min", "roll", "size", "sort", "std", "sum", "polyfit",
    "polyval", "acos", "acosh", "arctan2", "around", "asin", "asinh", "atan", "atanh",
    "ceil", "cos", "cosh", "degrees", "exp", "expm1", "floor", "log", "log10", "log2",
    "radians", "sin", "sinc", "sinh", "sqrt", "tan", "tanh", "vectorize", "linalg",
    "linalg.cholesky", "linalg.det", "linalg.eig", "linalg.inv", "linalg.norm",
}
# Attributes of numpy used only on the CPython branch (ulab has np.float instead).
CPYTHON_ONLY = {"float32", "float64"}
# ndarray methods and properties ulab documents (ulab-ndarray).
ULAB_NDARRAY_METHODS = {"reshape", "transpose", "flatten", "copy", "tobytes", "byteswap",
                        "sort", "shape", "size", "itemsize", "dtype", "strides", "T"}


def _np_attrs(tree):
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            cur = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "np":
                used.add(".".join(reversed(chain)))
    # keep only the full chains (np.linalg.cholesky, not also np.linalg)
    return {u for u in used if not any(v.startswith(u + ".") for v in used)}


def test_ulab_backend_uses_only_ulab_subset():
    src = (ROOT / "device" / "bms" / "ukf_ulab.py").read_text()
    tree = ast.parse(src)
    used = _np_attrs(tree)
    assert used, "no numpy attributes found: the AST walk is broken"
    bad = used - ULAB_NUMPY - CPYTHON_ONLY
    assert not bad, "not in ulab's numpy: %s" % sorted(bad)
    own = {"self", "np", "model", "ukf", "math"}
    for node in ast.walk(tree):
        assert not isinstance(node, ast.MatMult), "no @ operator in ulab"
        if isinstance(node, ast.keyword):
            assert node.arg != "out", "ulab has no out="
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name) and base.id in own:
                continue
            if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) \
                    and base.value.id == "np":
                continue                            # np.linalg.*: checked above
            assert node.func.attr in ULAB_NDARRAY_METHODS, node.func.attr
        # no fancy indexing: subscripts are ints, names, slices or tuples of those
        if isinstance(node, ast.Subscript):
            assert not isinstance(node.slice, (ast.List, ast.ListComp)), "fancy indexing"
