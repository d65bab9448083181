"""The host ECM simulator (bms_host.ecm) is the device model (bms.model), only faster."""
import math

import calsample
import numpy as np

from bms import model
from bms_host import ecm


def _trace(n=1500, amb=5.0):
    t = np.concatenate([[0.0], np.cumsum(np.where(np.arange(n) % 200 == 150, 2.5, 1.0))])
    i = np.array([0.0] + [calsample.drive_current(k) * 1.6 for k in range(n)])
    ta = amb + 10.0 * np.sin(np.arange(n + 1) / 400.0)   # ambient moves across the grid
    return t, i, ta


def _device(p, t, i, ta, soc0, temp0):
    sim = model.Simulator(p, soc0, temp0)
    tab = [0.0] * model.NTAB
    v = [model.voltage(p, soc0, 0.0, 0.0, temp0, float(i[0]), tab, 1.0, 0.0)]
    tc, ts = [temp0], [temp0]
    for k in range(1, len(t)):
        v.append(sim.step(float(i[k]), float(ta[k]), float(t[k] - t[k - 1])))
        tc.append(sim.tc)
        ts.append(sim.ts)
    return np.array(v), np.array(tc), np.array(ts), sim.soc


def _with_i0(cal):
    """The sample calibration plus an exchange-current table (A) that varies with SOC and
    temperature, small enough that the kinetic term is tens of mV at the test's currents."""
    tab = cal["tables"]
    tab["i0_a"] = [[(1.0 + 3.0 * s * (1.0 - s)) * (0.8 + 0.06 * (t + 10.0)) for s in tab["soc"]]
                   for t in tab["temp_c"]]
    return cal


def _with_r2c_k2(cal):
    """Plus an R2-on-charge table unlike R2, heated fractions of i*v1 and i*v2 below 1 and
    an ohmic heat table unlike R0."""
    tab = cal["tables"]
    tab["r2c_ohm"] = [[0.5 * v * (1.0 + s) for v, s in zip(row, tab["soc"], strict=True)]
                      for row in tab["r2_ohm"]]
    tab["rh_ohm"] = [[v * (2.5 - s) for v, s in zip(row, tab["soc"], strict=True)]
                     for row in tab["r0_ohm"]]
    cal["thermal"]["heat_v2_fraction"] = 0.35
    cal["thermal"]["heat_v1_fraction"] = 0.6
    return cal


def _with_diffusion(cal):
    """Plus a diffusion shift large enough to move the voltage by tens of mV."""
    cal["diffusion"] = {"shift_per_a": 0.01, "tau_s": 60.0, "activation_k": 3000.0,
                        "shift_per_a_chg": 0.004}
    return cal


def _block(p, cal, k):
    ns, nt = len(cal["tables"]["soc"]), len(cal["tables"]["temp_c"])
    o = model.HEADER + ns + nt + k * ns * nt
    return p[o:o + ns * nt]


def test_ecm_equals_device_simulator():
    cal = _with_diffusion(_with_r2c_k2(_with_i0(calsample.calibration())))
    # a cold start so the core temperature crosses the 0 and 25 degC grid points
    cal["thermal"]["c_core_j_per_k"] = 20.0
    tb = ecm.Tables.from_cal(cal)
    p = model.pack(cal)
    t, i, ta = _trace()
    soc0, temp0 = 0.93, -3.0
    v, tc, ts, soc_end = _device(p, t, i, ta, soc0, temp0)
    r = ecm.simulate(tb, t, i, ta, soc0, temp0)
    assert tc.max() > 25.0 > tc.min()
    assert np.max(np.abs(r["voltage_v"] - v)) < 1e-9
    assert np.max(np.abs(r["temp_core_c"] - tc)) < 1e-9
    assert np.max(np.abs(r["temp_surface_c"] - ts)) < 1e-9
    assert math.isclose(r["soc"][-1], soc_end, abs_tol=1e-12)
    assert p[model.HEAT_V2] == 0.35 and p[model.HEAT_V1] == 0.6 and p[model.HEAT_RH] == 1.0
    assert p[model.SHIFT_GAIN] == 0.01 and p[model.SHIFT_E] == 3000.0
    assert p[model.SHIFT_GAIN_CHG] == 0.004
    # the charge gain matters (the trace charges), and without it the gain is one
    one = dict(cal, diffusion=dict(cal["diffusion"], shift_per_a_chg=0.01))
    sym = ecm.simulate(ecm.Tables.from_cal(one), t, i, ta, soc0, temp0)
    assert np.max(np.abs(sym["voltage_v"] - v)) > 1e-3
    del one["diffusion"]["shift_per_a_chg"]
    assert model.pack(one)[model.SHIFT_GAIN_CHG] == 0.01
    assert np.max(np.abs(ecm.simulate(ecm.Tables.from_cal(one), t, i, ta, soc0,
                                      temp0)["voltage_v"] - sym["voltage_v"])) == 0.0
    # the diffusion shift matters; without it the OCV is read at the SOC itself
    del cal["diffusion"]
    nod = ecm.simulate(ecm.Tables.from_cal(cal), t, i, ta, soc0, temp0)
    assert np.max(np.abs(nod["voltage_v"] - v)) > 5e-3
    assert np.max(np.abs(nod["temp_core_c"] - tc)) < 1e-9   # and it is not heat
    assert model.pack(cal)[model.SHIFT_GAIN] == 0.0
    # the heat's own table and k1 matter (heat only); without them the heat takes R0
    # and all of i*v1
    for drop in ("rh", "k1"):
        c = dict(cal, tables=dict(cal["tables"]), thermal=dict(cal["thermal"]))
        if drop == "rh":
            del c["tables"]["rh_ohm"]
        else:
            del c["thermal"]["heat_v1_fraction"]
        r1 = ecm.simulate(ecm.Tables.from_cal(c), t, i, ta, soc0, temp0)
        assert np.max(np.abs(r1["temp_core_c"] - tc)) > 1e-2
        d1 = _device(model.pack(c), t, i, ta, soc0, temp0)
        assert np.max(np.abs(r1["temp_core_c"] - d1[1])) < 1e-9
    # r2c and k2 matter; without them the model is R2 both ways and k2 = 1
    del cal["tables"]["r2c_ohm"]
    del cal["thermal"]["heat_v2_fraction"]
    del cal["tables"]["rh_ohm"]
    del cal["thermal"]["heat_v1_fraction"]
    old = ecm.simulate(ecm.Tables.from_cal(cal), t, i, ta, soc0, temp0)
    assert np.max(np.abs(old["voltage_v"] - v)) > 1e-3
    assert np.max(np.abs(old["temp_core_c"] - tc)) > 1e-2
    p1 = model.pack(cal)
    assert p1[model.HEAT_V2] == 1.0 and _block(p1, cal, model.R2C) == _block(p1, cal, model.R2)
    assert p1[model.HEAT_V1] == 1.0 and p1[model.HEAT_RH] == 0.0
    assert _block(p1, cal, model.RH) == _block(p1, cal, model.R0)
    v1_, tc1, _, _ = _device(p1, t, i, ta, soc0, temp0)
    assert np.max(np.abs(old["voltage_v"] - v1_)) < 1e-9
    assert np.max(np.abs(old["temp_core_c"] - tc1)) < 1e-9
    # the kinetic term is there, and a calibration without i0_a is the linear model
    del cal["tables"]["i0_a"]
    lin = ecm.simulate(ecm.Tables.from_cal(cal), t, i, ta, soc0, temp0)
    assert np.max(np.abs(lin["voltage_v"] - v)) > 5e-3
    p0 = model.pack(cal)
    assert set(_block(p0, cal, model.I0)) == {model.I0_NONE}


def test_kinetic_term_matches_the_device():
    for i, i0, tc in ((0.0, 2.0, 25.0), (10.0, 1.5, -10.0), (-7.5, 0.3, 40.0), (1e-3, 1e6, 0.0)):
        assert abs(float(ecm.kinetic_np(i, i0, tc)) - model.kinetic_v(i, i0, tc)) < 1e-12
        # its derivative in i0 (the fit's Jacobian) against a central difference
        h = 1e-6 * i0
        slope = (model.kinetic_v(i, i0 + h, tc) - model.kinetic_v(i, i0 - h, tc)) / (2.0 * h)
        assert abs(float(ecm.kinetic_di0(i, i0, tc)) - slope) <= 1e-6 * abs(slope) + 1e-12


def test_thermal_network_alone_matches_coupled_run():
    cal = _with_i0(calsample.calibration())
    tb = ecm.Tables.from_cal(cal)
    t, i, ta = _trace(800, 25.0)
    r = ecm.simulate(tb, t, i, ta, 0.8, 25.0)
    tc, ts = ecm.simulate_thermal(t, r["heat_w"], ta, tb.thermal, 25.0, 25.0)
    assert np.max(np.abs(tc - r["temp_core_c"])) < 1e-9
    assert np.max(np.abs(ts - r["temp_surface_c"])) < 1e-9


def test_lookup_matches_the_device_past_the_grid():
    cal = calsample.calibration()
    tb = ecm.Tables.from_cal(cal)
    p = model.pack(cal)
    tab = [0.0] * model.NTAB
    for soc, temp in ((-0.2, -30.0), (1.3, 80.0), (0.47, 12.5), (0.0, 25.0)):
        model.lookup(p, soc, temp, tab)
        got = tb.lookup("r1_ohm", np.array([soc]), np.array([temp]))[0]
        assert abs(got - tab[model.R1]) < 1e-15
        assert abs(tb.ocv(np.array([soc]), np.array([temp]))[0] - tab[model.OCV]) < 1e-12
