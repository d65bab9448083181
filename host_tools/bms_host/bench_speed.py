"""bms-host bench speed: microseconds per filter step for every backend and runtime, the
native core's ARM code size, and a 1,000,000-step float32 soak of the native step.

Floors: native >= 30x the pure-Python step under CPython, >= 20x filterpy.
"""
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import CALIBRATION_DIR, REPO, use_device_code

FLOOR_VS_PYTHON = 30.0
FLOOR_VS_FILTERPY = 20.0
SOAK_STEPS = 1_000_000
SOAK_MAX_SOC_ERR = 0.05          # bounded SOC error over the soak (fraction)
DT_S = 1.0
CORE_C = REPO / "device" / "native" / "bms_native" / "ukf_core.c"


# ---- drive cycle and plant ---------------------------------------------------------------

def calibration():
    """The pipeline's LG M50 calibration, or the test-suite's sample NMC cell."""
    use_device_code()
    from bms import calfile
    path = CALIBRATION_DIR / "lgm50.json"
    if path.exists():
        return calfile.load(str(path))[0], "lgm50.json"
    sys.path.insert(0, str(REPO / "boards" / "sim"))
    sys.path.insert(0, str(REPO / "tests" / "device"))
    try:
        import calsample
    except ImportError:
        import sample_cal as calsample
    return calsample.calibration(), "sample NMC cell (calibration/lgm50.json not built yet)"


def cycle_current(k, cap_ah, half):
    """A charge-neutral repeating cycle (A, discharge positive): pulses, regen and rests
    riding on 0.3C discharge for `half` samples, then the exact mirror image."""
    j = k % (2 * half)
    sign = 1.0 if j < half else -1.0
    j = j % half
    ph = j % 90
    if ph < 10:
        i = 1.2
    elif ph < 20:
        i = -0.6
    elif ph < 30:
        i = 0.0
    else:
        i = 0.2 * math.sin(0.3 * j)
    return sign * (0.3 + i) * cap_ah


def plant_cycle(cal, half=6000, seed=7):
    """One period of the drive cycle through the model as plant (after a warm-up period so
    the period repeats seamlessly): rows (i_a, ta_c, v_meas, ts_meas, true soc)."""
    from bms import model
    p = model.pack(cal)
    cap = cal["cell"]["capacity_ah"]
    sim = model.Simulator(p, 0.9, 25.0)
    rnd = random.Random(seed)
    rows = []
    for k in range(4 * half):
        i = cycle_current(k, cap, half)
        v = sim.step(i, 25.0, DT_S)
        if k >= 2 * half:
            rows.append((i, 25.0, v + rnd.gauss(0.0, 0.002), sim.ts + rnd.gauss(0.0, 0.1),
                         sim.soc))
    return rows


def init_state(b, soc, temp_c, soc_sigma_pct=5.0):
    from bms import estimator, ukf
    x = b.alloc([soc * 100.0, 0.0, 0.0, temp_c, temp_c, 0.0])
    sig = list(estimator.SIGMA0)
    sig[0] = soc_sigma_pct
    P = b.alloc([0.0] * (ukf.NX * ukf.NX))
    for k in range(ukf.NX):
        P[k * ukf.NX + k] = sig[k] * sig[k]
    return x, P


# ---- timing ------------------------------------------------------------------------------

def time_backend(b, cal, rows, n):
    from bms import model, ukf
    p = b.alloc(model.pack(cal))
    cfg = b.alloc(ukf.default_cfg())
    out = b.alloc([0.0] * ukf.OUT_SIZE)
    u = b.alloc(ukf.make_u(0.0, 25.0, DT_S, 0.0, 25.0, cal["cell"]["capacity_ah"] * 3600.0))
    x, P = init_state(b, rows[0][4], 25.0)
    m = len(rows)
    step = b.step
    t0 = time.perf_counter()
    for k in range(n):
        i, ta, v, ts, _ = rows[k % m]
        u[ukf.U_I] = i
        u[ukf.U_TA] = ta
        u[ukf.U_V] = v
        u[ukf.U_TS] = ts
        step(x, P, p, cfg, u, out)
    return (time.perf_counter() - t0) / n * 1e6


MPY_SCRIPT = """
import time
from bms import model, ukf, backends
try:
    import calsample
except ImportError:
    import sample_cal as calsample
cal = calsample.calibration()
p = model.pack(cal)
sim = model.Simulator(p, 0.8, 25.0)
N = %d
b = backends.PythonBackend()
x = b.alloc([80.0, 0.0, 0.0, 25.0, 25.0, 0.0])
P = b.alloc([0.0] * 36)
for k in range(6):
    P[k * 7] = 25.0
cfg = b.alloc(ukf.default_cfg())
out = b.alloc([0.0] * ukf.OUT_SIZE)
u = b.alloc(ukf.make_u(0.0, 25.0, 1.0, 0.0, 25.0, p[model.CAP_AS]))
us = 0
for k in range(N):
    i = calsample.drive_current(k) * (1 if (k // 600) %% 2 == 0 else -1)
    v = sim.step(i, 25.0, 1.0)
    u[ukf.U_I] = i
    u[ukf.U_V] = v
    u[ukf.U_TS] = sim.ts
    t0 = time.ticks_us()
    b.step(x, P, p, cfg, u, out)
    us += time.ticks_diff(time.ticks_us(), t0)
print("US", us / N)
"""


def time_micropython(n=1000):
    """The reference step under the host's MicroPython (unix port), timed with ticks_us."""
    from .mpy import micropython_binary, micropython_env
    try:
        binary = micropython_binary()
    except Exception as e:  # noqa: BLE001 - reported in the table
        return None, str(e)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "bench_mpy.py")
        with open(script, "w") as f:
            f.write(MPY_SCRIPT % n)
        env = micropython_env([REPO / "tests" / "device", REPO / "boards" / "sim"])
        r = subprocess.run([binary, script], capture_output=True, text=True, env=env,
                           timeout=600)
    for line in r.stdout.splitlines():
        if line.startswith("US "):
            return float(line[3:]), os.path.basename(binary) + ", sample cell"
    return None, "micropython failed: " + (r.stderr or r.stdout).strip()[-200:]


def filterpy_filter(cal):
    """filterpy's UnscentedKalmanFilter on the same model, scaling and sigma points
    (alpha = 1, beta = 0, kappa = 1), with process and measurement noise as ukf.py."""
    from filterpy.kalman import MerweScaledSigmaPoints, UnscentedKalmanFilter

    from bms import model, ukf
    p = model.pack(cal)
    tab = [0.0] * model.NTAB
    sc = ukf.SCALE

    def fx(x, dt, i_a=0.0, ta_c=25.0):
        i_true = i_a - x[5] / sc[5]
        s = model.step(p, x[0] / sc[0], x[1] / sc[1], x[2] / sc[2], x[3], x[4], i_true,
                       ta_c, dt, tab, p[model.CAP_AS], 1.0)
        return np.array([s[0] * sc[0], s[1] * sc[1], s[2] * sc[2], s[3], s[4], x[5]])

    def hx(x, i_a=0.0):
        i_true = i_a - x[5] / sc[5]
        v = model.voltage(p, x[0] / sc[0], x[1] / sc[1], x[2] / sc[2], x[3], i_true, tab, 1.0,
                          0.0)
        return np.array([v * 1000.0, x[4]])

    pts = MerweScaledSigmaPoints(ukf.NX, alpha=1.0, beta=0.0, kappa=1.0)
    f = UnscentedKalmanFilter(dim_x=ukf.NX, dim_z=ukf.NZ, dt=DT_S, fx=fx, hx=hx, points=pts)
    cfg = ukf.default_cfg()
    f.Q = np.diag([c * c * DT_S for c in cfg[:ukf.NX]])
    f.R = np.diag([cfg[ukf.CFG_RV], cfg[ukf.CFG_T_NOISE] * cfg[ukf.CFG_T_NOISE]])
    return f


def time_filterpy(cal, rows, n):
    f = filterpy_filter(cal)
    f.x = np.array([rows[0][4] * 100.0, 0.0, 0.0, 25.0, 25.0, 0.0])
    f.P = np.diag([25.0, 100.0, 100.0, 4.0, 1.0, 2500.0])
    z = np.zeros(2)
    m = len(rows)
    t0 = time.perf_counter()
    for k in range(n):
        i, ta, v, ts, _ = rows[k % m]
        f.predict(dt=DT_S, i_a=i, ta_c=ta)
        z[0] = v * 1000.0
        z[1] = ts
        f.update(z, i_a=i)
    return (time.perf_counter() - t0) / n * 1e6


# ---- ARM size ----------------------------------------------------------------------------

def arm_size():
    """(text, data, bss) bytes of ukf_core.o for the Cortex-M0+ (float32, -Os), or a
    reason string when the cross compiler is missing."""
    gcc = shutil.which("arm-none-eabi-gcc")
    size = shutil.which("arm-none-eabi-size")
    if not gcc or not size:
        return "arm-none-eabi-gcc is not installed (run tools/apt-deps.sh)"
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "ukf_core.o")
        r = subprocess.run([gcc, "-mcpu=cortex-m0plus", "-mthumb", "-Os", "-std=c99", "-Wall",
                            "-Wextra", "-Werror", "-Wdouble-promotion", "-c", str(CORE_C),
                            "-o", obj], capture_output=True, text=True)
        if r.returncode != 0:
            return "cross-compile failed: " + r.stderr.strip()[-300:]
        out = subprocess.run([size, obj], capture_output=True, text=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return text, data, bss


# ---- soak --------------------------------------------------------------------------------

def soak(cal, rows, steps):
    """float32 native steps over the repeating cycle, re-initialising on an error code as
    the estimator does. Returns a dict of counts and the SOC error statistics."""

    from bms import model, ukf, ukf_native
    b = ukf_native.Backend()
    p = b.alloc(model.pack(cal))
    cfg = b.alloc(ukf.default_cfg())
    cfg0 = cfg[ukf.CFG_RV]
    out = b.alloc([0.0] * ukf.OUT_SIZE)
    u = b.alloc(ukf.make_u(0.0, 25.0, DT_S, 0.0, 25.0, cal["cell"]["capacity_ah"] * 3600.0))
    x, P = init_state(b, rows[0][4] - 0.05, 25.0)   # start 5 % off
    m = len(rows)
    r = {"steps": steps, "status1": 0, "status2": 0, "nonfinite": 0, "not_pd": 0,
         "max_err": 0.0, "max_err_all": 0.0, "covered": 0, "checked": 0}
    settle = 2000
    step = b.step
    t0 = time.perf_counter()
    for k in range(steps):
        i, ta, v, ts, soc_true = rows[k % m]
        u[ukf.U_I] = i
        u[ukf.U_TA] = ta
        u[ukf.U_V] = v
        u[ukf.U_TS] = ts
        st = step(x, P, p, cfg, u, out)
        if st:
            r["status%d" % st] = r.get("status%d" % st, 0) + 1
            x2, P2 = init_state(b, x[0] / 100.0 if x[0] == x[0] else 0.5, ta, 15.0)
            x[:] = x2
            P[:] = P2
            cfg[ukf.CFG_RV] = cfg0
        err = abs(x[0] / 100.0 - soc_true)
        if err > r["max_err_all"]:
            r["max_err_all"] = err
        if k >= settle:
            if err > r["max_err"]:
                r["max_err"] = err
            r["checked"] += 1
            if err <= 3.0 * math.sqrt(max(P[0], 0.0)) / 100.0:
                r["covered"] += 1
        if k % 1000 == 999 or k == steps - 1:
            vals = list(x) + list(P)
            if not all(math.isfinite(v) for v in vals):
                r["nonfinite"] += 1
            try:
                np.linalg.cholesky(np.array(P, dtype=np.float64).reshape(6, 6))
            except np.linalg.LinAlgError:
                r["not_pd"] += 1
    r["seconds"] = time.perf_counter() - t0
    return r


# ---- main --------------------------------------------------------------------------------

def _fmt(us):
    return "%10.2f" % us if us is not None else "       n/a"


def main(soak_steps=SOAK_STEPS, n_python=2000, n_native=20000, n_filterpy=500):
    """Print the speed table, ARM size and soak; return 0 if every floor holds, else 1."""
    use_device_code()
    from bms import backends, ukf_native  # noqa: F401 - fails early if native is missing
    import bms_native_f64

    cal, cal_name = calibration()
    rows = plant_cycle(cal)
    print("filter step speed, %s, drive cycle of %d samples" % (cal_name, len(rows)))
    results = []
    mp_us, mp_note = time_micropython()
    results.append(("python (reference)", "micropython", mp_us, mp_note))
    py_us = time_backend(backends.PythonBackend(), cal, rows, n_python)
    results.append(("python (reference)", "CPython", py_us, ""))
    ok, why = backends.available("ulab")
    if ok:
        from bms import ukf_ulab
        results.append(("ulab (numpy stand-in)", "CPython",
                        time_backend(ukf_ulab.Backend(), cal, rows, n_python), "float32"))
    else:
        results.append(("ulab", "CPython", None, why))
    nat_us = time_backend(ukf_native.Backend(), cal, rows, n_native)
    results.append(("native (C) float32", "CPython", nat_us, "bms_native"))
    results.append(("native (C) float64", "CPython",
                    time_backend(ukf_native.Backend(bms_native_f64), cal, rows, n_native),
                    "bms_native_f64"))
    fp_us = time_filterpy(cal, rows, n_filterpy)
    results.append(("filterpy UnscentedKalmanFilter", "CPython", fp_us, "MerweScaledSigmaPoints"))

    print("%-32s %-12s %10s %10s  %s" % ("backend", "runtime", "us/step", "x native", "note"))
    for name, rt, us, note in results:
        ratio = "%9.1fx" % (us / nat_us) if us is not None else "       n/a"
        print("%-32s %-12s %s %s  %s" % (name, rt, _fmt(us), ratio, note))

    ok_all = True
    r_py = py_us / nat_us
    r_fp = fp_us / nat_us
    for what, r, floor in (("native vs python (CPython)", r_py, FLOOR_VS_PYTHON),
                           ("native vs filterpy", r_fp, FLOOR_VS_FILTERPY)):
        good = r >= floor
        ok_all = ok_all and good
        print("%-32s %8.1fx  floor %4.0fx  %s" % (what, r, floor, "PASS" if good else "FAIL"))

    size = arm_size()
    if isinstance(size, str):
        print("ARM Cortex-M0+ ukf_core.o: %s" % size)
    else:
        text, data, bss = size
        print("ARM Cortex-M0+ ukf_core.o (-Os, float32): code .text %d B, static RAM "
              ".data+.bss %d B (workspace on the stack: about 1.2 KB per call)"
              % (text, data + bss))

    s = soak(cal, rows, soak_steps)
    good = (s["nonfinite"] == 0 and s["not_pd"] == 0 and s.get("status1", 0) == 0
            and s.get("status2", 0) == 0 and s["max_err"] < SOAK_MAX_SOC_ERR)
    ok_all = ok_all and good
    cover = 100.0 * s["covered"] / s["checked"] if s["checked"] else 0.0
    print("soak: %d float32 native steps in %.1f s: non-finite %d, status 1 %d, status 2 %d "
          "(each re-initialised), P not PD %d, max |SOC error| %.4f after settling "
          "(%.4f from a 5 %% wrong start), 3-sigma coverage %.1f %%  %s"
          % (s["steps"], s["seconds"], s["nonfinite"], s.get("status1", 0),
             s.get("status2", 0), s["not_pd"], s["max_err"], s["max_err_all"], cover,
             "PASS" if good else "FAIL"))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
