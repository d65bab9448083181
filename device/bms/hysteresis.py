# One-state voltage hysteresis (Plett's enhanced self-correcting model; the same form as
# PyBaMM's "one-state hysteresis"): an LFP cell rested after a discharge sits M volts
# below the mid OCV, after a charge M above, and moves from one branch to the other as
# charge flows the other way:
#     h' = gamma * |i| / Q * (target - h),  target = -1 discharging, +1 charging,
#     V  = OCV(soc) + M(soc, T) * h + (the RC and ohmic terms).
# On a flat OCV 10 mV of M is several % of SOC, so a filter that does not know which
# branch the cell is on reads the gap as charge.
#
# h depends only on the current, like the diffusion shift, so it is not a filter state:
# the estimator advances it before each step and takes M*h off the measured voltage.
# What it does not know is where h started (a boot after an unknown past): sigma is the
# spread of h, 1/sqrt(3) for a start anywhere in [-1, 1], shrinking as charge flows
# (every start converges to the same branch); M*sigma goes into the voltage noise.
# A current below the rest band (a sensor's offset and noise) leaves h alone: a rested
# cell keeps its branch for days. Both the sample and the current's mean over REST_TAU_S
# must be past the band: single samples of a rested cell's sensor noise pass it (20 mA of
# noise on a 30 mA offset beat a 46 mA band one sample in five and walked h 0.24 off its
# branch in a 25 min rest).
import math

from bms import model

SIGMA_UNKNOWN = 0.5773502691896258   # std of a uniform h in [-1, 1]
REST_C = 0.02                        # |current| below this C-rate does not move h
REST_TAU_S = 10.0                    # ... read on its mean over this long


def decay(i_a, dt_s, cap_as, gamma, rest_a):
    """The factor a of one step: h -> a*h + (1 - a)*target (1.0 within the rest band)."""
    if i_a < rest_a and i_a > -rest_a:
        return 1.0
    return math.exp(-gamma * (i_a if i_a >= 0.0 else -i_a) * dt_s / cap_as)


def toward(h, a, i_a):
    """h after a step of factor a (decay) with current i_a: towards -1 discharging, +1
    charging."""
    return a * h + (a - 1.0 if i_a > 0.0 else 1.0 - a)


def table(cal):
    """The calibration's M table in model.lookup's flat layout (a params array holding
    one table), or None when the calibration has no hysteresis."""
    hy = cal.get("hysteresis")
    if not hy:
        return None
    tab = cal["tables"]
    return model.pack_one(tab["soc"], tab["temp_c"], hy["m_v"])


class Branch:
    """The state h and what is known of it; the host's simulator runs the same."""

    def __init__(self, gamma, rest_a):
        self.gamma = gamma
        self.rest_a = rest_a
        self.h = 0.0
        self.sigma = SIGMA_UNKNOWN
        self.i_mean = 0.0   # the current's mean over REST_TAU_S (A), for the rest band
        self.still_s = 0.0  # how long h has not moved (s): a rest keeps what is unknown of it

    def reset(self, h=0.0, sigma=SIGMA_UNKNOWN):
        self.h = h
        self.sigma = sigma
        self.still_s = 0.0

    def advance(self, i_a, dt_s, cap_as):
        """h after dt_s seconds of current i_a (A, discharge positive) in a cell of
        capacity cap_as (A*s)."""
        f = dt_s / REST_TAU_S
        self.i_mean += (f if f < 1.0 else 1.0) * (i_a - self.i_mean)
        m = self.i_mean
        if -self.rest_a < m < self.rest_a:
            self.still_s += dt_s
            return self.h
        a = decay(i_a, dt_s, cap_as, self.gamma, self.rest_a)
        if a < 1.0:
            self.h = toward(self.h, a, i_a)
            self.sigma *= a
            self.still_s = 0.0
        else:
            self.still_s += dt_s
        return self.h


class Hysteresis(Branch):
    """A cell's branch and the calibration's M table."""

    def __init__(self, cal):
        hy = cal.get("hysteresis") or {}
        Branch.__init__(self, float(hy.get("gamma", 0.0)),
                        REST_C * cal["cell"]["capacity_ah"])
        self.p = table(cal)
        self.top = self.p[model.HEADER + int(self.p[model.N_SOC]) - 1]   # the grid's top SOC
        self.tab = [0.0]
        self.m_v = 0.0      # M at the last lookup (V)

    def volts(self, soc, temp_c):
        """(M*h, M*sigma) in volts at soc (fraction) and temp_c."""
        top = self.top
        m = model.lookup(self.p, soc if soc < top else top, temp_c, self.tab, 1)[0]
        self.m_v = m
        return m * self.h, m * self.sigma
