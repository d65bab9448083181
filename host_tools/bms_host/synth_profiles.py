"""Load profiles for `bms-host synth`: pure data, no PyBaMM.

A profile is a dict:
    name, role ("fit" | "validation"), init_soc (PyBaMM stoichiometric SOC to start from),
    dt (sample period, s), mode ("current" | "power"), blocks.
A block is {"segs": [(duration_s, value), ...], "on_max": ..., "on_min": ...}: value is
the current in A (positive = discharge), or the power in W for mode "power".
Segment durations are whole multiples of dt, so every sample interval sees one constant
current (zero-order hold). What happens when a voltage limit is reached inside a block:
    "stop"  the experiment ends there (the last row is at the event time);
    "next"  the block ends early, the cell rests to the next sample instant, the next
            block starts there (e.g. CC charge to the upper limit, then rest);
    "mute"  the block is re-run from its start with its charge segments set to rest
            (a regen/charge limiter that refuses charge near full), then continues;
    "last"  as "next", but the profile jumps to its last block (e.g. a stepped charge
            that ends at the upper limit and finishes with a long rest).
"""

import random

# USABC Dynamic Stress Test: 20 steps, 360 s, power in % of the peak discharge power,
# positive = discharge (the USABC table has discharge negative).
DST_STEPS = [
    (16, 0.0), (28, 12.5), (12, 25.0), (8, -12.5),
    (16, 0.0), (24, 12.5), (12, 25.0), (8, -12.5),
    (16, 0.0), (24, 12.5), (12, 25.0), (8, -12.5),
    (16, 0.0), (36, 12.5), (8, 100.0), (24, 62.5), (8, -25.0), (32, 25.0), (8, -50.0),
    (44, 0.0),
]
assert sum(d for d, _ in DST_STEPS) == 360

LONG = 200 * 3600  # "until the limit": longer than any cell can deliver at C/20


def pocv_dis(c_ah):
    return {"name": "pocv_dis", "role": "fit", "init_soc": 1.0, "dt": 60.0, "mode": "current",
            "blocks": [{"segs": [(LONG, c_ah / 20.0)], "on_max": "stop", "on_min": "stop"}],
            "desc": "C/20 CC discharge from full to the lower cut-off, 60 s samples"}


def pocv_chg(c_ah):
    return {"name": "pocv_chg", "role": "fit", "init_soc": 0.0, "dt": 60.0, "mode": "current",
            "blocks": [{"segs": [(LONG, -c_ah / 20.0)], "on_max": "stop", "on_min": "stop"}],
            "desc": "C/20 CC charge from empty to the upper cut-off, 60 s samples"}


def hppc(c_ah, rest_s=1800, levels=10):
    blocks = []
    for _ in range(levels):
        segs = [(10, 1.0 * c_ah), (40, 0.0), (10, -0.75 * c_ah), (40, 0.0),
                (360, 1.0 * c_ah), (rest_s, 0.0)]
        blocks.append({"segs": segs, "on_max": "mute", "on_min": "stop"})
    return {"name": "hppc", "role": "fit", "init_soc": 1.0, "dt": 1.0, "mode": "current",
            "blocks": blocks,
            "desc": ("HPPC from full: per 10 %% step 10 s 1C discharge, 40 s rest, 10 s 0.75C "
                     "charge, 40 s rest, 360 s 1C discharge (10 %%), %d s rest; a charge pulse "
                     "that would pass the upper limit is replaced by rest" % rest_s)}


def pulses(c_ah, levels=10, rest_s=1800, pulse_s=30, gap_s=60):
    """Multi-level pulse test (fit role). The HPPC's one 1C pulse of 10 s shows neither how
    the pulse resistance falls with current (the kinetic term) nor the fast pair's shape
    beyond 10 s: per 10 % step, 30 s pulses at 0.5, 1 and 2C discharge and 0.5 and 1C
    charge (the LG M50's charge trip), a minute's rest after each, then a 1C discharge to
    the next step and a long rest."""
    blocks = []
    for _ in range(levels):
        segs = []
        for c_rate in (0.5, 1.0, 2.0, -0.5, -1.0):
            segs += [(pulse_s, round(c_rate * c_ah, 4)), (gap_s, 0.0)]
        segs += [(300, round(c_ah, 4)), (rest_s, 0.0)]
        blocks.append({"segs": segs, "on_max": "mute", "on_min": "next"})
    return {"name": "pulses", "role": "fit", "init_soc": 1.0, "dt": 1.0, "mode": "current",
            "blocks": blocks,
            "desc": ("multi-level pulses from full: per step %d s at 0.5, 1 and 2C discharge "
                     "and 0.5 and 1C charge, %d s rest after each, 300 s 1C discharge, %d s "
                     "rest; a charge pulse that would pass the upper limit is replaced by "
                     "rest, a step that reaches the lower limit ends there"
                     % (pulse_s, gap_s, rest_s))}


def dst(c_ah, peak_c=2.0, cycles=60):
    """Current-equivalent DST: the power steps scaled so 100 % = peak_c * C in amperes
    (power / nominal voltage); regen (charge) steps are muted near full."""
    segs = [(d, pct / 100.0 * peak_c * c_ah) for d, pct in DST_STEPS]
    blocks = [{"segs": list(segs), "on_max": "mute", "on_min": "stop"} for _ in range(cycles)]
    return {"name": "dst", "role": "validation", "init_soc": 1.0, "dt": 1.0, "mode": "current",
            "blocks": blocks,
            "desc": ("USABC DST (360 s, 20 steps) as current steps, 100 %% = %.2gC discharge, "
                     "repeated from full to the lower cut-off; a cycle whose regen steps would "
                     "pass the upper limit is re-run with regen set to rest" % peak_c)}


def random_pulses(c_ah, seed=20261125, total_s=5400, block_s=600, init_soc=0.9):
    rng = random.Random(seed)
    blocks, segs, t_block, t = [], [], 0, 0
    while t < total_s:
        d = rng.randint(1, 60)
        u = rng.random()
        if u < 0.6:
            val = round(rng.uniform(0.05, 2.0) * c_ah, 4)
        elif u < 0.85:
            val = -round(rng.uniform(0.05, 1.0) * c_ah, 4)
        else:
            val = 0.0
        segs.append((d, val))
        t += d
        t_block += d
        if t_block >= block_s:
            blocks.append({"segs": segs, "on_max": "mute", "on_min": "stop"})
            segs, t_block = [], 0
    if segs:
        blocks.append({"segs": segs, "on_max": "mute", "on_min": "stop"})
    return {"name": "random", "role": "validation", "init_soc": init_soc, "dt": 1.0,
            "mode": "current", "blocks": blocks, "seed": seed,
            "desc": ("seeded random pulses (seed %d): 1-60 s, 60 %% discharge up to 2C, 25 %% "
                     "charge up to 1C, 15 %% rest, from SOC %.2f, %d s or the lower cut-off"
                     % (seed, init_soc, total_s))}


def const_power(c_ah, v_nom):
    p = round(c_ah * v_nom, 3)
    return {"name": "cp", "role": "validation", "init_soc": 1.0, "dt": 1.0, "mode": "power",
            "current_decimals": 4,
            "blocks": [{"segs": [(6 * 3600, p)], "on_max": "stop", "on_min": "stop"}],
            "desc": ("constant power %.3f W (1C x nominal voltage) from full to the lower "
                     "cut-off, realised as a 1 s zero-order-hold current (I_k = mean current "
                     "of a true constant-power run over the interval)" % p)}


def fast_charge(c_ah, c_rate=2.0, init_soc=0.1, rest_s=1800):
    return {"name": "fastcharge", "role": "validation", "init_soc": init_soc, "dt": 1.0,
            "mode": "current",
            "blocks": [{"segs": [(10, 0.0), (3 * 3600, -c_rate * c_ah)], "on_max": "next",
                        "on_min": "stop"},
                       {"segs": [(rest_s, 0.0)], "on_max": "stop", "on_min": "stop"}],
            "desc": ("10 s rest, %.3gC CC charge from SOC %.2f to the upper cut-off, then "
                     "%d s rest" % (c_rate, init_soc, rest_s))}


def charge_steps(c_ah, steps=((0.5, 360), (1.0, 360), (1.5, 240)), rest_s=300,
                 final_rest_s=1800, cycles=8, init_soc=0.0):
    """Stepped charge from empty (fit role: pins the charge-side resistances under
    sustained charge). Kept unlike the held-out fast charge (2C CC from SOC 0.1): no 2C,
    short blocks, rests between them. The charge block that reaches the upper limit ends
    there and the profile jumps to the final rest."""
    blocks = []
    for _ in range(cycles):
        for c_rate, dur in steps:
            blocks.append({"segs": [(dur, -round(c_rate * c_ah, 4))], "on_max": "last",
                           "on_min": "stop"})
            blocks.append({"segs": [(rest_s, 0.0)], "on_max": "stop", "on_min": "stop"})
    blocks.append({"segs": [(final_rest_s, 0.0)], "on_max": "stop", "on_min": "stop"})
    return {"name": "chgsteps", "role": "fit", "init_soc": init_soc, "dt": 1.0,
            "mode": "current", "blocks": blocks,
            "desc": ("stepped charge from empty (the C/20 discharge state): %s, each followed "
                     "by %d s rest, repeated until the upper cut-off (that block ends there), "
                     "then %d s rest"
                     % (", ".join("%gC for %d s" % (c, d) for c, d in steps), rest_s,
                        final_rest_s))}


def rate_test(c_ah, c_rate=1.0, rest_s=3600, dt=5.0):
    """Rate test (fit role: sustained current both ways, and the slow relaxation after it):
    1C CC discharge from full to the lower cut-off, 1 h rest, 1C CC charge to the upper
    cut-off (no CV), 1 h rest, 5 s samples. Unlike the held-out profiles: constant current,
    not constant power; 1C, not the 2C fast charge."""
    i = round(c_rate * c_ah, 4)
    return {"name": "rate", "role": "fit", "init_soc": 1.0, "dt": dt, "mode": "current",
            "blocks": [{"segs": [(3 * 3600, i)], "on_max": "stop", "on_min": "next"},
                       {"segs": [(rest_s, 0.0)], "on_max": "stop", "on_min": "stop"},
                       {"segs": [(3 * 3600, -i)], "on_max": "next", "on_min": "stop"},
                       {"segs": [(rest_s, 0.0)], "on_max": "stop", "on_min": "stop"}],
            "desc": ("rate test: %gC CC discharge from full to the lower cut-off, %d s rest, "
                     "%gC CC charge to the upper cut-off, %d s rest, %g s samples"
                     % (c_rate, rest_s, c_rate, rest_s, dt))}


def minor_loops(c_ah, levels=(0.3, 0.6), step=0.005, steps=4, c_rate=0.5, rest_s=1200,
                dt=12.0):
    """Hysteresis minor loops (fit role, for cells with voltage hysteresis): from full, a
    C/2 discharge to each level's depth of discharge, then steps of 0.5 % SOC at C/2,
    first `steps` charging then as many discharging, each followed by a 20 min rest. The
    rested voltages walk from the discharge branch towards the charge branch and back:
    how much charge a branch switch takes (the hysteresis rate) is read off them."""
    i = round(c_rate * c_ah, 4)
    pulse = int(round(step * 3600.0 / c_rate / dt) * dt)
    blocks = []
    done = 0.0
    for depth in levels:
        blocks.append({"segs": [(int((depth - done) * 3600.0 / c_rate / dt) * int(dt), i),
                                (rest_s, 0.0)], "on_max": "stop", "on_min": "stop"})
        done = depth
        for sign in (-1, 1):
            for _ in range(steps):
                blocks.append({"segs": [(pulse, sign * i), (rest_s, 0.0)], "on_max": "stop",
                               "on_min": "stop"})
    return {"name": "minorloops", "role": "fit", "init_soc": 1.0, "dt": dt, "mode": "current",
            "blocks": blocks,
            "desc": ("hysteresis minor loops from full: at %s discharged (C/%g), %d charge "
                     "then %d discharge steps of %g %% SOC, each followed by %d s rest, "
                     "%g s samples" % ("/".join("%g %%" % (100 * d) for d in levels),
                                       1 / c_rate, steps, steps, 100 * step, rest_s, dt))}


def quick_pulses(c_ah):
    segs = [(10, 0.0), (20, c_ah), (20, 0.0), (10, -0.5 * c_ah), (20, 0.0), (30, 2 * c_ah),
            (10, 0.0)]
    return {"name": "pulse", "role": "validation", "init_soc": 0.8, "dt": 1.0, "mode": "current",
            "blocks": [{"segs": segs, "on_max": "mute", "on_min": "stop"}],
            "desc": "120 s pulse profile (quick self-test)"}


def standard_profiles(c_ah, v_nom, hysteresis=False):
    """The fit's folder; a cell with voltage hysteresis gets the minor loops as well."""
    return [pocv_dis(c_ah), pocv_chg(c_ah), hppc(c_ah), pulses(c_ah), dst(c_ah),
            random_pulses(c_ah), const_power(c_ah, v_nom), fast_charge(c_ah),
            charge_steps(c_ah), rate_test(c_ah)] + ([minor_loops(c_ah)] if hysteresis else [])


# ------------------------------------------------------------------ drive cycles

# Seeded drive cycles (validation role), each from full to the lower cut-off at 1 s: a
# bench set (bms-host bench accuracy), not in standard_profiles, kept in data/CELL_drive
# so the fit's folder and its validation report stay as they are.
# A "leg" is a stop, a pull-away, a cruise and a braking (regen = charge); a kind sets
# each phase's duration (s) and current (C) ranges. Legs are grouped into blocks of about
# block_s, so a block whose regen would pass the upper limit near full is re-run with its
# regen set to rest (a regen limiter), as in DST.
DRIVE_KINDS = {
    # city traffic: a stop every minute or so, moderate pull-aways, light regen
    "urban": {"seed": 20261201, "stop": (10, 45), "accel": (4, 10, 0.6, 1.5),
              "cruise": (10, 40, 0.15, 0.5), "regen": (3, 8, 0.2, 0.6), "wiggle": None,
              "desc": "city traffic: stops of 10-45 s, pull-aways of 4-10 s at 0.6-1.5C, "
                      "10-40 s at 0.15-0.5C, braking 3-8 s with 0.2-0.6C regen"},
    # hard driving: short stops, full-throttle pull-aways, hard braking
    "aggressive": {"seed": 20261202, "stop": (3, 20), "accel": (3, 8, 1.5, 3.0),
                   "cruise": (8, 30, 0.4, 1.2), "regen": (2, 6, 0.5, 1.5), "wiggle": None,
                   "desc": "hard driving: stops of 3-20 s, pull-aways of 3-8 s at 1.5-3C, "
                           "8-30 s at 0.4-1.2C, hard braking 2-6 s with 0.5-1.5C regen"},
    # motorway: an on-ramp, 10-25 min of steady cruise with small changes and the odd
    # overtake, a slow-down, a rest stop
    "highway": {"seed": 20261203, "stop": (60, 300), "accel": (15, 30, 1.0, 1.6),
                "cruise": (600, 1500, 0.35, 0.6), "regen": (5, 15, 0.2, 0.5),
                "wiggle": (20, 90, 0.08, 0.12, 1.2, 1.8),
                "desc": "motorway: rest stops of 1-5 min, on-ramps of 15-30 s at 1-1.6C, "
                        "10-25 min cruise at 0.35-0.6C changing by up to 0.08C every "
                        "20-90 s with a 10 s overtake at 1.2-1.8C one time in eight, "
                        "slow-downs of 5-15 s with 0.2-0.5C regen"},
}
# the same drives started mid-plateau (SOC 0.6): on an LFP cell the filter, started 20
# points off, then has no steep OCV to converge on until the plateau ends
DRIVE_MID = {"urbanmid": "urban", "aggressivemid": "aggressive"}
MID_SOC = 0.6
DRIVE_NAMES = tuple(DRIVE_KINDS) + tuple(DRIVE_MID)
# 0-40 degC, and 5 degC: a cold drive that is not the fit's 0 degC
DRIVE_AMBIENTS = (0.0, 5.0, 25.0, 40.0)


def drive_cycle(c_ah, kind, total_s=10 * 3600, block_s=600):
    if kind in DRIVE_MID:
        prof = drive_cycle(c_ah, DRIVE_MID[kind], total_s, block_s)
        prof.update(name=kind, init_soc=MID_SOC,
                    desc=prof["desc"].replace("from full", "from SOC %.2f" % MID_SOC))
        return prof
    k = DRIVE_KINDS[kind]
    rng = random.Random(k["seed"])

    def amp(c_lo, c_hi):
        return round(rng.uniform(c_lo, c_hi) * c_ah, 4)

    blocks, segs, t_block, t = [], [], 0, 0

    def add(d, val):
        nonlocal t, t_block
        segs.append((d, val))
        t += d
        t_block += d

    while t < total_s:
        add(rng.randint(*k["stop"]), 0.0)
        d_lo, d_hi, c_lo, c_hi = k["accel"]
        add(rng.randint(d_lo, d_hi), amp(c_lo, c_hi))
        d_lo, d_hi, c_lo, c_hi = k["cruise"]
        dur, level = rng.randint(d_lo, d_hi), rng.uniform(c_lo, c_hi)
        w = k["wiggle"]
        if w is None:
            add(dur, round(level * c_ah, 4))
        else:
            left = dur
            while left > 0:
                if rng.random() < 0.125:
                    add(10, amp(w[4], w[5]))
                    left -= 10
                    continue
                d = min(left, rng.randint(w[0], w[1]))
                level = min(c_hi, max(c_lo, level + rng.uniform(-w[2], w[2])))
                add(d, round(level * c_ah, 4))
                left -= d
        d_lo, d_hi, c_lo, c_hi = k["regen"]
        add(rng.randint(d_lo, d_hi), -amp(c_lo, c_hi))
        if t_block >= block_s:
            blocks.append({"segs": segs, "on_max": "mute", "on_min": "stop"})
            segs, t_block = [], 0
    if segs:
        blocks.append({"segs": segs, "on_max": "mute", "on_min": "stop"})
    return {"name": kind, "role": "validation", "init_soc": 1.0, "dt": 1.0, "mode": "current",
            "blocks": blocks, "seed": k["seed"],
            "desc": ("seeded drive cycle (seed %d), %s; legs grouped in blocks of ~%d s, a "
                     "block whose regen would pass the upper limit re-run with regen set to "
                     "rest; from full to the lower cut-off" % (k["seed"], k["desc"], block_s))}


def drive_profiles(c_ah):
    return [drive_cycle(c_ah, kind) for kind in DRIVE_NAMES]


# ------------------------------------------------------------------ a maker's use, days long

DAY_S = 86400


def maker_use(c_ah, q_true_ah, days=4, seed=20261203, full_every=2, init_soc=0.8,
              low_soc=0.3, high_soc=0.8, dt=10.0, periods=(1, 10, 30)):
    """Several days of a maker's pack, as a list of PyBaMM experiment steps (text), to be
    run by an Experiment with the given sample period. Current in A (positive =
    discharge), amounts of charge planned against the cell's own capacity q_true_ah so
    that the SOC walks the same window at every age:
        night rest to 07:00; trip 1 (drive-like: 60-300 s blocks at 0.1-1.5C, short stops,
        a few 0.3C charge blocks) down to about the middle of the window; a 3 h rest
        (parked); trip 2 down to low_soc; a rest to 18:00; a 0.5C CC charge back to
        high_soc, or, every full_every days, a 0.5C CC charge to the upper limit with a
        CV hold down to C/20 (the full charge); rest to midnight.
    Durations are whole multiples of dt; a CC step that reaches a voltage limit ends
    there (the "or until" clause), so no step passes the limits. Sample periods (s):
    periods[0] on the trips (the load steps a device's RLS sees), periods[1] while
    charging, periods[2] in the long rests: a day is ~6000 rows, not 86400."""
    p_trip, p_chg, p_rest = ("(%d second period)" % x for x in periods)
    rng = random.Random(seed)
    steps = []
    soc = init_soc
    t = 0.0

    def q(x):  # whole sample periods
        return max(dt, round(x / dt) * dt)

    def rest_until(t_abs):
        nonlocal t
        d = q(t_abs - t)
        steps.append("Rest for %d seconds %s" % (d, p_rest if d > 600 else p_trip))
        t += d

    def cc(i_a, dur):
        nonlocal t, soc
        d = q(dur)
        per = p_trip if d <= 600 else p_chg
        if i_a > 0:
            steps.append("Discharge at %.4f A for %d seconds or until 2.5 V %s" % (i_a, d, per))
        else:
            steps.append("Charge at %.4f A for %d seconds or until 4.2 V %s" % (-i_a, d, per))
        soc -= i_a * d / 3600.0 / q_true_ah
        t += d

    def trip(to_soc):
        while soc > to_soc + 0.01:
            u = rng.random()
            if u < 0.15:
                rest_until(t + rng.uniform(30, 180))
                continue
            if u < 0.25:
                cc(-round(0.3 * c_ah, 4), rng.uniform(20, 60))
                continue
            i_a = round(rng.uniform(0.1, 1.5) * c_ah, 4)
            dur = rng.uniform(60, 300)
            left = (soc - to_soc) * q_true_ah * 3600.0 / i_a
            cc(i_a, min(dur, max(dt, left)))

    for day in range(days):
        base = day * DAY_S
        rest_until(base + 7 * 3600)
        mid = 0.5 * (soc + low_soc)
        trip(mid)
        rest_until(t + 3 * 3600)
        trip(low_soc)
        rest_until(base + 18 * 3600)
        i_chg = 0.5 * c_ah
        if (day + 1) % full_every == 0:
            # CC to the upper limit (ends there), then CV to C/20: the cell is full
            steps.append("Charge at %.4f A until 4.2 V %s" % (i_chg, p_chg))
            steps.append("Hold at 4.2 V until %.4f A %s" % (c_ah / 20.0, p_chg))
            # planning only (the steps end on the limits): CC to ~90 %, then ~1 h of CV
            t += max(0.0, 0.9 - soc) * q_true_ah * 3600.0 / i_chg + 3600.0
            soc = 1.0
        else:
            cc(-i_chg, (high_soc - soc) * q_true_ah * 3600.0 / i_chg)
        rest_until(base + DAY_S)
    return steps
