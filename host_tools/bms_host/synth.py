"""`bms-host synth`: synthetic cell data from a PyBaMM DFN model with a lumped thermal model.

The work is spread over modules named for what they hold: synth_cells (the cells, their
parameters, the ageing modes), synth_profiles (the load profiles), synth_dfn (the
simulation), synth_files (the CSV format, the manifest, the cache), synth_aged
(--aged: accelerated cycling) and synth_use (--aged-use: aged cells in a maker's use).
This module is the command and the standard data set of a fresh cell."""
import json
import os
import sys
import time
from pathlib import Path


from . import UserError
from . import synth_profiles as sp
from .synth_aged import run_aged
from .synth_cells import CELLS, _parse_ambients, cell_spec, initial_hysteresis_state
from .synth_dfn import c20_remaining_ah, run_current_profile, run_power_profile
from .synth_files import (
    CODE_VERSION,
    _cached_json,
    _file_name,
    _hash,
    _pybamm_version,
    format_csv,
    load_run,
    save_run,
    sha256_file,
    write_manifest,
)
from .synth_use import USE_DAYS, run_aged_use

HELP = "generate synthetic cell data (PyBaMM DFN, lumped thermal) for fitting and validation"


def configure(parser):
    parser.add_argument("--cell", required=True, choices=sorted(CELLS),
                        help="cell type (PyBaMM parameter set and installation)")
    parser.add_argument("--out", required=True, help="output folder for CSVs and manifest.json")
    parser.add_argument("--ambients", default=None,
                        help="comma-separated ambient temperatures in degC "
                             "(default -10,0,25,45, the drive cycles 0,5,25,40; --quick: 25)")
    parser.add_argument("--profiles", default=None,
                        help="comma-separated subset of profiles (pocv_dis,pocv_chg,hppc,pulses,"
                             "dst,random,cp,fastcharge,chgsteps,rate; the drive cycles urban,"
                             "aggressive,highway only when named)")
    parser.add_argument("--quick", action="store_true",
                        help="self-test: one 120 s pulse profile on a coarse mesh")
    parser.add_argument("--aged", action="store_true",
                        help="aged lgm50 (SEI + plating, accelerated cycling): C/20, HPPC, DST "
                             "at 25 degC")
    # "%%%%": the text is %-formatted twice, here (USE_DAYS) and by argparse
    parser.add_argument("--aged-use", default=None, metavar="LEVELS",
                        help="lgm50 aged to these capacity levels in %%%% (e.g. 100,95,87,80), "
                             "each living %d days of a maker's use at 25 and 10 degC: one "
                             "folder OUT/lgm50_aged<LEVEL> per level" % USE_DAYS)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1-2, default 2)")
    parser.add_argument("--no-cache", action="store_true", help="ignore cached results")


# Up to synth-6 a start at empty (rested on the lower cut-off) was labelled Q_rem0 = 0, the
# C/20 discharge's end state, which it lies below (synth_dfn.c20_remaining_ah): its label is
# now counted from full. The tag is in the keys of those starts' Q_rem0 and files only, so
# they are re-labelled while their simulations (and every other file) stay cached.
EMPTY_LABEL = "empty start: Q_rem0 = Q_c20 - stoichiometry window"


def _label_tag(init_soc):
    return [EMPTY_LABEL] if init_soc <= 1e-9 else []


def q_rem(spec, init_soc, use_cache=True, q_c20=None):
    key = "qrem-" + _hash([CODE_VERSION, _pybamm_version(), spec, round(init_soc, 6)]
                          + _label_tag(init_soc))[:24]
    return _cached_json(key, lambda: {"q_ah": c20_remaining_ah(spec, init_soc, q_c20)},
                        use_cache)["q_ah"]


def experiment_key(spec, ambient_c, profile):
    """Key of the simulation (its cache entry)."""
    return _hash([CODE_VERSION, _pybamm_version(), spec, float(ambient_c), profile])


def file_key(spec, ambient_c, profile):
    """Key of the file (the manifest's input_key): the simulation and its soc_true label."""
    key = experiment_key(spec, ambient_c, profile)
    tag = _label_tag(profile["init_soc"])
    return _hash([key] + tag) if tag else key


def run_experiment(task):
    """Worker: simulate one (profile, ambient); returns (arrays, meta). Cached on disk."""
    spec, ambient_c, profile, q_c20, q_rem0, use_cache = task
    key = experiment_key(spec, ambient_c, profile)
    cached = load_run(key) if use_cache else None
    if cached is not None:
        return cached
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    t0 = time.time()
    if profile["mode"] == "power":
        arr, reason, notes = run_power_profile(spec, ambient_c, profile)
    else:
        arr, reason, notes = run_current_profile(spec, ambient_c, profile)
    meta = {"key": key, "end_reason": reason, "notes": notes,
            "duration_s": float(arr["t"][-1]), "rows": int(len(arr["t"])),
            "wall_s": round(time.time() - t0, 1),
            "q_rem0_ah": q_rem0,
            "discharged_ah": float((arr["I"][1:] * (arr["t"][1:] - arr["t"][:-1])).sum() / 3600),
            "v_min": float(arr["V"].min()), "v_max": float(arr["V"].max()),
            "t_surface_max_c": float(arr["Ts"].max()), "t_core_max_c": float(arr["Tc"].max()),
            "core_minus_surface_max_k": float((arr["Tc"] - arr["Ts"]).max())}
    save_run(key, arr, meta)
    return arr, meta


def plan(args):
    cell = args.cell
    quick = bool(args.quick)
    spec = cell_spec(cell, quick=quick)
    c_ah, v_nom = CELLS[cell]["nominal_ah"], CELLS[cell]["v_nom"]
    if quick:
        profiles = [sp.quick_pulses(c_ah)]
    else:
        profiles = sp.standard_profiles(c_ah, v_nom, bool(spec.get("hysteresis")))
    if args.profiles:
        # the drive cycles are made only when named (a bench set, kept apart from the
        # fit's folder: `--profiles urban,aggressive,highway --out data/CELL_drive`)
        every = profiles + ([] if quick else sp.drive_profiles(c_ah))
        want = [x.strip() for x in args.profiles.split(",") if x.strip()]
        names = [p["name"] for p in every]
        bad = [w for w in want if w not in names]
        if bad:
            raise UserError("unknown profile %s: choose from %s" % (bad[0], ",".join(names)))
        profiles = [p for p in every if p["name"] in want]
    ambients = _parse_ambients(args.ambients, quick)
    if args.ambients is None and not quick:
        # the drive cycles have their own ambients (0-40 degC, 5 for a cold drive)
        tasks = [(p, a) for a in ambients for p in profiles if p["name"] not in sp.DRIVE_NAMES]
        tasks += [(p, float(a)) for a in sp.DRIVE_AMBIENTS for p in profiles
                  if p["name"] in sp.DRIVE_NAMES]
    else:
        tasks = [(p, a) for a in ambients for p in profiles]
    return spec, tasks


def run(args):
    if args.jobs < 1 or args.jobs > 2:
        raise UserError("--jobs must be 1 or 2 (the machine is shared)")
    if args.aged_use:
        if args.cell != "lgm50":
            raise UserError("--aged-use exists for lgm50 only")
        return run_aged_use(args)
    if args.aged:
        if args.cell != "lgm50":
            raise UserError("--aged exists for lgm50 only")
        return run_aged(args)
    spec, tasks = plan(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError("cannot create output folder %s (%s)" % (out, e.strerror)) from None
    return generate(spec, tasks, out, jobs=args.jobs,
                    use_cache=not args.no_cache)


def generate(spec, tasks, out, jobs=2, use_cache=True, extra_manifest=None):
    """Simulate the (profile, ambient) tasks into out/ (CSV per task and manifest.json)."""
    from tqdm import tqdm
    ambients = sorted({float(a) for _, a in tasks})
    profiles = list({id(p): p for p, _ in tasks}.values())
    mpath = out / "manifest.json"
    old = {}
    if mpath.exists():
        try:
            old = {f["file"]: f for f in json.loads(mpath.read_text()).get("files", [])}
        except (ValueError, KeyError, TypeError):
            old = {}
    # Fast path: every output file is present with the same inputs and contents.
    keys = {_file_name(p, a): file_key(spec, a, p) for p, a in tasks}
    fresh = all(
        use_cache and name in old and old[name].get("input_key") == key
        and (out / name).exists() and sha256_file(out / name) == old[name].get("sha256")
        for name, key in keys.items())
    if fresh and mpath.exists():
        print("synth: %d files in %s are up to date (cache hit)" % (len(keys), out))
        return 0

    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    print("synth: %s, %d experiments, %d worker(s)" % (spec["cell"], len(tasks), jobs),
          file=sys.stderr)
    q_c20 = q_rem(spec, 1.0, use_cache)
    qr = {}
    for p in profiles:
        s = p["init_soc"]
        if s not in qr:
            qr[s] = q_c20 if s == 1.0 else q_rem(spec, s, use_cache, q_c20)
    work = [(spec, a, p, q_c20, qr[p["init_soc"]], use_cache) for p, a in tasks]
    # the longest first, so two workers finish together
    order = {"urban": 0, "dst": 0, "highway": 1, "aggressive": 1, "hppc": 1, "pulses": 1,
             "random": 2, "cp": 3, "chgsteps": 4, "fastcharge": 5, "rate": 5, "pocv_dis": 6,
             "pocv_chg": 7}
    idx = sorted(range(len(work)), key=lambda i: order.get(work[i][2]["name"], 9))
    results = [None] * len(work)
    bar = tqdm(total=len(work), desc="synth %s" % spec["cell"], unit="exp")
    if jobs > 1 and len(work) > 1:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs) as pool:
            futs = {i: pool.apply_async(run_experiment, (work[i],)) for i in idx}
            pending = set(idx)
            while pending:
                for i in list(pending):
                    if futs[i].ready():
                        results[i] = futs[i].get()
                        pending.discard(i)
                        bar.update(1)
                time.sleep(0.2)
    else:
        for i in idx:
            results[i] = run_experiment(work[i])
            bar.update(1)
    bar.close()

    files = []
    for (p, a), (arr, meta), w in zip(tasks, results, work, strict=True):
        name = _file_name(p, a)
        path = out / name
        path.write_text(format_csv(arr, a, w[4], w[3]))
        files.append({"file": name, "profile": p["name"], "ambient_c": a, "role": p["role"],
                      "description": p["desc"], "init_soc_stoich": p["init_soc"],
                      "sample_s": p["dt"], "duration_s": meta["duration_s"],
                      "rows": meta["rows"], "end_reason": meta["end_reason"],
                      # Q_rem0 as labelled now (a cached run's meta may hold an older one)
                      "notes": meta["notes"], "q_rem0_ah": w[4],
                      "discharged_ah": round(meta["discharged_ah"], 6),
                      "v_min": round(meta["v_min"], 5), "v_max": round(meta["v_max"], 5),
                      "t_surface_max_c": round(meta["t_surface_max_c"], 3),
                      "t_core_max_c": round(meta["t_core_max_c"], 3),
                      "core_minus_surface_max_k": round(meta["core_minus_surface_max_k"], 3),
                      "wall_s": meta["wall_s"], "input_key": file_key(spec, a, p),
                      "sha256": sha256_file(path)})
        if spec.get("hysteresis"):
            files[-1]["init_hysteresis_state"] = initial_hysteresis_state(p["init_soc"])
    # A subset (--profiles, --ambients) adds to the folder: the manifest keeps the entries of
    # the files it did not make (still present, same contents), so it describes them all.
    made = {f["file"] for f in files}
    kept = [f for name, f in old.items()
            if name not in made and (out / name).exists()
            and sha256_file(out / name) == f.get("sha256")]
    all_amb = sorted({float(a) for a in ambients} | {float(f["ambient_c"]) for f in kept})
    # in the folder's order, new files last: a re-run changes the entries it re-made only
    pos = {name: k for k, name in enumerate(old)}
    entries = sorted(kept + files, key=lambda f: pos.get(f["file"], len(pos)))
    write_manifest(out, spec, all_amb, entries, q_c20, extra_manifest)
    print("synth: wrote %d files to %s" % (len(files), out))
    return 0
