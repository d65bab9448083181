"""`bms-host synth --aged`: the LG M50 aged by accelerated cycling in PyBaMM (SEI growth
and lithium plating), then characterised (C/20 discharge, HPPC, DST at 25 degC).
PyBaMM is imported where it is used: importing it takes seconds."""
import json
import os
import time
from pathlib import Path

import numpy as np

from . import UserError
from . import synth_profiles as sp
from .synth_cells import cell_spec, make_parameters
from .synth_dfn import Engine, run_current_profile
from .synth_files import (
    CODE_VERSION,
    _file_name,
    _hash,
    _pybamm_version,
    cache_dir,
    format_csv,
    sha256_file,
    write_manifest,
)


# Accelerated ageing: SEI growth (solvent-diffusion limited, with porosity change) and
# partially reversible lithium plating, with the SEI solvent diffusivity multiplied by
# AGE_SEI_FACTOR during the cycling only, so that AGE_CYCLES 1C/1C cycles at 25 degC give
# roughly 10-20 % capacity fade. The characterisation after ageing uses the unscaled rates.
AGE_SEI_FACTOR = 6000.0
AGE_CYCLES = 40
# "SEI porosity change" is left off: at the accelerated rate the SEI clogs the negative
# electrode's pores within ~20 cycles and the solver fails (seen with PyBaMM 26.10).
AGED_OPTIONS = {"SEI": "solvent-diffusion limited", "lithium plating": "partially reversible"}


def _aged_spec(quick=False):
    spec = cell_spec("lgm50", quick=quick)
    spec["cell"] = "lgm50_aged"
    spec["options"].update(AGED_OPTIONS)
    spec["aged"] = {"options": AGED_OPTIONS, "parameters": {},
                    "cycling": {"cycles": AGE_CYCLES, "sei_solvent_diffusivity_factor":
                                AGE_SEI_FACTOR, "protocol": [
                                    "Discharge at 1C until 2.5 V", "Rest for 5 minutes",
                                    "Charge at 1C until 4.2 V", "Hold at 4.2 V until C/20",
                                    "Rest for 5 minutes"], "ambient_c": 25.0}}
    return spec


def age_cell(spec, progress=None):
    """Cycle the cell with accelerated SEI growth; returns (final solution, capacities)."""
    import pybamm
    cyc = spec["aged"]["cycling"]
    model = pybamm.lithium_ion.DFN(options=dict(spec["options"]))
    p = make_parameters(spec, cyc["ambient_c"], 1.0)
    p.update({"SEI solvent diffusivity [m2.s-1]":
              p["SEI solvent diffusivity [m2.s-1]"] * cyc["sei_solvent_diffusivity_factor"]})
    exp = pybamm.Experiment([tuple(cyc["protocol"])] * cyc["cycles"])
    kw = {"var_pts": spec["var_pts"]} if spec.get("var_pts") else {}
    sim = pybamm.Simulation(model, parameter_values=p, experiment=exp,
                            solver=pybamm.IDAKLUSolver(), **kw)
    sol = sim.solve()
    caps, done = [], None
    for c in sol.cycles:
        if c is None or len(c.steps) < len(cyc["protocol"]):
            break
        dis = c.steps[0]
        caps.append(float(dis["Discharge capacity [A.h]"].entries[-1]
                          - dis["Discharge capacity [A.h]"].entries[0]))
        done = c
    if done is None:
        raise UserError("the ageing simulation failed in its first cycle")
    return done, caps


def _pulse_resistances(arr, c_ah):
    """10 s discharge-pulse resistance (ohm) at each HPPC level: (V_before - V_10s) / I."""
    i, v = arr["I"], arr["V"]
    out = []
    for k in range(1, len(i) - 10):
        if i[k - 1] == 0.0 and abs(i[k] - c_ah) < 1e-9 and np.all(i[k:k + 10] == i[k]):
            if k == 1 or i[k - 2] == 0.0:
                out.append(float((v[k - 1] - v[k + 9]) / i[k]))
    return out


def run_aged(args):
    """Aged lgm50: C/20 discharge, HPPC and DST at 25 degC after accelerated cycling."""
    from tqdm import tqdm
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = _aged_spec()
    c_ah = spec["nominal_ah"]
    profiles = [sp.pocv_dis(c_ah), sp.hppc(c_ah), sp.dst(c_ah)]
    key = _hash([CODE_VERSION, _pybamm_version(), spec, profiles])
    cpath = cache_dir() / ("aged-%s.json" % key)
    if cpath.exists() and not args.no_cache:
        res = json.loads(cpath.read_text())
    else:
        os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
        bar = tqdm(total=1 + len(profiles), desc="synth lgm50_aged", unit="step")
        t0 = time.time()
        sol, caps = age_cell(spec)
        age_wall = time.time() - t0
        bar.update(1)
        char_spec = dict(spec)
        res = {"cycle_capacities_ah": caps, "ageing_wall_s": round(age_wall, 1), "runs": []}
        q_aged = None
        for prof in profiles:
            t1 = time.time()
            eng = Engine(char_spec, 25.0, prof, initial_solution=sol)
            arr, reason, notes = run_current_profile(char_spec, 25.0, prof, engine=eng)
            if q_aged is None:
                q_aged = float((arr["I"][1:] * (arr["t"][1:] - arr["t"][:-1])).sum() / 3600.0)
            res["runs"].append({"profile": prof, "end_reason": reason, "notes": notes,
                                "arr": {k: v.tolist() for k, v in arr.items()},
                                "wall_s": round(time.time() - t1, 1)})
            bar.update(1)
        bar.close()
        res["q_c20_aged_ah"] = q_aged
        cpath.parent.mkdir(parents=True, exist_ok=True)
        cpath.write_text(json.dumps(res))
    return _write_aged(out, spec, res)


def _write_aged(out, spec, res):
    q_aged = res["q_c20_aged_ah"]
    fresh_dir = out.parent / "lgm50"
    fresh = {}
    if (fresh_dir / "manifest.json").exists():
        fresh = json.loads((fresh_dir / "manifest.json").read_text())
    files, r_aged = [], []
    for run_ in res["runs"]:
        prof = run_["profile"]
        arr = {k: np.asarray(v) for k, v in run_["arr"].items()}
        text = format_csv(arr, 25.0, q_aged, q_aged)
        name = _file_name(prof, 25.0)
        (out / name).write_text(text)
        if prof["name"] == "hppc":
            r_aged = _pulse_resistances(arr, spec["nominal_ah"])
        dis = float((arr["I"][1:] * (arr["t"][1:] - arr["t"][:-1])).sum() / 3600)
        files.append({"file": name, "profile": prof["name"], "ambient_c": 25.0,
                      "role": prof["role"], "description": prof["desc"],
                      "init_soc_stoich": "aged state after cycling, charged to 4.2 V (CV to C/20)",
                      "sample_s": prof["dt"], "duration_s": float(arr["t"][-1]),
                      "rows": int(len(arr["t"])), "end_reason": run_["end_reason"],
                      "notes": run_["notes"], "q_rem0_ah": q_aged,
                      "discharged_ah": round(dis, 6),
                      "v_min": round(float(arr["V"].min()), 5),
                      "v_max": round(float(arr["V"].max()), 5),
                      "t_surface_max_c": round(float(arr["Ts"].max()), 3),
                      "t_core_max_c": round(float(arr["Tc"].max()), 3),
                      "core_minus_surface_max_k": round(float((arr["Tc"] - arr["Ts"]).max()), 3),
                      "wall_s": run_["wall_s"], "sha256": sha256_file(out / name)})
    extra = {"ageing": dict(spec["aged"]["cycling"]),
             "ageing_note": (
                 "ACCELERATED: SEI solvent diffusivity x%g during %d cycles (1C/1C, CC-CV) at "
                 "25 degC so that tens of cycles give a fade that takes hundreds in reality; "
                 "characterisation runs use the unscaled OKane2022 rates. Capacity and "
                 "resistance changes are those of this model, not measured ageing."
                 % (AGE_SEI_FACTOR, AGE_CYCLES)),
             "cycle_discharge_capacities_ah": [round(c, 5) for c in res["cycle_capacities_ah"]],
             "ageing_wall_s": res["ageing_wall_s"],
             "soc_true_reference": "the aged cell's own C/20 capacity at 25 degC"}
    q_fresh = fresh.get("c20_capacity_25c_ah")
    if q_fresh:
        extra["c20_capacity_fresh_25c_ah"] = q_fresh
        extra["capacity_retention"] = round(q_aged / q_fresh, 5)
    fh = fresh_dir / "hppc_25C.csv"
    if fh.exists() and r_aged:
        d = np.genfromtxt(fh, delimiter=",", names=True)
        r_fresh = _pulse_resistances({"I": d["current_a"], "V": d["voltage_v"]},
                                     spec["nominal_ah"])
        n = min(len(r_fresh), len(r_aged))
        extra["r10s_note"] = ("10 s resistance (V before - V after 10 s) / 1C at every step "
                              "from rest to 1C discharge in hppc_25C (the pulse, then the start "
                              "of the 10 %% discharge), from full down; fresh = data/lgm50")
        extra["r10s_discharge_ohm_fresh"] = [round(x, 6) for x in r_fresh]
        extra["r10s_discharge_ohm_aged"] = [round(x, 6) for x in r_aged]
        if n:
            extra["resistance_growth_mean"] = round(
                float(np.mean(np.array(r_aged[:n]) / np.array(r_fresh[:n]))), 4)
    write_manifest(out, spec, [25.0], files, q_aged, extra)
    print("synth: wrote %d aged files to %s" % (len(files), out))
    return 0
