"""The real Raspberry Pi Pico firmware (RPI_PICO, float32, ulab + bms_native, the device
code frozen) booted in the rp2040js emulator: it imports, and its three filter backends
agree on a short trace."""
import pytest

from bms_host import REPO, firmware, rp2040

CAL = REPO / "calibration" / "lgm50.json"
TRACE = REPO / "data" / "lgm50" / "dst_25C.csv"
ROWS = (7000, 7060)   # one minute of DST around half charge, where the OCV has a slope


@pytest.fixture(scope="session")
def firmware_bin():
    try:
        firmware.sources()   # cheap checks first: no npm ci or build just to skip
        rp2040.node()
        return firmware.build_rp2()
    except (firmware.Unavailable, rp2040.NodeMissing) as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def pico(firmware_bin):
    with rp2040.Pico(firmware_bin) as p:
        yield p


def test_firmware_has_ulab_native_and_frozen_device_code(pico):
    out = pico.exec(
        "import sys, ulab, bms_native, bms, board\n"
        "from bms import application\n"
        "from drivers import ina226\n"
        "from sim import sim_i2c\n"
        "print(sys.implementation._build, ulab.__version__, bms_native.REAL_SIZE)\n"
        # frozen modules have no file on the (empty) filesystem: their path is the
        # manifest's, not /...
        "print(application.__file__, board.__file__)\n")
    build, ulab_version, real_size, app_file, board_file = out.split()
    assert build == "RPI_PICO"
    assert ulab_version.startswith("6.")
    assert real_size == "4"            # float32, as on every board
    assert not app_file.startswith("/") and not board_file.startswith("/")


def _trace_rows():
    lines = TRACE.read_text().splitlines()
    names = lines[0].split(",")
    cols = [names.index(c) for c in ("time_s", "current_a", "voltage_v", "temperature_c",
                                     "ambient_c")]
    return [tuple(float(line.split(",")[k]) for k in cols)
            for line in lines[ROWS[0]:ROWS[1]]]


CROSS_CHECK = """
import gc, time
from bms import backends, calfile, estimator
cal = calfile.compact(calfile.loads(CAL_TEXT)[0])
del CAL_TEXT
gc.collect()
for name in ("python", "ulab", "native"):
    c = estimator.CellEstimator(cal, backends.make(name))
    t_prev = None
    us = 0
    socs = []
    for t, i, v, ts, ta in ROWS:
        t0 = time.ticks_us()
        c.step(i, v, ts, ta, t - t_prev if t_prev is not None else 0.0)
        us += time.ticks_diff(time.ticks_us(), t0)
        t_prev = t
        socs.append(c.soc())
    print(name, c.status, us // (len(ROWS) - 1), " ".join("%.6f" % s for s in socs))
    del c
    gc.collect()
"""


def test_backends_agree_on_the_pico(pico):
    # sent in three pieces: each compiles on the Pico's heap, where one large piece
    # needs a long free run that an earlier test's imports may have split
    pico.exec("CAL_TEXT = %r" % CAL.read_text())
    pico.exec("ROWS = %r" % (_trace_rows(),))
    runs = {}
    for line in pico.exec(CROSS_CHECK).splitlines():
        name, status, us, *socs = line.split()
        assert status == "0", "%s ended with filter status %s" % (name, status)
        runs[name] = [float(s) for s in socs]
        print("%s: %.1f ms per step (emulated RP2040)" % (name, int(us) / 1000.0))
    assert sorted(runs) == ["native", "python", "ulab"]
    ref = runs["python"]
    assert 0.2 < ref[-1] < 0.8
    for name in ("ulab", "native"):
        worst = max(abs(a - b) for a, b in zip(runs[name], ref, strict=True))
        assert worst < 1e-3, "%s differs from python by %.2g in SOC" % (name, worst)


NON_FINITE = """
from bms import backends, calfile, estimator, ukf
cal = calfile.compact(calfile.loads(CAL_TEXT)[0])
del CAL_TEXT
c = estimator.CellEstimator(cal, backends.make("native"))
c.step(2.0, 3.70, 25.0, 25.0, 0.0)     # from the OCV
c.step(2.0, 3.69, 25.0, 25.0, 1.0)
b = c.backend
inf = float("inf")
nan = float("nan")
for i, ta, dt in ((inf, 25.0, 1.0), (-inf, 25.0, 1.0), (nan, 25.0, 1.0), (2.0, inf, 1.0),
                  (2.0, nan, 1.0), (2.0, 25.0, inf), (2.0, 25.0, nan), (3e29, 25.0, 1.0),
                  (2.0, 25.0, 9e29), (2.0, 2e29, 1.0)):
    x = b.alloc(c.x)
    P = b.alloc(c.P)
    u = b.alloc(ukf.make_u(i, ta, dt, 3.69, 25.0, c.capacity_ah() * 3600.0))
    st = b.step(x, P, c.p, c.cfg, u, c.out)
    same = list(x) == list(c.x) and list(P) == list(c.P)
    ok = all(v == v and -1e30 < v < 1e30 for v in list(x) + list(P))
    print(st, int(same), int(ok))
"""


def test_native_step_refuses_non_finite_input_on_the_pico(firmware_bin):
    # The firmware's C step does its hot arithmetic in the RP2040 boot ROM, where an
    # overflow gives an infinity (the SDK's wrappers give NaN). A non-finite current,
    # ambient or dt must answer status 1 (ukf_core.c: BMS_ERR_NONFINITE); finite inputs
    # so large that the step overflows must be refused too (1, or 2 when the overflow
    # reaches the innovation's determinant first); either way the state stays as it was.
    with rp2040.Pico(firmware_bin) as pico:   # its own Pico: a heap no other test split
        pico.exec("CAL_TEXT = %r" % CAL.read_text())
        lines = pico.exec(NON_FINITE).split("\n")
    results = [tuple(int(v) for v in line.split()) for line in lines if line.strip()]
    assert len(results) == 10
    for k, (status, same, finite) in enumerate(results):
        if k < 7:
            assert status == 1, "case %d: status %d, expected 1 (non-finite)" % (k, status)
        else:
            assert status in (1, 2), "case %d: an overflowing step answered %d" % (k, status)
        assert same and finite, "case %d: the refused step changed the state" % k
