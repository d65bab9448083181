# Equivalent-circuit + two-node thermal cell model (the reference all backends follow).
#
# Electrical: OCV(soc, T) - R0*i - v1 - v2, two RC pairs, all parameters bilinear in
# (soc, T) from the calibration tables, T being the core temperature.
# Thermal: core (C_core) -- R_cs -- surface (C_surf) -- R_sa -- ambient; heat is
# i*(Rh*i + k1*v1 + eta) + k2*i*v2: the irreversible loss i*(OCV - V) with only the
# fractions k1, k2 (heat_v1_fraction, heat_v2_fraction, default 1) of the RC pairs'
# polarisation counted (the particles' concentration overpotential is not dissipated),
# and the ohmic part from a table of its own, Rh (rh_ohm; without it, R0): R0 is shaped
# for the voltage and takes up polarisation the cell does not dissipate (the end-of-
# discharge knee), which ran a cold discharge's surface 0.7 degC off. The surface
# node is fast (a few seconds), so it is integrated with backward Euler (stable for any dt).
#
# Solid diffusion: under a sustained current the particles' surfaces run ahead of their
# average, so the cell shows the OCV of a shifted SOC. The model reads OCV at soc - d,
# where d (SOC fraction) lags the current: d' = (g*i - d) / tau, g and tau growing as
# exp(E (1/T - 1/298.15)) at low core temperature T (diffusion slows in the cold). Unlike
# an RC voltage, the shift follows the OCV's shape (large on the steep ends, small on the
# plateaus) and is not dissipated as heat. d depends only on the current and the core
# temperature, so it is an input of the filter, not a state: the estimator advances it
# with shift_ahead before each filter step and passes it in (the step's u vector).
#
# Past the top of the SOC grid the OCV keeps rising with the mean slope of the grid's top
# tenth (OCV_TOP_SPAN); below the grid and in every other table the end value holds. A
# filter whose sigma points reach past 100 % then still sees which way its SOC is wrong
# (with a flat end, a start from far off crept down from the top of a discharge). Not
# the last segment's slope: on an LFP cell that is the final 1 % jump, which would put
# such sigma points at absurd voltages; nor below the grid, for the same reason (the
# end-of-discharge knee).
#
# Discrete time, zero-order hold: the current of sample k is applied over (t_{k-1}, t_k].
#
# Parameters travel as one flat float array so that the python, ulab and C backends
# share them without conversion. They are the calibration only: made once by pack() and
# never written after, so all cells of a pack share one array. What differs per cell
# (its capacity, its online R0 factor, its diffusion shift) is an argument of the
# functions below and travels in the filter step's input vector (ukf.py: U_CAP, U_R0,
# U_SHIFT) and in SOP's limits vector.
#   [0] n_soc  [1] n_temp  [2] capacity_as: the calibration's (nominal) capacity, what a
#       simulated plant uses; the filter takes each cell's own from its input
#   [3] c_core  [4] c_surf  [5] r_cs  [6] r_sa
#   [7] heat_v2_fraction k2 (thermal.heat_v2_fraction; 1.0 when absent)
#   [8] shift gain g at 25 degC (SOC fraction per A; 0 = no diffusion term)
#   [9] shift time constant tau at 25 degC (s)  [10] its activation E (K, = Ea / R)
#   [11] shift gain on charge (i < 0; = [8] when the calibration has no
#        diffusion.shift_per_a_chg): an LFP cathode is diffusion-limited filling up
#        (discharge) far more than emptying
#   [12] heat_v1_fraction k1 (thermal.heat_v1_fraction; 1.0 when absent)
#   [13] 1.0: the ohmic heat takes the rh table (times the cell's R0 factor); 0.0 (no
#        rh_ohm in the calibration): R0 / R0c as the voltage does
#   then soc grid (n_soc), temp grid (n_temp), then the tables of TABLES, each n_temp
#   rows of n_soc values.
import math

N_SOC = 0
N_TEMP = 1
CAP_AS = 2
C_CORE = 3
C_SURF = 4
R_CS = 5
R_SA = 6
HEAT_V2 = 7
SHIFT_GAIN = 8
SHIFT_TAU = 9
SHIFT_E = 10
SHIFT_GAIN_CHG = 11
HEAT_V1 = 12
HEAT_RH = 13
HEADER = 14

# Order of tables in the flat array; r0c is R0 on charge (i < 0), r0 on discharge.
# i0 is the exchange current of a Butler-Volmer term: the cell's pulse resistance
# falls with current (by a third from 1C to 2C at 0 degC), which a resistance in
# (soc, T) alone turns into a voltage bias, and a biased model into SOC error.
# r2c is R2 on charge (i < 0; r2 on discharge), appended last so the others keep their
# indices; a calibration without it uses r2 both ways. rh is the ohmic heat's
# resistance (see above; a calibration without it fills it with r0, unused).
TABLES = ("ocv_v", "r0_ohm", "r0c_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s", "i0_a",
          "r2c_ohm", "rh_ohm")
OCV, R0, R0C, R1, TAU1, R2, TAU2, I0, R2C, RH = range(10)
NTAB = 10
I0_NONE = 1e6  # a calibration without i0: the kinetic term vanishes
KIN_B = 2.0 * 8.314462618 / 96485.33212  # 2R/F: eta = KIN_B * T_kelvin * asinh(i / 2 i0)
# The diffusion factor's temperature is held above this: a filter fed an absurd trace
# (current in mA) can drive its core-temperature state towards 0 K, where the Arrhenius
# factor overflows a double (and a float to inf).
DIFF_TC_MIN = -100.0
OCV_TOP_SPAN = 0.1  # SOC: the OCV continues past the grid's top with its slope over this


def size(n_soc, n_temp):
    return HEADER + n_soc + n_temp + NTAB * n_soc * n_temp


def pack(cal, capacity_ah=None):
    """Flat parameter list from a validated calibration dict."""
    tab = cal["tables"]
    th = cal["thermal"]
    soc = tab["soc"]
    temp = tab["temp_c"]
    cap = capacity_ah if capacity_ah is not None else cal["cell"]["capacity_ah"]
    dif = cal.get("diffusion", {})
    p = [float(len(soc)), float(len(temp)), cap * 3600.0, th["c_core_j_per_k"],
         th["c_surf_j_per_k"], th["r_core_surf_k_per_w"], th["r_surf_amb_k_per_w"],
         float(th.get("heat_v2_fraction", 1.0)),
         float(dif.get("shift_per_a", 0.0)), float(dif.get("tau_s", 100.0)),
         float(dif.get("activation_k", 0.0)),
         float(dif.get("shift_per_a_chg", dif.get("shift_per_a", 0.0))),
         float(th.get("heat_v1_fraction", 1.0)), 1.0 if "rh_ohm" in tab else 0.0]
    p.extend(float(v) for v in soc)
    p.extend(float(v) for v in temp)
    for name in TABLES:
        rows = tab.get(name)
        if rows is None and name == "r0c_ohm":
            rows = tab["r0_ohm"]
        if rows is None and name == "r2c_ohm":
            rows = tab["r2_ohm"]
        if rows is None and name == "rh_ohm":
            rows = tab["r0_ohm"]
        if rows is None and name == "i0_a":
            p.extend([I0_NONE] * (len(soc) * len(temp)))
            continue
        for row in rows:
            p.extend(float(v) for v in row)
    return p


def pack_one(soc, temp, rows):
    """A params-shaped list holding one table (rows: one per temperature) on the grid
    (soc, temp), for lookup(p, soc, temp_c, out, 1): a per-cell extra such as the
    hysteresis table uses the same interpolation without being part of the filter's
    parameters."""
    p = [float(len(soc)), float(len(temp))] + [0.0] * (HEADER - 2)
    p.extend(float(v) for v in soc)
    p.extend(float(v) for v in temp)
    for row in rows:
        p.extend(float(v) for v in row)
    return p


def _bracket(p, start, n, x):
    # Index j and weight w so that x ~ grid[j]*(1-w) + grid[j+1]*w, clamped at the ends.
    if n == 1:
        return 0, 0.0
    if x <= p[start]:
        return 0, 0.0
    if x >= p[start + n - 1]:
        return n - 2, 1.0
    j = 0
    while p[start + j + 1] < x:
        j += 1
    g0 = p[start + j]
    return j, (x - g0) / (p[start + j + 1] - g0)


def lookup(p, soc, temp_c, out, ntab=NTAB):
    """Bilinear lookup of the first ntab tables (all by default; 1 = the OCV alone) at
    (soc, temp_c) into out[0:ntab], clamped at the grid's ends except the OCV past the
    top (see OCV_TOP_SPAN)."""
    ns = int(p[N_SOC])
    nt = int(p[N_TEMP])
    i, ws = _bracket(p, HEADER, ns, soc)
    j, wt = _bracket(p, HEADER + ns, nt, temp_c)
    i1 = i + 1 if ns > 1 else i
    j1 = j + 1 if nt > 1 else j
    base = HEADER + ns + nt
    a = (1.0 - ws) * (1.0 - wt)
    b = ws * (1.0 - wt)
    c = (1.0 - ws) * wt
    d = ws * wt
    r00 = j * ns + i
    r01 = j * ns + i1
    r10 = j1 * ns + i
    r11 = j1 * ns + i1
    step = ns * nt
    for k in range(ntab):
        o = base + k * step
        out[k] = a * p[o + r00] + b * p[o + r01] + c * p[o + r10] + d * p[o + r11]
    top = p[HEADER + ns - 1]
    if soc > top and ns > 1:
        v_top = out[0]
        span = min(OCV_TOP_SPAN, top - p[HEADER])
        lookup(p, top - span, temp_c, out, 1)
        out[0] = v_top + (v_top - out[0]) * (soc - top) / span
    return out


def shift_ahead(p, d, i_a, tc, dt_s):
    """The diffusion shift after dt_s more seconds of current i_a (A) at core temperature
    tc (degC, the state before the step), from the shift d now (SOC fraction)."""
    g = p[SHIFT_GAIN] if i_a >= 0.0 else p[SHIFT_GAIN_CHG]
    if g == 0.0 and d == 0.0:
        return 0.0
    if tc < DIFF_TC_MIN:
        tc = DIFF_TC_MIN
    f = math.exp(p[SHIFT_E] * (1.0 / (tc + 273.15) - 1.0 / 298.15))
    a = math.exp(-dt_s / (p[SHIFT_TAU] * f))
    return a * d + (1.0 - a) * g * f * i_a


def kinetic_v(i_a, i0_a, tc):
    """Butler-Volmer overpotential (V) at current i_a, exchange current i0_a."""
    x = i_a / (2.0 * i0_a)
    # asinh without math.asinh (not on every port), odd-symmetric for accuracy
    ax = x if x >= 0.0 else -x
    eta = math.log(ax + math.sqrt(ax * ax + 1.0))
    return KIN_B * (tc + 273.15) * (eta if x >= 0.0 else -eta)


def step(p, soc, v1, v2, tc, ts, i_a, ta_c, dt_s, tab, cap_as, r0s):
    """Advance one sample of a cell of capacity cap_as (A*s) whose R0 is r0s times the
    calibration's. tab is a scratch list of NTAB floats (filled here).
    Returns (soc, v1, v2, tc, ts)."""
    lookup(p, soc, tc, tab)
    a1 = math.exp(-dt_s / tab[TAU1])
    a2 = math.exp(-dt_s / tab[TAU2])
    r0 = (tab[R0] if i_a >= 0.0 else tab[R0C]) * r0s
    ro = tab[RH] * r0s if p[HEAT_RH] != 0.0 else r0
    heat_w = (i_a * (ro * i_a + p[HEAT_V1] * v1 + kinetic_v(i_a, tab[I0], tc))
              + p[HEAT_V2] * i_a * v2)
    r2 = tab[R2] if i_a >= 0.0 else tab[R2C]
    v1 = a1 * v1 + tab[R1] * (1.0 - a1) * i_a
    v2 = a2 * v2 + r2 * (1.0 - a2) * i_a
    soc = soc - i_a * dt_s / cap_as
    # Backward Euler on the two thermal nodes: a 2x2 linear solve.
    g1 = 1.0 / p[R_CS]
    g2 = 1.0 / p[R_SA]
    kc = p[C_CORE] / dt_s
    ks = p[C_SURF] / dt_s
    a11 = kc + g1
    a22 = ks + g1 + g2
    b1 = kc * tc + heat_w
    b2 = ks * ts + g2 * ta_c
    det = a11 * a22 - g1 * g1
    tc_new = (b1 * a22 + g1 * b2) / det
    ts_new = (a11 * b2 + g1 * b1) / det
    return soc, v1, v2, tc_new, ts_new


def voltage(p, soc, v1, v2, tc, i_a, tab, r0s, shift):
    """Terminal voltage at the state (after step) for current i_a, R0 factor r0s and
    diffusion shift (SOC fraction)."""
    lookup(p, soc, tc, tab)
    r0 = (tab[R0] if i_a >= 0.0 else tab[R0C]) * r0s
    eta = kinetic_v(i_a, tab[I0], tc)
    if shift != 0.0:
        lookup(p, soc - shift, tc, tab, 1)   # OCV at the diffusion-shifted SOC
    return tab[OCV] - v1 - v2 - r0 * i_a - eta


def ocv(p, soc, temp_c, tab):
    lookup(p, soc, temp_c, tab, 1)
    return tab[OCV]


def soc_from_ocv(p, v, temp_c, tab, n=40):
    """Invert OCV(soc) at temp_c by bisection (OCV is increasing in soc); n halvings of
    the SOC grid's span (12: within 0.03 %)."""
    lo = p[HEADER]
    hi = p[HEADER + int(p[N_SOC]) - 1]
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        if ocv(p, mid, temp_c, tab) < v:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Simulator:
    """Open-loop simulation of the calibrated model (bms-host simulate, the sim plant).
    p is read only; the plant's capacity is the calibration's (p[CAP_AS]), its R0 the
    calibration's times r0_scale."""

    def __init__(self, p, soc, temp_c, r0_scale=1.0):
        self.p = p
        self.cap_as = p[CAP_AS]
        self.r0s = r0_scale
        self.shift = 0.0
        self.tab = [0.0] * NTAB
        self.soc = soc
        self.v1 = 0.0
        self.v2 = 0.0
        self.tc = temp_c
        self.ts = temp_c

    def step(self, i_a, ta_c, dt_s):
        self.shift = shift_ahead(self.p, self.shift, i_a, self.tc, dt_s)
        self.soc, self.v1, self.v2, self.tc, self.ts = step(
            self.p, self.soc, self.v1, self.v2, self.tc, self.ts, i_a, ta_c, dt_s, self.tab,
            self.cap_as, self.r0s)
        return voltage(self.p, self.soc, self.v1, self.v2, self.tc, i_a, self.tab, self.r0s,
                       self.shift)
