"""The files of `bms-host synth`: the trace CSV (format below), the folder's
manifest.json, and the on-disk cache of simulation results (BMS_CACHE, else
~/.cache/bms-host, under synth/).

CSV columns (one row per sample, noise-free truth):
    time_s         sample instant t_k, s (1 s grid for dynamic/HPPC, 60 s for pseudo-OCV;
                   a row at a non-grid instant is where a voltage limit was reached)
    current_a      current applied over (t_{k-1}, t_k], A, positive = discharge; it is
                   exactly constant over that interval (zero-order hold); row 0 is the
                   rested initial state and has current 0
    voltage_v      terminal voltage at t_k (row 0: the rested open-circuit voltage)
    temperature_c  can (surface) temperature at t_k, degC: what a sensor on the can sees
    ambient_c      ambient temperature, degC
    temp_core_c    volume-averaged cell temperature at t_k, degC
    soc_true       (Q_rem0 - integral_0^t I dt) / Q_c20_25, where Q_rem0 is the charge a
                   C/20 discharge at 25 degC takes from the experiment's initial state to the
                   lower cut-off (simulated from the same initial stoichiometry) and Q_c20_25
                   the C/20 discharge capacity from full at 25 degC. A start at empty rests on
                   the cut-off, below where a C/20 discharge stops: its Q_rem0 is Q_c20_25
                   less the charge between it and full (the stoichiometry window), < 0.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .synth_cells import CELLS

CODE_VERSION = "synth-6"  # bump when the simulation or file format changes
HEADER = "time_s,current_a,voltage_v,temperature_c,ambient_c,temp_core_c,soc_true"


def cache_dir():
    d = os.environ.get("BMS_CACHE")
    base = Path(d) if d else Path.home() / ".cache" / "bms-host"
    return base / "synth"


def _hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def amb_tag(amb):
    a = int(round(amb))
    return ("m%d" % -a) if a < 0 else ("%d" % a)


def _pybamm_version():
    from importlib.metadata import version
    return version("pybamm")


def load_run(key):
    """(arrays, meta) of a cached simulation run, or None when it is not cached."""
    cpath, mpath = cache_dir() / (key + ".npz"), cache_dir() / (key + ".json")
    if not (cpath.exists() and mpath.exists()):
        return None
    with np.load(cpath) as z:
        arr = {k: z[k] for k in z.files}
    return arr, json.loads(mpath.read_text())


def save_run(key, arr, meta):
    """Cache a run: the arrays, then the meta, each renamed into place (a run counts as
    cached only when both are there, so a crash leaves nothing that loads)."""
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    tmp = cdir / ("%s.tmp%d.npz" % (key, os.getpid()))
    np.savez(tmp, **arr)
    os.replace(tmp, cdir / (key + ".npz"))
    mpath = cdir / (key + ".json")
    tmp = mpath.with_suffix(".tmp%d" % os.getpid())
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, mpath)


def _cached_json(key, fn, use_cache=True):
    """fn()'s JSON value, cached under key (without use_cache: computed and cached again)."""
    path = cache_dir() / ("%s.json" % key)
    if not use_cache and path.exists():
        path.unlink()
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    val = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp%d" % os.getpid())
    tmp.write_text(json.dumps(val))
    os.replace(tmp, path)
    return val


def _compact(x, fmt):
    s = fmt % x
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def format_csv(arr, ambient_c, q_rem0, q_c20):
    """CSV text; soc_true from the zero-order-hold current as written (4 decimals, exact)."""
    t = np.round(np.asarray(arr["t"], dtype=float), 3)
    i = np.round(np.asarray(arr["I"], dtype=float), 4)
    dq = np.concatenate([[0.0], np.cumsum(i[1:] * np.diff(t))]) / 3600.0
    soc = (q_rem0 - dq) / q_c20
    lines = [HEADER]
    amb = _compact(ambient_c, "%.2f")
    v, ts, tc = arr["V"], arr["Ts"], arr["Tc"]
    for k in range(len(t)):
        lines.append("%s,%s,%.5f,%.2f,%s,%.2f,%.6f"
                     % (_compact(t[k], "%.3f"), _compact(i[k], "%.4f"), v[k], ts[k], amb,
                        tc[k], soc[k]))
    return "\n".join(lines) + "\n"


def _file_name(profile, ambient):
    return "%s_%sC.csv" % (profile["name"], amb_tag(ambient))


def write_manifest(out, spec, ambients, files, q_c20, extra=None):
    cap = {}
    for f in files:
        if f["profile"] == "pocv_dis":
            cap[amb_tag(f["ambient_c"])] = round(f["discharged_ah"], 5)
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f["file"]):
        h.update(f["file"].encode() + b"\0" + f["sha256"].encode() + b"\n")
    man = {
        "cell": spec["cell"],
        "description": (CELLS[spec["cell"]]["description"] if spec["cell"] in CELLS else
                        CELLS["lgm50"]["description"] + ", aged (accelerated SEI/plating)"),
        "generator": "bms-host synth (%s)" % CODE_VERSION,
        "pybamm_version": _pybamm_version(),
        "model": "pybamm.lithium_ion.DFN",
        "model_options": spec["options"],
        "parameter_set": spec["parameter_set"],
        "parameters_filled_from": ({"set": spec["fill_from"], "names": spec["fill"]}
                                   if spec["fill_from"] else None),
        "parameters_extra": spec["extra"],
        "installation": spec["installation"],
        "mesh": spec["var_pts"] or "PyBaMM default (20 points per domain)",
        "solver": "IDAKLUSolver (defaults)",
        "voltage_limits_v": [spec["v_min"], spec["v_max"]],
        "nominal_capacity_ah": spec["nominal_ah"],
        "c20_capacity_25c_ah": round(q_c20, 6),
        "c20_discharge_capacity_ah_by_ambient": cap,
        "ambients_c": ambients,
        "csv_columns": HEADER.split(","),
        "csv_semantics": __doc__.split("CSV columns")[1].strip(),
        "soc_true_definition": (
            "soc_true(t) = (Q_rem0 - integral of current_a dt from 0 to t [Ah]) / Q_c20_25; "
            "Q_rem0 = charge a C/20 discharge at 25 degC takes from the experiment's initial "
            "state (same initial stoichiometry, simulated) to the lower cut-off; Q_c20_25 = "
            "C/20 discharge capacity from full at 25 degC (c20_capacity_25c_ah). The integral "
            "is exact for the zero-order-hold current. A start at empty (rested on the lower "
            "cut-off, below a C/20 discharge's end state) has Q_rem0 = Q_c20_25 - the charge "
            "between it and full (the electrodes' stoichiometry window): negative."),
        "noise": "none: files are noise-free truth, consumers add sensor noise",
        "files": files,
        "dataset_sha256": h.hexdigest(),
    }
    if spec.get("hysteresis"):
        man["ocp_hysteresis"] = dict(
            spec["hysteresis"], model="PyBaMM one-state hysteresis (Axen 2022)",
            branches="lithiation / delithiation OCP = the parameter set's OCP -/+ half_gap_v, "
                     "tapered to 0 at the stoichiometry window's ends over taper_sto",
            decay_units="per unit of electrode stoichiometry (PyBaMM >= 25.10 definition)",
            initial_state="+1 (charge branch) for experiments starting full, -1 (discharge "
                          "branch) for the others: see each file's init_hysteresis_state")
    if extra:
        man.update(extra)
    (out / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man
