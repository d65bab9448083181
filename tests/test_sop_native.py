"""The state of power in C (bms_native.sop, sop_core.c) against the Python reference
(sop.limits): over a grid of states (SOC 0-1 and a little past, core temperatures -10 to
50 degC, RC voltages, diffusion shifts, R0 factors) for every calibration in
calibration/, and over the states the Python estimator reaches replaying the held-out
traces (random and constant-power profiles). float32 C agrees within 1 % or 0.05 A,
whichever is larger; the double build agrees to rounding. Plus its argument checks."""
import sys
from array import array
from pathlib import Path

import pytest

from bms import backends, calfile, estimator, model, sop, ukf

ROOT = Path(__file__).resolve().parents[1]
CALS = sorted((ROOT / "calibration").glob("*.json"))

bms_native = pytest.importorskip("bms_native", reason="C extension not built: pip install -e .")
bms_native_f64 = pytest.importorskip("bms_native_f64")
if not hasattr(bms_native, "sop"):
    pytest.skip("the built bms_native predates sop: rebuild it with pip install -e .",
                allow_module_level=True)
from bms import ukf_native  # noqa: E402

REL, ABS = 0.01, 0.05          # float32 C vs the double reference
REL64, ABS64 = 1e-6, 1e-6      # double C vs the reference: the same math


def load(path):
    return calfile.load(str(path))[0]


def uncapped(lim):
    """The limits with the rated currents out of the way, so that the voltage, SOC and
    temperature limits (the computed part) are what is compared."""
    d = dict(lim)
    d["i_discharge_max_a"] = 1000.0
    d["i_charge_max_a"] = 1000.0
    return d


def reference(p, cell, x, ta_c, lim, tab):
    st = (x[0] / 100.0, x[1] / 1000.0, x[2] / 1000.0, x[3], x[4])
    return [sop.limits(p, cell, st, ta_c, lim, h, tab) for h in sop.HORIZONS_S]


def native(mod, p, cell, x, ta_c, lim):
    tc = mod.TYPECODE
    vec = array(tc, sop.lim_vec(lim))
    vec[sop.LIM_TA] = ta_c
    vec[sop.LIM_CAP] = cell[sop.CELL_CAP]
    vec[sop.LIM_R0] = cell[sop.CELL_R0]
    vec[sop.LIM_SHIFT] = cell[sop.CELL_SHIFT]
    n = len(sop.HORIZONS_S)
    i_dis, i_chg = array(tc, [0.0] * n), array(tc, [0.0] * n)
    status = mod.sop(array(tc, p), array(tc, x), vec, i_dis, i_chg)
    return status, list(i_dis), list(i_chg)


class Worst:
    def __init__(self, rel, abs_):
        self.rel, self.abs = rel, abs_
        self.n = 0
        self.bad = []
        self.worst = 0.0

    def check(self, ref, got, what):
        for h in range(len(ref)):
            for k, name in ((0, "dis"), (1, "chg")):
                r = ref[h][k]
                g = got[k][h]
                tol = max(self.rel * abs(r), self.abs)
                self.n += 1
                self.worst = max(self.worst, abs(g - r) / tol)
                if not abs(g - r) <= tol:
                    self.bad.append((what, sop.HORIZONS_S[h], name, r, g))

    def assert_ok(self):
        assert self.n > 0
        assert not self.bad, "%d of %d differ, first: %r" % (len(self.bad), self.n,
                                                              self.bad[:5])


def f32(v):
    return array("f", [v])[0]


def grid_states():
    for soc in (-0.01, 0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.98,
                0.995, 1.0, 1.008):
        for tc in (-10.0, -3.0, 0.0, 5.0, 15.0, 25.0, 35.0, 44.0, 50.0):
            for v1, v2 in ((0.0, 0.0), (15.0, 25.0), (-12.0, -30.0), (40.0, -8.0)):
                yield soc, tc, v1, v2


@pytest.mark.parametrize("path", CALS, ids=[c.stem for c in CALS])
@pytest.mark.parametrize("capped", [True, False], ids=["rated", "uncapped"])
def test_grid_of_states_agrees_with_python(path, capped):
    cal = load(path)
    lim = cal["limits"] if capped else uncapped(cal["limits"])
    tab = [0.0] * model.NTAB
    w = Worst(REL, ABS)
    n = 0
    p = [f32(v) for v in model.pack(cal)]   # both sides read the same float32 tables
    for shift, r0s, cap in ((0.0, 1.0, 1.0), (0.01, 1.0, 0.8), (-0.008, 1.35, 1.0),
                            (0.02, 0.9, 1.15)):
        cell = (f32(p[model.CAP_AS] * cap), f32(r0s), f32(shift))
        for soc, tc, v1, v2 in grid_states():
            ts = tc - 1.5
            ta = tc - 4.0
            x = [f32(v) for v in (soc * 100.0, v1, v2, tc, ts, 0.0)]
            ref = reference(p, cell, x, ta, lim, tab)
            st, i_dis, i_chg = native(bms_native, p, cell, x, ta, lim)
            assert st == 0
            w.check(ref, (i_dis, i_chg), (cell, soc, tc, v1, v2))
            n += 1
    w.assert_ok()
    assert n > 1000


@pytest.mark.parametrize("path", CALS, ids=[c.stem for c in CALS])
def test_double_build_is_the_same_math(path):
    cal = load(path)
    tab = [0.0] * model.NTAB
    w = Worst(REL64, ABS64)
    for lim in (cal["limits"], uncapped(cal["limits"])):
        for shift in (0.0, 0.012):
            p = model.pack(cal)
            cell = (p[model.CAP_AS] * 0.9, 1.1, shift)
            for soc, tc, v1, v2 in grid_states():
                x = [soc * 100.0, v1, v2, tc, tc + 0.5, 0.0]
                ref = reference(p, cell, x, tc - 2.0, lim, tab)
                st, i_dis, i_chg = native(bms_native_f64, p, cell, x, tc - 2.0, lim)
                assert st == 0
                w.check(ref, (i_dis, i_chg), (shift, soc, tc, v1, v2))
    w.assert_ok()


def test_thermal_limit_and_soc_window_and_charge_window():
    cal = load(CALS[0])
    lim = uncapped(cal["limits"])
    tab = [0.0] * model.NTAB
    p = [f32(v) for v in model.pack(cal)]
    c = (p[model.CAP_AS], 1.0, 0.0)
    # a core temperature limit just above the core: the thermal cap decides
    lim_t = dict(lim, t_core_max_c=27.0)
    x = [50.0, 0.0, 0.0, 26.0, 25.0, 0.0]
    ref = reference(p, c, x, 25.0, lim_t, tab)
    st, i_dis, i_chg = native(bms_native, p, c, x, 25.0, lim_t)
    assert st == 0
    w = Worst(REL, ABS)
    w.check(ref, (i_dis, i_chg), "thermal")
    w.assert_ok()
    # a core already past its limit: nothing either way
    st, i_dis, i_chg = native(bms_native, p, c, x, 25.0, dict(lim, t_core_max_c=25.0))
    assert i_dis == [0.0] * 3 and i_chg == [0.0] * 3
    # no thermal limit at all (None -> NaN in the vector)
    lim_n = dict(lim)
    lim_n.pop("t_core_max_c", None)
    ref = reference(p, c, x, 25.0, lim_n, tab)
    st, i_dis, i_chg = native(bms_native, p, c, x, 25.0, lim_n)
    w.check(ref, (i_dis, i_chg), "no thermal limit")
    w.assert_ok()
    # too cold to charge: no charge current, discharge still computed
    x = [50.0, 0.0, 0.0, -5.0, -5.0, 0.0]
    st, i_dis, i_chg = native(bms_native, p, c, x, -5.0, cal["limits"])
    assert i_chg == [0.0] * 3 and min(i_dis) > 0.0
    w.check(reference(p, c, x, -5.0, cal["limits"], tab), (i_dis, i_chg), "cold")
    w.assert_ok()


# ---- the held-out traces, replayed with the Python estimator -----------------------------

TRACES = [("lgm50", "random_%s.csv" % t) for t in ("m10C", "0C", "25C", "45C")] \
    + [("lgm50", "cp_%s.csv" % t) for t in ("m10C", "25C")] \
    + [("lfp", "random_%s.csv" % t) for t in ("0C", "45C")] \
    + [("lfp", "cp_%s.csv" % t) for t in ("m10C", "25C")]


def rows(path):
    with open(path) as f:
        names = f.readline().strip().split(",")
        it, iv, its = (names.index(n) for n in ("current_a", "voltage_v", "temperature_c"))
        ia = names.index("ambient_c") if "ambient_c" in names else -1
        t_prev = None
        for line in f:
            c = line.split(",")
            t = float(c[0])
            yield (t - t_prev if t_prev is not None else 0.0, float(c[it]), float(c[iv]),
                   float(c[its]), float(c[ia]) if ia >= 0 else 25.0)
            t_prev = t


@pytest.mark.parametrize("cell,name", TRACES, ids=["%s-%s" % t[:2] for t in TRACES])
def test_held_out_trace_states_agree_with_python(cell, name):
    path = ROOT / "data" / cell / name
    cal_path = ROOT / "calibration" / (cell + ".json")
    if not path.exists() or not cal_path.exists():
        pytest.skip("%s or its calibration is missing: run bms-host synth and fit" % path)
    cal = load(cal_path)
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    lims = (cal["limits"], uncapped(cal["limits"]))
    tab = [0.0] * model.NTAB
    w = Worst(REL, ABS)
    seen_shift = 0.0
    for k, (dt, i, v, ts, ta) in enumerate(rows(path)):
        if k == 0:
            est.init_from_measurement(i, v, ts)
            continue
        est.step(i, v, ts, ta, dt)
        if k % 20:
            continue
        p = [f32(q) for q in est.p]
        x = [f32(q) for q in est.x]
        cell = (f32(est.capacity_ah() * 3600.0), f32(est.r0_feed()), f32(est.shift))
        seen_shift = max(seen_shift, abs(cell[sop.CELL_SHIFT]))
        for lim in lims:
            ref = reference(p, cell, x, ta, lim, tab)
            st, i_dis, i_chg = native(bms_native, p, cell, x, ta, lim)
            assert st == 0
            w.check(ref, (i_dis, i_chg), (k, x[0], x[3]))
    w.assert_ok()
    assert w.n > 1000
    if cal.get("diffusion", {}).get("shift_per_a", 0.0) > 0.0:
        assert seen_shift > 0.0


# ---- the estimator-facing helper ---------------------------------------------------------

def test_make_picks_native_for_the_native_backend_and_agrees():
    cal = load(CALS[0])
    nb = ukf_native.Backend()
    s_n = sop.make(cal["limits"], nb)
    s_p = sop.make(cal["limits"], backends.PythonBackend())
    assert isinstance(s_n, sop.Native) and isinstance(s_p, sop.Python)
    assert isinstance(sop.make(cal["limits"], ukf_native.Backend(bms_native_f64)), sop.Native)
    p = nb.alloc(model.pack(cal))
    x = nb.alloc([30.0, 20.0, 10.0, 10.0, 10.0, 0.0])
    cap = p[model.CAP_AS] * 0.95
    assert s_n.update(p, x, 10.0, None, cap, 1.2, 0.004) == 0
    s_p.update(list(p), list(x), 10.0, [0.0] * model.NTAB, cap, 1.2, 0.004)
    w = Worst(REL, ABS)
    ref = list(zip(s_p.i_dis, s_p.i_chg, strict=True))
    w.check(ref, (list(s_n.i_dis), list(s_n.i_chg)), "make")
    w.assert_ok()


@pytest.mark.parametrize("r0_slow", [1.0, 1.05, 0.9, 1.1, 1.1000001, 0.8999999, 1.3, 0.6,
                                     float("nan")])
@pytest.mark.parametrize("learned", ["none", "trusted", "uncertain"])
def test_sop_and_step_get_what_r0_feed_and_capacity_ah_say(r0_slow, learned):
    """update_sop passes r0_feed(), capacity_ah() and the shift on, and step puts them in
    its input vector: the values must stay the methods' own."""
    cal = load(CALS[0])
    est = estimator.CellEstimator(cal, backends.PythonBackend())
    seen = []

    class Spy:
        def update(self, p, x, ta_c, tab, cap_as, r0s, shift):
            seen.append((r0s, cap_as, shift))

    est.power = Spy()
    est.r0_slow = r0_slow
    est.shift = 0.0123
    c = est.cap
    if learned != "none":
        c.pairs = estimator.CAP_MIN_PAIRS
        c.capacity_ah = 0.93 * est.nominal_ah
        c.sigma_ah = (0.01 if learned == "trusted" else 0.05) * est.nominal_ah
    est.update_sop(20.0)
    want = (est.r0_feed(), est.capacity_ah() * 3600.0, 0.0123)
    got = seen[0]
    for g, w_ in zip(got, want, strict=True):
        assert g == w_ or (g != g and w_ != w_), (got, want)
    if learned == "trusted":
        assert got[1] == c.capacity_ah * 3600.0
    est.init(0.5, 25.0)
    est.shift = 0.0123
    d = model.shift_ahead(est.p, 0.0123, 1.0, 25.0, 1.0)   # x: bias 0, core at 25 degC
    est.step(1.0, 3.6, 25.0, 25.0, 1.0)
    u = est.u
    got = (u[ukf.U_R0], u[ukf.U_CAP], u[ukf.U_SHIFT])
    for g, w_ in zip(got, (want[0], want[1], d), strict=True):
        assert g == w_ or (g != g and w_ != w_), (got, want)


def test_update_sop_is_the_native_call_with_this_cells_values():
    cal = load(CALS[0])
    cal = dict(cal, limits=uncapped(cal["limits"]))   # the computed limits, not the rated
    est = estimator.CellEstimator(cal, ukf_native.Backend())
    assert isinstance(est.power, sop.Native)
    est.init(0.4, 20.0)
    est.x[ukf.V1] = 15.0
    est.shift = 0.002
    est.r0_slow = 1.2
    before = bytes(est.p)
    est.update_sop(22.0)
    assert bytes(est.p) == before
    got = (list(est.i_dis), list(est.i_chg))
    lim = array(bms_native.TYPECODE, sop.lim_vec(cal["limits"]))
    lim[sop.LIM_TA] = 22.0
    lim[sop.LIM_CAP] = est.capacity_ah() * 3600.0
    lim[sop.LIM_R0] = est.r0_feed()
    lim[sop.LIM_SHIFT] = 0.002
    i_dis = array(bms_native.TYPECODE, [0.0] * len(sop.HORIZONS_S))
    i_chg = array(bms_native.TYPECODE, [0.0] * len(sop.HORIZONS_S))
    assert bms_native.sop(est.p, est.x, lim, i_dis, i_chg) == 0
    assert got == (list(i_dis), list(i_chg))
    assert est.r0_feed() != 1.0   # the factor reached the call (not the calibration's)
    lim[sop.LIM_R0] = 1.0
    assert bms_native.sop(est.p, est.x, lim, i_dis, i_chg) == 0
    assert got != (list(i_dis), list(i_chg))


def test_a_module_without_sop_falls_back_to_python():
    class Old:
        TYPECODE = "f"
        ABI = ukf.ABI
        LAYOUT = ukf.LAYOUT
        ukf_step = None

    b = ukf_native.Backend(Old)
    assert isinstance(sop.make(load(CALS[0])["limits"], b), sop.Python)


# ---- arguments ---------------------------------------------------------------------------

def args():
    cal = load(CALS[0])
    vec = array("f", sop.lim_vec(cal["limits"]))
    p = model.pack(cal)
    vec[sop.LIM_CAP] = p[model.CAP_AS]
    return [array("f", p), array("f", [50.0, 0, 0, 25.0, 25.0, 0]), vec,
            array("f", [0.0] * 3), array("f", [0.0] * 3)]


def test_good_arguments():
    a = args()
    assert bms_native.sop(*a) == 0
    assert all(v > 0.0 for v in a[3]) and all(v > 0.0 for v in a[4])


@pytest.mark.parametrize("k,name", [(1, "x")])
def test_wrong_x_length_is_a_value_error(k, name):
    a = args()
    a[k] = array("f", list(a[k]) + [0.0])
    with pytest.raises(ValueError, match="%s must have 6 values" % name):
        bms_native.sop(*a)


@pytest.mark.parametrize("edit", [
    lambda a: a.__setitem__(3, array("f", [0.0] * 2)),
    lambda a: a.__setitem__(4, array("f", [0.0] * 4)),
    lambda a: a.__setitem__(2, array("f", list(a[2]) + [5.0])),
    lambda a: (a.__setitem__(3, array("f")), a.__setitem__(4, array("f")),
               a.__setitem__(2, array("f", list(a[2])[:sop.LIM_BASE]))),
])
def test_mismatched_horizons_are_a_value_error(edit):
    a = args()
    edit(a)
    with pytest.raises(ValueError, match="one value per horizon"):
        bms_native.sop(*a)


def test_wrong_dtype_list_and_count_are_type_errors():
    a = args()
    a[0] = array("d", a[0])
    with pytest.raises(TypeError, match="params must hold float32"):
        bms_native.sop(*a)
    a = args()
    a[3] = [0.0] * 3
    with pytest.raises(TypeError, match="i_dis must be a float32"):
        bms_native.sop(*a)
    with pytest.raises(TypeError, match="takes 5 arguments"):
        bms_native.sop(*args()[:4])


def test_read_only_output_is_refused():
    np = pytest.importorskip("numpy")
    a = args()
    a[4] = np.zeros(3, dtype=np.float32)
    a[4].flags.writeable = False
    with pytest.raises(ValueError, match="i_chg must be a C-contiguous, writable"):
        bms_native.sop(*a)


def test_bad_params_is_a_value_error():
    a = args()
    p = list(a[0])
    p.append(1.0)
    a[0] = array("f", p)
    with pytest.raises(ValueError, match="bad params: .*header needs"):
        bms_native.sop(*a)


@pytest.mark.parametrize("where", ["x", "lim", "capacity", "r0", "horizon"])
def test_non_finite_input_gives_no_current_and_status(where):
    a = args()
    if where == "x":
        a[1][3] = float("nan")
    elif where == "lim":
        a[2][1] = float("inf")
    elif where == "capacity":
        a[2][sop.LIM_CAP] = 0.0
    elif where == "r0":
        a[2][sop.LIM_R0] = float("nan")
    else:
        a[2][sop.LIM_BASE + 1] = 0.0
    a[3][0] = a[4][0] = 7.0
    assert bms_native.sop(*a) == ukf.ERR_NONFINITE
    if where == "horizon":
        assert a[3][1] == 0.0 and a[4][1] == 0.0 and a[3][0] > 0.0
    else:
        assert list(a[3]) == [0.0] * 3 and list(a[4]) == [0.0] * 3


def test_nan_in_a_table_gives_no_current():
    a = args()
    p = list(a[0])
    ns, nt = int(p[model.N_SOC]), int(p[model.N_TEMP])
    for j in range(nt * ns):
        p[model.HEADER + ns + nt + model.R1 * ns * nt + j] = float("nan")
    a[0] = array("f", p)
    assert bms_native.sop(*a) == ukf.ERR_NONFINITE
    assert list(a[3]) == [0.0] * 3 and list(a[4]) == [0.0] * 3


def test_module_constant():
    assert bms_native.SOP_LIM_BASE == sop.LIM_BASE == len(sop.lim_vec({
        "v_min": 2.5, "v_max": 4.2, "i_discharge_max_a": 1.0, "i_charge_max_a": 1.0}, ()))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
