"""`bms-host synth --aged-use`: the LG M50 aged by parameter changes (synth_cells'
ageing modes) to a few capacity levels, each living days of a maker's use
(synth_profiles.maker_use) at a few ambients, with the true capacity retention and
resistance growth in each level's manifest. PyBaMM is imported where it is used:
importing it takes seconds, which a run served from the cache need not pay."""
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import UserError
from . import synth_profiles as sp
from .synth_cells import _parse_ambients, apply_ageing_modes, cell_spec, make_parameters
from .synth_dfn import c20_remaining_ah
from .synth_files import (
    CODE_VERSION,
    _cached_json,
    _hash,
    _pybamm_version,
    amb_tag,
    format_csv,
    load_run,
    save_run,
    sha256_file,
    write_manifest,
)

# The levels, named for the capacity they aim at (C/20 at 25 degC against the fresh
# cell), as ageing modes (synth_cells.apply_ageing_modes); the manifest records the
# simulated retention and the 10 s pulse resistance.
AGE_LEVELS = {100: {"area": 0.0, "lli": 0.0},
              95: {"area": 0.035, "lli": 0.01},
              87: {"area": 0.11, "lli": 0.015},
              80: {"area": 0.175, "lli": 0.02}}
USE_DAYS = 4
USE_AMBIENTS = (25.0, 10.0)
USE_SAMPLE_S = 10.0        # the Experiment's default period (every step names its own)
USE_INIT_SOC = 0.8


def use_spec(level):
    if level not in AGE_LEVELS:
        raise UserError("--aged-use levels must be among %s (capacity %%), got %s"
                        % (",".join(str(k) for k in sorted(AGE_LEVELS, reverse=True)), level))
    spec = cell_spec("lgm50")
    spec["cell"] = "lgm50_aged%d" % level
    spec["options"]["contact resistance"] = "true"
    spec["modes"] = dict(AGE_LEVELS[level])
    return spec


def _parse_levels(text):
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError("--aged-use takes capacity levels in %, e.g. 100,95,87,80") from None
    if not levels:
        raise UserError("--aged-use takes capacity levels in %, e.g. 100,95,87,80")
    for lv in levels:
        use_spec(lv)  # refuses unknown levels
    return levels


def pulse_r10(spec, soc=0.5):
    """10 s 1C discharge-pulse resistance (ohm) from rest at stoichiometric SOC soc, 25 degC."""
    import pybamm
    c_ah = spec["nominal_ah"]
    model = pybamm.lithium_ion.DFN(options=dict(spec["options"]))
    p = make_parameters(spec, 25.0, soc)
    exp = pybamm.Experiment(["Rest for 60 seconds", "Discharge at %g A for 10 seconds" % c_ah],
                            period="1 second")
    sol = pybamm.Simulation(model, parameter_values=p, experiment=exp,
                            solver=pybamm.IDAKLUSolver()).solve()
    v = np.asarray(sol["Voltage [V]"].entries)
    t = np.asarray(sol.t)
    v0 = float(np.interp(60.0 - 1e-6, t, v))
    return (v0 - float(v[-1])) / c_ah


def run_use_experiment(task):
    """Worker: one aged level at one ambient through its maker's-use steps (cached)."""
    spec, ambient_c, steps, use_cache = task
    key = "use-" + _hash([CODE_VERSION, _pybamm_version(), spec, float(ambient_c), steps,
                          USE_SAMPLE_S, USE_INIT_SOC])[:32]
    cached = load_run(key) if use_cache else None
    if cached is not None:
        return cached
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    import pybamm
    t0 = time.time()
    model = pybamm.lithium_ion.DFN(options=dict(spec["options"]))
    p = make_parameters(spec, ambient_c, USE_INIT_SOC)
    exp = pybamm.Experiment(steps, period="%d seconds" % USE_SAMPLE_S)
    sol = pybamm.Simulation(model, parameter_values=p, experiment=exp,
                            solver=pybamm.IDAKLUSolver()).solve()
    t = np.asarray(sol.t, dtype=float)
    q = np.asarray(sol["Discharge capacity [A.h]"].entries, dtype=float)
    v = np.asarray(sol["Voltage [V]"].entries, dtype=float)
    ts = np.asarray(sol["Surface temperature [K]"].entries, dtype=float) - 273.15
    tc = np.asarray(sol["Volume-averaged cell temperature [K]"].entries, dtype=float) - 273.15
    v[0] = float(sol["Battery open-circuit voltage [V]"].entries[0])
    # a step boundary appears twice: keep the first (the end of the interval before it)
    keep = np.concatenate([[True], np.diff(t) > 1e-6])
    t, q, v, ts, tc = t[keep], q[keep], v[keep], ts[keep], tc[keep]
    # the current of row k is the mean over (t_{k-1}, t_k] (exact charge: the CV hold's
    # current is not constant over a sample)
    cur = np.zeros(len(t))
    cur[1:] = np.diff(q) * 3600.0 / np.diff(t)
    arr = {"t": t, "I": cur, "V": v, "Ts": ts, "Tc": tc}
    reason = "profile complete" if len(sol.cycles) == len(steps) else (
        "stopped after %d of %d steps: %s" % (len(sol.cycles), len(steps), sol.termination))
    meta = {"key": key, "end_reason": reason, "notes": [], "wall_s": round(time.time() - t0, 1),
            "duration_s": float(t[-1]), "rows": int(len(t))}
    save_run(key, arr, meta)
    return arr, meta


def _level_facts(level, use_cache):
    """C/20 capacity from full, the charge left from the use traces' start, the pulse
    resistance and the SEI numbers of one level (each cached by its inputs)."""
    spec = use_spec(level)
    key = "usefacts-" + _hash([CODE_VERSION, _pybamm_version(), spec, USE_INIT_SOC])[:24]

    def compute():
        import pybamm
        p = pybamm.ParameterValues(spec["parameter_set"])
        sei = apply_ageing_modes(p, spec["modes"])
        return {"q_c20_ah": c20_remaining_ah(spec, 1.0),
                "q_rem0_ah": c20_remaining_ah(spec, USE_INIT_SOC),
                "r10s_ohm": pulse_r10(spec), **sei}
    return spec, _cached_json(key, compute, use_cache)


def run_aged_use(args):
    """data/lgm50_aged<LEVEL>/use_<T>C.csv: USE_DAYS days of a maker's use per level and
    ambient, with a manifest carrying the true capacity retention and resistance growth."""
    from tqdm import tqdm
    if args.jobs < 1 or args.jobs > 2:
        raise UserError("--jobs must be 1 or 2 (the machine is shared)")
    levels = _parse_levels(args.aged_use)
    ambients = (_parse_ambients(args.ambients, False) if args.ambients
                else list(USE_AMBIENTS))
    parent = Path(args.out)
    use_cache = not args.no_cache
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    facts = {lv: _level_facts(lv, use_cache) for lv in sorted(set(levels) | {100})}
    work = []
    for lv in levels:
        spec, f = facts[lv]
        steps = sp.maker_use(spec["nominal_ah"], f["q_c20_ah"], days=USE_DAYS,
                             init_soc=USE_INIT_SOC)
        for a in ambients:
            work.append((lv, a, (spec, a, steps, use_cache)))
    print("synth: lgm50 aged use, levels %s, ambients %s, %d runs, %d worker(s)"
          % (",".join(map(str, levels)), ",".join("%g" % a for a in ambients), len(work),
             args.jobs), file=sys.stderr)
    bar = tqdm(total=len(work), desc="synth lgm50 aged use", unit="run")
    results = {}
    if args.jobs > 1 and len(work) > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            futs = [(lv, a, pool.apply_async(run_use_experiment, (task,)))
                    for lv, a, task in work]
            for lv, a, fut in futs:
                results[(lv, a)] = fut.get()
                bar.update(1)
    else:
        for lv, a, task in work:
            results[(lv, a)] = run_use_experiment(task)
            bar.update(1)
    bar.close()
    q_fresh = facts[100][1]["q_c20_ah"]
    r_fresh = facts[100][1]["r10s_ohm"]
    for lv in levels:
        spec, f = facts[lv]
        out = parent / ("lgm50_aged%d" % lv)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError("cannot create output folder %s (%s)" % (out, e.strerror)) from None
        files = []
        for a in ambients:
            arr, meta = results[(lv, a)]
            name = "use_%sC.csv" % amb_tag(a)
            tmp = out / (name + ".part")
            tmp.write_text(format_csv(arr, a, f["q_rem0_ah"], f["q_c20_ah"]))
            os.replace(tmp, out / name)
            dis = float((arr["I"][1:] * (arr["t"][1:] - arr["t"][:-1])).sum() / 3600)
            files.append({
                "file": name, "profile": "use", "ambient_c": a, "role": "validation",
                "description": ("%d days of a maker's use (synth_profiles.maker_use): night "
                                "rests, two drive-like trips a day from ~80 %% down to ~30 %% "
                                "SOC with a 3 h rest between, a 0.5C charge back to ~80 %% "
                                "or, every second day, to the upper limit with a CV hold "
                                "to C/20; samples every 1 s on the trips, 10 s charging, 30 s in "
                                "the long rests" % USE_DAYS),
                "init_soc_stoich": USE_INIT_SOC, "sample_s": [1.0, 10.0, 30.0],
                "duration_s": meta["duration_s"], "rows": meta["rows"],
                "end_reason": meta["end_reason"], "notes": meta["notes"],
                "q_rem0_ah": f["q_rem0_ah"], "discharged_ah": round(dis, 6),
                "v_min": round(float(arr["V"].min()), 5),
                "v_max": round(float(arr["V"].max()), 5),
                "t_surface_max_c": round(float(arr["Ts"].max()), 3),
                "t_core_max_c": round(float(arr["Tc"].max()), 3),
                "core_minus_surface_max_k": round(float((arr["Tc"] - arr["Ts"]).max()), 3),
                "wall_s": meta["wall_s"], "input_key": meta["key"],
                "sha256": sha256_file(out / name)})
        extra = {
            "description": ("LG M50 21700, 5 Ah NMC811 / graphite-SiOx, aged by parameter "
                            "changes to ~%d %% capacity, in a maker's use" % lv
                            if lv != 100 else
                            "LG M50 21700, 5 Ah NMC811 / graphite-SiOx, fresh (the no-drift "
                            "reference), in a maker's use"),
            "ageing_modes": spec["modes"],
            "ageing_note": ("parameter changes on OKane2022 (host_tools/bms_host/synth.py, "
                            "AGE_LEVELS): loss of active material with its lithium in both "
                            "electrodes (a smaller electrode area), loss of lithium inventory "
                            "to SEI and the SEI film's resistance as a series resistance"),
            "sei_thickness_m": f["sei_thickness_m"],
            "sei_resistance_ohm": f["sei_resistance_ohm"],
            "c20_capacity_fresh_25c_ah": round(q_fresh, 6),
            "capacity_retention": round(f["q_c20_ah"] / q_fresh, 5),
            "r10s_50pct_ohm": round(f["r10s_ohm"], 6),
            "r10s_50pct_fresh_ohm": round(r_fresh, 6),
            "resistance_growth": round(f["r10s_ohm"] / r_fresh, 4),
            "r10s_note": "10 s 1C discharge pulse from rest at stoichiometric SOC 0.5, 25 degC",
            "soc_true_reference": "the aged cell's own C/20 capacity at 25 degC",
            "solver": "IDAKLUSolver (defaults), one pybamm.Experiment per trace (each step "
                      "with its own sample period)",
        }
        write_manifest(out, spec, ambients, files, f["q_c20_ah"], extra)
        print("synth: wrote %d files to %s (retention %.4f, R10s x%.3f)"
              % (len(files), out, f["q_c20_ah"] / q_fresh, f["r10s_ohm"] / r_fresh))
    return 0
