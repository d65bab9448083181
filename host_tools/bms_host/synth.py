"""`bms-host synth`: synthetic cell data from a PyBaMM DFN model with a lumped thermal model.

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
                   the C/20 discharge capacity from full at 25 degC.
"""

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

from . import UserError
from . import synth_profiles as sp

HELP = "generate synthetic cell data (PyBaMM DFN, lumped thermal) for fitting and validation"

CODE_VERSION = "synth-6"  # bump when the simulation or file format changes
HEADER = "time_s,current_a,voltage_v,temperature_c,ambient_c,temp_core_c,soc_true"

INSTALLATION = {
    "Total heat transfer coefficient [W.m-2.K-1]": 80.0,  # core to can
    "Casing heat capacity [J.K-1]": 5.0,
    "Environment thermal resistance [K.W-1]": 12.0,  # can to air
}
BASE_OPTIONS = {"thermal": "lumped", "surface temperature": "lumped"}
# Prada2013 lacks the values a thermal model needs; these come from Chen2020.
CHEN2020_FILL = [
    "Negative current collector thickness [m]", "Positive current collector thickness [m]",
    "Negative current collector conductivity [S.m-1]",
    "Positive current collector conductivity [S.m-1]",
    "Negative current collector density [kg.m-3]", "Positive current collector density [kg.m-3]",
    "Negative electrode density [kg.m-3]", "Positive electrode density [kg.m-3]",
    "Separator density [kg.m-3]",
    "Negative current collector specific heat capacity [J.kg-1.K-1]",
    "Positive current collector specific heat capacity [J.kg-1.K-1]",
    "Negative electrode specific heat capacity [J.kg-1.K-1]",
    "Positive electrode specific heat capacity [J.kg-1.K-1]",
    "Separator specific heat capacity [J.kg-1.K-1]",
]

CELLS = {
    "lgm50": {"parameter_set": "OKane2022", "nominal_ah": 5.0, "v_min": 2.5, "v_max": 4.2,
              "v_nom": 3.63, "fill_from": None, "extra": {},
              "description": "LG M50 21700, 5 Ah NMC811 / graphite-SiOx"},
    "lfp": {"parameter_set": "Prada2013", "nominal_ah": 2.3, "v_min": 2.0, "v_max": 3.6,
            "v_nom": 3.3, "fill_from": "Chen2020",
            "extra": {"Cell volume [m3]": 3.45e-5, "Cell cooling surface area [m2]": 0.00637},
            "description": "A123 26650, 2.3 Ah LFP / graphite"},
}
DEFAULT_AMBIENTS = (-10.0, 0.0, 25.0, 45.0)
FULL_MARGIN_V = 0.001
QUICK_VAR_PTS = {"x_n": 5, "x_s": 3, "x_p": 5, "r_n": 6, "r_p": 6}


def configure(parser):
    parser.add_argument("--cell", required=True, choices=sorted(CELLS),
                        help="cell type (PyBaMM parameter set and installation)")
    parser.add_argument("--out", required=True, help="output folder for CSVs and manifest.json")
    parser.add_argument("--ambients", default=None,
                        help="comma-separated ambient temperatures in degC "
                             "(default -10,0,25,45; --quick: 25)")
    parser.add_argument("--profiles", default=None,
                        help="comma-separated subset of profiles (pocv_dis,pocv_chg,hppc,pulses,"
                             "dst,random,cp,fastcharge,chgsteps,rate)")
    parser.add_argument("--quick", action="store_true",
                        help="self-test: one 120 s pulse profile on a coarse mesh")
    parser.add_argument("--aged", action="store_true",
                        help="aged lgm50 (SEI + plating, accelerated cycling): C/20, HPPC, DST "
                             "at 25 degC")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1-2, default 2)")
    parser.add_argument("--no-cache", action="store_true", help="ignore cached results")


# ----------------------------------------------------------------------------- helpers

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


def cell_spec(cell, aged=None, quick=False):
    """Everything about the cell that changes simulation results (hashed into cache keys)."""
    c = dict(CELLS[cell])
    spec = {"cell": cell, "parameter_set": c["parameter_set"], "options": dict(BASE_OPTIONS),
            "installation": dict(INSTALLATION), "fill_from": c["fill_from"],
            "fill": list(CHEN2020_FILL) if c["fill_from"] else [], "extra": c["extra"],
            "v_min": c["v_min"], "v_max": c["v_max"], "nominal_ah": c["nominal_ah"],
            "var_pts": QUICK_VAR_PTS if quick else None, "aged": aged}
    if aged:
        spec["options"].update(aged["options"])
    return spec


# ------------------------------------------------------------------ PyBaMM side

def make_parameters(spec, ambient_c, init_soc):
    import pybamm
    p = pybamm.ParameterValues(spec["parameter_set"])
    if spec["fill_from"]:
        src = pybamm.ParameterValues(spec["fill_from"])
        p.update({k: src[k] for k in spec["fill"]}, check_already_exists=False)
    p.update(spec["extra"], check_already_exists=False)
    p.update(spec["installation"], check_already_exists=False)
    if spec.get("aged"):
        p.update(spec["aged"]["parameters"], check_already_exists=False)
    tk = 273.15 + float(ambient_c)
    p.update({"Ambient temperature [K]": tk, "Initial temperature [K]": tk})
    p.set_initial_state(float(init_soc))
    if init_soc >= 1.0:
        # a rested full cell sits exactly on the upper cut-off, which PyBaMM refuses as an
        # initial state: the upper limit event is moved up by FULL_MARGIN_V.
        p.update({"Upper voltage cut-off [V]": spec["v_max"] + FULL_MARGIN_V})
    return p


class Engine:
    """A built DFN model driven by a piecewise-constant current profile.

    The current is an input parameter, set for each constant segment: the solver restarts
    (with a consistent initialisation) at every jump and never integrates across one.
    current(t) = on * value(t - t_off), with charge values multiplied by gate, so blocks can
    be re-run with charge muted (gate 0) or shifted after an early end (t_off)."""

    def __init__(self, spec, ambient_c, profile, mode="current", power_w=None, init_soc=None,
                 initial_solution=None):
        import numpy as np
        import pybamm
        self.np = np
        self.pybamm = pybamm
        options = dict(spec["options"])
        if mode == "power":
            options["operating mode"] = "power"
        model = pybamm.lithium_ion.DFN(options=options)
        soc0 = profile["init_soc"] if init_soc is None else init_soc
        p = make_parameters(spec, ambient_c, soc0)
        if mode == "power":
            p["Power function [W]"] = power_w
        else:
            self._segments(profile)
            p["Current function [A]"] = pybamm.InputParameter("Current [A]")
        if initial_solution is not None:
            model.set_initial_conditions_from(initial_solution)
        kw = {}
        if spec.get("var_pts"):
            kw["var_pts"] = spec["var_pts"]
        sim = pybamm.Simulation(model, parameter_values=p, **kw)
        sim.build()
        self.model = sim.built_model
        self.solver = pybamm.IDAKLUSolver()

    def _segments(self, profile):
        np = self.np
        ends, vals, t = [], [], 0.0
        for b in profile["blocks"]:
            for d, v in b["segs"]:
                t += d
                ends.append(t)
                vals.append(v)
        self.seg_ends = np.array(ends, dtype=float)
        self.seg_vals = np.array(vals, dtype=float)

    def zoh_current(self, t, inputs):
        """Current applied over (t[k-1], t[k]] for k >= 1 (element 0 is left 0)."""
        np = self.np
        t = np.asarray(t, dtype=float)
        out = np.zeros(len(t))
        if len(t) < 2:
            return out
        mid = 0.5 * (t[1:] + t[:-1]) - inputs["t_off"]
        idx = np.minimum(np.searchsorted(self.seg_ends, mid), len(self.seg_vals) - 1)
        v = self.seg_vals[idx]
        v = np.where(v < 0, v * inputs["gate"], v) * inputs["on"]
        out[1:] = v + 0.0  # no negative zeros
        return out

    def step(self, old, dt_total, grid_dt, inputs):
        """Advance by dt_total from `old` (None = initial state), one solver step per constant
        segment (so the solver restarts, with a consistent initialisation, at every jump and
        never integrates across one), sampling on the absolute grid k*grid_dt. Returns the
        list of pieces (each with its start point); stops at the first voltage event."""
        np = self.np
        t0 = 0.0 if old is None else float(old.t[-1])
        b = self.seg_ends + inputs["t_off"] - t0
        # long segments are cut into chunks (restarts cost little when nothing jumps)
        chunk = max(60.0, 60.0 * grid_dt)
        b = np.concatenate([b, np.arange(chunk, dt_total, chunk)])
        b = np.unique(b[(b > 1e-6) & (b < dt_total - 1e-6)])
        cuts = np.concatenate([[0.0], b, [dt_total]])
        pieces = []
        for j in range(1, len(cuts)):
            ta = 0.0 if old is None else float(old.t[-1])
            h = (t0 + cuts[j]) - ta
            k0 = math.floor(ta / grid_dt + 1e-9) + 1
            grid = [k * grid_dt - ta for k in range(k0, int(math.ceil((ta + h) / grid_dt)) + 1)]
            t_rel = np.array([0.0] + [g for g in grid if 1e-7 < g < h - 1e-7] + [h])
            cur = float(self.zoh_current([ta, ta + h], inputs)[1])
            try:
                sol = self.solver.step(old, self.model, h, t_eval=t_rel[[0, -1]],
                                       t_interp=t_rel, inputs={"Current [A]": cur},
                                       save=False)
            except self.pybamm.SolverError as e:
                # the new segment's current puts the voltage past a limit at once
                msg = str(e)
                if "non-positive at initial conditions" not in msg:
                    if pieces or old is not None:
                        # the solver gave up inside this chunk: end here, keep what we have
                        return pieces, "solver failure (%s)" % msg.split(":")[-1].strip()
                    raise
                return pieces, ("max" if "Maximum voltage" in msg else
                                "min" if "Minimum voltage" in msg else msg)
            pieces.append(sol)
            old = sol
            if sol.termination != "final time":
                break
        return pieces, _termination(pieces[-1])


def _termination(sol):
    term = sol.termination or ""
    if "Minimum voltage" in term:
        return "min"
    if "Maximum voltage" in term:
        return "max"
    if term == "final time":
        return "final"
    return term


def _pieces_to_arrays(pieces, eng):
    import numpy as np
    cols = {"t": [], "I": [], "V": [], "Ts": [], "Tc": []}
    for n, (sol, inputs) in enumerate(pieces):
        t = np.asarray(sol.t)
        sl = slice(0, None) if n == 0 else slice(1, None)
        cols["t"].append(t[sl])
        cols["I"].append(eng.zoh_current(t, inputs)[sl])
        cols["V"].append(np.asarray(sol["Voltage [V]"].entries)[sl])
        cols["Ts"].append(np.asarray(sol["Surface temperature [K]"].entries)[sl] - 273.15)
        cols["Tc"].append(
            np.asarray(sol["Volume-averaged cell temperature [K]"].entries)[sl] - 273.15)
        if n == 0:
            cols["V"][0][0] = float(sol["Battery open-circuit voltage [V]"].entries[0])
    return {k: np.concatenate(v) for k, v in cols.items()}


def run_current_profile(spec, ambient_c, profile, engine=None):
    """Simulate a current profile block by block; returns arrays, end reason, notes."""
    eng = engine or Engine(spec, ambient_c, profile)
    dt = profile["dt"]
    pieces, notes = [], []
    old = None
    t_prof = 0.0  # profile time at the start of the next block
    reason = "profile complete"
    blocks = profile["blocks"]
    b = -1
    while b + 1 < len(blocks):
        b += 1
        block = blocks[b]
        dur = float(sum(d for d, _ in block["segs"]))
        t_now = 0.0 if old is None else float(old.t[-1])
        inputs = {"on": 1.0, "gate": 1.0, "t_off": t_now - t_prof}
        got, term = eng.step(old, dur, dt, inputs)
        if term == "max" and block["on_max"] == "mute":
            notes.append("block %d: charge muted (upper limit)" % b)
            inputs["gate"] = 0.0
            got, term = eng.step(old, dur, dt, inputs)
        pieces += [(g, dict(inputs)) for g in got]
        sol = got[-1] if got else old
        if sol is None:
            raise UserError("the first step of profile %s already passes a voltage limit"
                            % profile["name"])
        t_prof += dur
        if term == "final":
            old = sol
            continue
        if term not in ("min", "max"):
            reason = "solver stopped: %s" % term
            break
        action = block["on_min"] if term == "min" else block["on_max"]
        what = "lower cut-off" if term == "min" else "upper cut-off"
        if action == "stop" or b == len(blocks) - 1:
            reason = "%s reached at %.1f s" % (what, float(sol.t[-1]))
            break
        # "next"/"last": rest to the next grid instant, then continue with the next block
        # (or, for "last", the last one)
        notes.append("block %d: %s reached at %.1f s" % (b, what, float(sol.t[-1])))
        sol.termination = "final time"
        t_e = float(sol.t[-1])
        t_next = math.ceil(t_e / dt - 1e-9) * dt
        if t_next - t_e > 1e-6:
            rest = {"on": 0.0, "gate": 0.0, "t_off": 0.0}
            got, _ = eng.step(sol, t_next - t_e, dt, rest)
            pieces += [(g, rest) for g in got]
            sol = got[-1]
        old = sol
        if action == "last" and b < len(blocks) - 2:
            # jump to the last block: skip the blocks in between (profile time too)
            notes[-1] += ", blocks %d-%d skipped" % (b + 1, len(blocks) - 2)
            t_prof += sum(float(sum(d for d, _ in bk["segs"])) for bk in blocks[b + 1:-1])
            b = len(blocks) - 2
    arr = _pieces_to_arrays(pieces, eng)
    return arr, reason, notes


def run_power_profile(spec, ambient_c, profile):
    """Constant power, realised as a 1 s zero-order-hold current: pass 1 runs PyBaMM's
    power mode, pass 2 replays the per-interval mean current as a staircase."""
    import numpy as np
    p_w = profile["blocks"][0]["segs"][0][1]
    dur = profile["blocks"][0]["segs"][0][0]
    eng1 = Engine(spec, ambient_c, profile, mode="power", power_w=p_w)
    t_rel = np.arange(0.0, dur + 1.0, profile["dt"])
    sol1 = eng1.solver.step(None, eng1.model, float(dur), t_eval=t_rel, t_interp=t_rel,
                            save=False)
    t1 = np.asarray(sol1.t)
    i1 = np.asarray(sol1["Current [A]"].entries)
    n_full = int(math.floor(t1[-1] / profile["dt"] + 1e-9))
    # mean current over each 1 s interval (trapezoid; the power-mode current is smooth)
    stairs = []
    for k in range(1, n_full + 1):
        a, b = i1[k - 1], i1[k]
        stairs.append((int(profile["dt"]), round(0.5 * (a + b), profile["current_decimals"])))
    # after the last full interval, hold the last value until the cut-off
    stairs.append((int(profile["dt"]) * 600, stairs[-1][1]))
    prof2 = dict(profile)
    prof2["mode"] = "current"
    prof2["blocks"] = [{"segs": stairs, "on_max": "stop", "on_min": "stop"}]
    arr, reason, notes = run_current_profile(spec, ambient_c, prof2)
    v = arr["V"][1:]
    pw = arr["I"][1:] * v
    notes.append("power over the run: mean %.3f W, min %.3f W, max %.3f W (target %.3f W)"
                 % (float(pw.mean()), float(pw.min()), float(pw.max()), p_w))
    return arr, reason, notes


def c20_remaining_ah(spec, init_soc):
    """Charge (Ah) a C/20 discharge at 25 degC takes from stoichiometric SOC init_soc to the
    lower cut-off."""
    prof = sp.pocv_dis(spec["nominal_ah"])
    prof["init_soc"] = init_soc
    if init_soc <= 1e-9:
        # at empty the rested voltage sits on the lower cut-off: nothing left
        return 0.0
    eng = Engine(spec, 25.0, prof)
    sol = eng.step(None, float(sp.LONG), 3600.0, {"on": 1.0, "gate": 1.0, "t_off": 0.0})[0][-1]
    return float(sol.t[-1]) * spec["nominal_ah"] / 20.0 / 3600.0


def _cached_json(key, fn):
    path = cache_dir() / ("%s.json" % key)
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


def q_rem(spec, init_soc, use_cache=True):
    key = "qrem-" + _hash([CODE_VERSION, _pybamm_version(), spec, round(init_soc, 6)])[:24]
    path = cache_dir() / ("%s.json" % key)
    if not use_cache and path.exists():
        path.unlink()
    return _cached_json(key, lambda: {"q_ah": c20_remaining_ah(spec, init_soc)})["q_ah"]


def _compact(x, fmt):
    s = fmt % x
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def format_csv(arr, ambient_c, q_rem0, q_c20):
    """CSV text; soc_true from the zero-order-hold current as written (4 decimals, exact)."""
    import numpy as np
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


def experiment_key(spec, ambient_c, profile):
    return _hash([CODE_VERSION, _pybamm_version(), spec, float(ambient_c), profile])


def run_experiment(task):
    """Worker: simulate one (profile, ambient); returns (arrays, meta). Cached on disk."""
    spec, ambient_c, profile, q_c20, q_rem0, use_cache = task
    import numpy as np
    key = experiment_key(spec, ambient_c, profile)
    cdir = cache_dir()
    cpath, mpath = cdir / (key + ".npz"), cdir / (key + ".json")
    if use_cache and cpath.exists() and mpath.exists():
        with np.load(cpath) as z:
            arr = {k: z[k] for k in z.files}
        return arr, json.loads(mpath.read_text())
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
    cdir.mkdir(parents=True, exist_ok=True)
    tmp = cdir / ("%s.tmp%d.npz" % (key, os.getpid()))
    np.savez(tmp, **arr)
    os.replace(tmp, cpath)
    tmp = mpath.with_suffix(".tmp%d" % os.getpid())
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, mpath)
    return arr, meta


# ------------------------------------------------------------------------- aged cell

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
    import numpy as np
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
    import numpy

    q_aged = res["q_c20_aged_ah"]
    fresh_dir = out.parent / "lgm50"
    fresh = {}
    if (fresh_dir / "manifest.json").exists():
        fresh = json.loads((fresh_dir / "manifest.json").read_text())
    files, r_aged = [], []
    for run_ in res["runs"]:
        prof = run_["profile"]
        arr = {k: numpy.asarray(v) for k, v in run_["arr"].items()}
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
        d = numpy.genfromtxt(fh, delimiter=",", names=True)
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
                float(numpy.mean(numpy.array(r_aged[:n]) / numpy.array(r_fresh[:n]))), 4)
    write_manifest(out, spec, [25.0], files, q_aged, extra)
    print("synth: wrote %d aged files to %s" % (len(files), out))
    return 0


# --------------------------------------------------------------------------- command

def _parse_ambients(text, quick):
    if text is None:
        return [25.0] if quick else list(DEFAULT_AMBIENTS)
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(
            "--ambients must be comma-separated numbers in degC, e.g. -10,0,25,45") from None
    if not vals or any(v < -30 or v > 60 for v in vals):
        raise UserError("--ambients must lie between -30 and 60 degC")
    return vals


def plan(args):
    cell = args.cell
    quick = bool(args.quick)
    spec = cell_spec(cell, quick=quick)
    c_ah, v_nom = CELLS[cell]["nominal_ah"], CELLS[cell]["v_nom"]
    if quick:
        profiles = [sp.quick_pulses(c_ah)]
    else:
        profiles = sp.standard_profiles(c_ah, v_nom)
    if args.profiles:
        want = [x.strip() for x in args.profiles.split(",") if x.strip()]
        names = [p["name"] for p in profiles]
        bad = [w for w in want if w not in names]
        if bad:
            raise UserError("unknown profile %s: choose from %s" % (bad[0], ",".join(names)))
        profiles = [p for p in profiles if p["name"] in want]
    ambients = _parse_ambients(args.ambients, quick)
    return spec, profiles, ambients


def run(args):
    if args.jobs < 1 or args.jobs > 2:
        raise UserError("--jobs must be 1 or 2 (the machine is shared)")
    if args.aged:
        if args.cell != "lgm50":
            raise UserError("--aged exists for lgm50 only")
        return run_aged(args)
    spec, profiles, ambients = plan(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError("cannot create output folder %s (%s)" % (out, e.strerror)) from None
    return generate(spec, profiles, ambients, out, jobs=args.jobs,
                    use_cache=not args.no_cache)


def _file_name(profile, ambient):
    return "%s_%sC.csv" % (profile["name"], amb_tag(ambient))


def generate(spec, profiles, ambients, out, jobs=2, use_cache=True, extra_manifest=None):
    from tqdm import tqdm
    tasks = [(p, a) for a in ambients for p in profiles]
    mpath = out / "manifest.json"
    old = {}
    if mpath.exists():
        try:
            old = {f["file"]: f for f in json.loads(mpath.read_text()).get("files", [])}
        except (ValueError, KeyError, TypeError):
            old = {}
    # Fast path: every output file is present with the same inputs and contents.
    keys = {_file_name(p, a): experiment_key(spec, a, p) for p, a in tasks}
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
            qr[s] = q_c20 if s == 1.0 else q_rem(spec, s, use_cache)
    work = [(spec, a, p, q_c20, qr[p["init_soc"]], use_cache) for p, a in tasks]
    # the longest first, so two workers finish together
    order = {"dst": 0, "hppc": 1, "pulses": 1, "random": 2, "cp": 3, "chgsteps": 4,
             "fastcharge": 5, "rate": 5, "pocv_dis": 6, "pocv_chg": 7}
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
                      "notes": meta["notes"], "q_rem0_ah": meta["q_rem0_ah"],
                      "discharged_ah": round(meta["discharged_ah"], 6),
                      "v_min": round(meta["v_min"], 5), "v_max": round(meta["v_max"], 5),
                      "t_surface_max_c": round(meta["t_surface_max_c"], 3),
                      "t_core_max_c": round(meta["t_core_max_c"], 3),
                      "core_minus_surface_max_k": round(meta["core_minus_surface_max_k"], 3),
                      "wall_s": meta["wall_s"], "input_key": meta["key"],
                      "sha256": sha256_file(path)})
    write_manifest(out, spec, ambients, files, q_c20, extra_manifest)
    print("synth: wrote %d files to %s" % (len(files), out))
    return 0


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
            "is exact for the zero-order-hold current."),
        "noise": "none: files are noise-free truth, consumers add sensor noise",
        "files": files,
        "dataset_sha256": h.hexdigest(),
    }
    if extra:
        man.update(extra)
    (out / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man
