"""The project's ECM simulator against PyBaMM's Thevenin model fed the same fitted tables.

PyBaMM's `equivalent_circuit.Thevenin` with two RC elements is the continuous-time version
of the device model: OCV, R0, R1, C1 = tau1/R1, R2, C2 = tau2/R2 as 2-D linear interpolants
of (SoC, cell temperature), and a cell -- jig -- air thermal network that matches the
core -- surface -- ambient one (thermal masses c_core, c_surf; conductances 1/r_cs, 1/r_sa;
no entropic heat). Driven by the same piecewise-constant current, the two must agree.

Thevenin has no Butler-Volmer term, so the comparison runs on the committed calibration
WITHOUT its `i0_a` table: model.pack then fills i0 = I0_NONE (1e6 A), where the kinetic
term is below a microvolt, i.e. the linear ECM that Thevenin implements. The kinetic term
itself is checked against the device code in test_ecm.py. Likewise without `r2c_ohm` (R2 on
charge) and `thermal.heat_v2_fraction` (Thevenin heats with all of i*v2): R2 both ways, k2 = 1."""
import math

import numpy as np
import pytest

from bms_host import CALIBRATION_DIR, ecm
from bms_host.calibration import read_calibration

CAL = CALIBRATION_DIR / "lgm50.json"


def _drive(c_ah, seconds):
    """Piecewise-constant dynamic load (A, discharge positive): (duration_s, current)."""
    pattern = [(20, 0.4), (10, 1.5), (10, -0.5), (30, 0.25), (5, 2.0), (15, 0.0), (30, 0.35)]
    segs, t = [], 0
    while t < seconds:
        for d, c in pattern:
            segs.append((d, c * c_ah))
            t += d
    return segs


def _thevenin(cal, segs, soc0, temp_c):
    pybamm = pytest.importorskip("pybamm")
    tab = cal["tables"]
    soc = np.array(tab["soc"])
    temp = np.array(tab["temp_c"])

    def interp(name):
        data = np.array(tab[name]).T  # (n_soc, n_temp)

        def f(T_cell, current, s):
            # the device clamps at the ends of the grid; PyBaMM would extrapolate
            tcl = pybamm.minimum(pybamm.maximum(T_cell, temp[0]), temp[-1])
            scl = pybamm.minimum(pybamm.maximum(s, soc[0]), soc[-1])
            return pybamm.Interpolant((soc, temp), data, [scl, tcl], name=name,
                                      interpolator="linear")
        return f

    def ocv_fun(s):
        # Thevenin's OCV is a function of SoC only: the row at the run's temperature (the
        # test keeps the core within a fraction of a kelvin of it, or at a grid end)
        row = np.array([np.interp(temp_c, temp, np.array(tab["ocv_v"])[:, k])
                        for k in range(len(soc))])
        return pybamm.Interpolant(soc, row, s, name="ocv", interpolator="linear")

    r0d, r0c = interp("r0_ohm"), interp("r0c_ohm")

    def r0(T, i, s):
        # the device's R0 on discharge (i >= 0), R0 on charge (i < 0)
        return r0d(T, i, s) * (i >= 0) + r0c(T, i, s) * (i < 0)

    r1, r2 = interp("r1_ohm"), interp("r2_ohm")
    t1, t2 = interp("tau1_s"), interp("tau2_s")
    th = cal["thermal"]
    model = pybamm.equivalent_circuit.Thevenin(options={"number of rc elements": 2})
    p = model.default_parameter_values
    tk = 273.15 + temp_c
    p.update({
        "Cell capacity [A.h]": cal["cell"]["capacity_ah"],
        "Nominal cell capacity [A.h]": cal["cell"]["capacity_ah"],
        "Initial SoC": soc0,
        "Open-circuit voltage [V]": ocv_fun,
        "R0 [Ohm]": r0,
        "R1 [Ohm]": r1,
        "C1 [F]": lambda T, i, s: t1(T, i, s) / r1(T, i, s),
        "R2 [Ohm]": r2,
        "C2 [F]": lambda T, i, s: t2(T, i, s) / r2(T, i, s),
        "Element-2 initial overpotential [V]": 0.0,
        "Entropic change [V/K]": 0.0,
        "Cell thermal mass [J/K]": th["c_core_j_per_k"],
        "Jig thermal mass [J/K]": th["c_surf_j_per_k"],
        "Cell-jig heat transfer coefficient [W/K]": 1.0 / th["r_core_surf_k_per_w"],
        "Jig-air heat transfer coefficient [W/K]": 1.0 / th["r_surf_amb_k_per_w"],
        "Ambient temperature [K]": tk,
        "Initial temperature [K]": tk,
        "Upper voltage cut-off [V]": 5.0,
        "Lower voltage cut-off [V]": 1.0,
        "Current function [A]": pybamm.InputParameter("I"),
    }, check_already_exists=False)
    sim = pybamm.Simulation(model, parameter_values=p, solver=pybamm.IDAKLUSolver(
        rtol=1e-9, atol=1e-9))
    t_abs = 0.0
    for d, cur in segs:
        sol = sim.step(d, t_eval=np.linspace(0.0, d, d + 1), inputs={"I": cur})
        t_abs += d
    t_out = np.arange(1.0, t_abs + 0.5)
    t_out = t_out - 1e-6  # the end of each interval, before a step change of current
    volts = sol["Voltage [V]"](t=t_out)
    temps = sol["Cell temperature [degC]"](t=t_out)
    return np.array(volts), np.array(temps)


def test_ecm_matches_pybamm_thevenin():
    if not CAL.exists():
        pytest.skip("calibration/lgm50.json not generated yet")
    cal, _ = read_calibration(CAL)
    # nor an R2 that depends on the current's direction, and it heats with all of i*v1, i*v2
    # and its ohmic heat is R0's
    cal["tables"] = {k: v for k, v in cal["tables"].items()
                     if k not in ("i0_a", "r2c_ohm", "rh_ohm")}
    cal["thermal"] = {k: v for k, v in cal["thermal"].items()
                      if k not in ("heat_v1_fraction", "heat_v2_fraction")}
    # nor a diffusion shift of the OCV's SOC
    cal.pop("diffusion", None)
    # constant temperature: a large thermal mass in both models keeps the cell at 25 degC
    # (the tables then are the 25 degC row); then the same with the fitted thermal network
    for thermal_scale, temp_c in ((1e6, 25.0), (1.0, 25.0)):
        c = dict(cal)
        c["thermal"] = dict(cal["thermal"])
        if thermal_scale != 1.0:
            c["thermal"]["c_core_j_per_k"] *= thermal_scale
            c["thermal"]["c_surf_j_per_k"] *= thermal_scale
        segs = _drive(cal["cell"]["capacity_ah"], 1200)
        current = np.concatenate([[0.0]] + [np.full(d, cur) for d, cur in segs])
        t = np.arange(len(current), dtype=float)
        soc0 = 0.8
        v_pb, tc_pb = _thevenin(c, segs, soc0, temp_c)
        sim = ecm.simulate(ecm.Tables.from_cal(c), t, current, temp_c, soc0, temp_c)
        v_ecm = sim["voltage_v"][1:]
        rmse = math.sqrt(float(np.mean((v_ecm - v_pb) ** 2)))
        assert rmse < 1e-3, "ECM vs Thevenin voltage RMSE %.3f mV" % (rmse * 1e3)
        dtc = float(np.max(np.abs(sim["temp_core_c"][1:] - tc_pb)))
        assert dtc < 0.2, "core temperature differs by %.3f K" % dtc
