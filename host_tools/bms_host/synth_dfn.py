"""The DFN simulation behind `bms-host synth`: a built PyBaMM model driven block by block
through a current (or constant-power) profile, sampled on a fixed grid with the current
held constant over each interval. PyBaMM is imported when an Engine is built: importing
it takes seconds, which a run served from the cache need not pay."""
import math

import numpy as np

from . import UserError
from . import synth_profiles as sp
from .synth_cells import make_parameters


class Engine:
    """A built DFN model driven by a piecewise-constant current profile.

    The current is an input parameter, set for each constant segment: the solver restarts
    (with a consistent initialisation) at every jump and never integrates across one.
    current(t) = on * value(t - t_off), with charge values multiplied by gate, so blocks can
    be re-run with charge muted (gate 0) or shifted after an early end (t_off)."""

    def __init__(self, spec, ambient_c, profile, mode="current", power_w=None, init_soc=None,
                 initial_solution=None):
        import pybamm
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


def window_charge_ah(spec):
    """Charge (Ah) between PyBaMM's stoichiometric SOC 0 and 1 of the cell (its electrodes'
    stoichiometry windows, from the rested OCV at the voltage limits): set_initial_state
    places SOC s linearly in these windows, so a start at s holds (1 - s) times this less
    lithium than a full one."""
    import pybamm
    # (a start at 0, not 1: a full start moves the upper cut-off, which sets the window)
    p = make_parameters(spec, 25.0, 0.0)
    x_0, x_100, _, _ = pybamm.lithium_ion.get_min_max_stoichiometries(p)
    q_n = p.evaluate(pybamm.LithiumIonParameters().n.prim.Q_init)
    return float(q_n * (x_100 - x_0))


def c20_remaining_ah(spec, init_soc, q_c20=None):
    """Charge (Ah) a C/20 discharge at 25 degC takes from stoichiometric SOC init_soc to the
    lower cut-off. q_c20: that charge from full, when known (saves a simulation)."""
    if init_soc <= 1e-9:
        # Rested at empty the cell sits on the lower cut-off, below where a C/20 discharge
        # stops (its overpotential reaches the cut-off first): a discharge takes nothing and
        # the state is below the full-start traces' zero. Counted from full instead, where
        # the charge taken is exact (the lithium moved across the stoichiometry window), it
        # lands on their scale: Q_c20 - (1 - s) * window (negative, LFP -0.8 % of Q_c20).
        # Simulated starts at 0.1 and 0.9 agree with this to 2e-6 Ah.
        if q_c20 is None:
            q_c20 = c20_remaining_ah(spec, 1.0)
        return q_c20 - (1.0 - init_soc) * window_charge_ah(spec)
    prof = sp.pocv_dis(spec["nominal_ah"])
    prof["init_soc"] = init_soc
    eng = Engine(spec, 25.0, prof)
    sol = eng.step(None, float(sp.LONG), 3600.0, {"on": 1.0, "gate": 1.0, "t_off": 0.0})[0][-1]
    return float(sol.t[-1]) * spec["nominal_ah"] / 20.0 / 3600.0
