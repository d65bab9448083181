# State of power: the largest constant current for a horizon that keeps the predicted
# terminal voltage inside the limits, SOC inside its window and the core temperature
# under its limit, capped by the cell's rated current.
#
# Over a horizon T the model is linear in the current except for OCV(soc); linearising
# OCV at the present SOC gives a closed form, and one correction with the full model
# at that current removes most of the linearisation error. Cheap enough for every cell
# on a PC; on a board the C version (bms_native.sop, the same math for every horizon and
# both directions in one call) is what fits the estimator tick: see Native below.
import math

from bms import model, ukf

HORIZONS_S = (2.0, 10.0, 30.0)


# A cell's own values travel next to the shared, read-only params p: cell =
# (capacity A*s, R0 factor, diffusion shift SOC fraction), indexed by these.
CELL_CAP = 0
CELL_R0 = 1
CELL_SHIFT = 2


def _predict(p, cell, st, i_a, ta_c, horizon_s, tab):
    d = model.shift_ahead(p, cell[CELL_SHIFT], i_a, st[3], horizon_s)
    soc, v1, v2, tc, ts = model.step(p, st[0], st[1], st[2], st[3], st[4], i_a, ta_c,
                                     horizon_s, tab, cell[CELL_CAP], cell[CELL_R0])
    v = model.voltage(p, soc, v1, v2, tc, i_a, tab, cell[CELL_R0], d)
    return v, soc, tc


def _limit(p, cell, st, ta_c, horizon_s, sign, v_lim, soc_lim, i_rated, t_core_max, tab):
    """Largest magnitude of current in direction sign (+1 discharge, -1 charge)."""
    soc, v1, v2, tc = st[0], st[1], st[2], st[3]
    cap_as = cell[CELL_CAP]
    d = cell[CELL_SHIFT]
    model.lookup(p, soc, tc, tab)
    r0 = (tab[model.R0] if sign > 0 else tab[model.R0C]) * cell[CELL_R0]
    r2 = tab[model.R2] if sign > 0 else tab[model.R2C]
    a1 = math.exp(-horizon_s / tab[model.TAU1])
    a2 = math.exp(-horizon_s / tab[model.TAU2])
    ds = 0.01
    hi_soc = soc + ds if soc + ds <= 1.0 else soc
    lo_soc = hi_soc - 2 * ds if hi_soc - 2 * ds >= 0.0 else 0.0
    if hi_soc <= lo_soc:  # soc at or below -ds (not from the estimator): no empty window
        hi_soc = lo_soc + 2 * ds
    slope = (model.ocv(p, hi_soc, tc, tab) - model.ocv(p, lo_soc, tc, tab)) / (hi_soc - lo_soc)
    # the diffusion shift: its decay from now, and its growth per amp (in this direction,
    # as its gain differs by direction) over the horizon
    d0 = model.shift_ahead(p, d, 0.0, tc, horizon_s)
    g_h = sign * (model.shift_ahead(p, d, sign, tc, horizon_s) - d0)
    ocv0 = model.ocv(p, soc - d0, tc, tab)
    model.lookup(p, soc, tc, tab)
    rc0 = v1 * a1 + v2 * a2
    # Voltage after T at current I (discharge positive):
    #   V = ocv0 - slope*I*(T/Q + g_h) - rc0 - (R1(1-a1) + R2(1-a2) + r0) I
    r_eff = r0 + tab[model.R1] * (1.0 - a1) + r2 * (1.0 - a2) \
        + slope * (horizon_s / cap_as + g_h)
    if r_eff <= 0.0:
        return 0.0
    i = sign * (ocv0 - rc0 - v_lim) / r_eff
    if i <= 0.0:
        return 0.0
    i = min(i, i_rated)
    # One correction with the full model (tables vary with SOC over the horizon).
    v, _, _ = _predict(p, cell, st, sign * i, ta_c, horizon_s, tab)
    err = sign * (v - v_lim)  # > 0: margin left
    i = i + err / r_eff
    # SOC window.
    i_soc = sign * (soc - soc_lim) * cap_as / horizon_s
    if i_soc < i:
        i = i_soc
    # Core temperature: heat grows as I^2; scale the predicted rise to the limit.
    if t_core_max is not None and i > 0.0:
        _, _, tc_i = _predict(p, cell, st, sign * i, ta_c, horizon_s, tab)
        _, _, tc_0 = _predict(p, cell, st, 0.0, ta_c, horizon_s, tab)
        rise = tc_i - tc_0
        room = t_core_max - tc_0
        if room <= 0.0:
            return 0.0
        if rise > room:
            i = i * math.sqrt(room / rise)
    if i < 0.0:
        return 0.0
    return i if i < i_rated else i_rated


def limits(p, cell, st, ta_c, lim, horizon_s, tab, soc_min=0.0, soc_max=1.0):
    """(discharge_max_a, charge_max_a) for one horizon. cell = (capacity A*s, R0 factor,
    diffusion shift): this cell's values (CELL_*); st = (soc, v1, v2, tc, ts) in
    physical units; lim is the calibration's limits dict."""
    i_dis = _limit(p, cell, st, ta_c, horizon_s, 1.0, lim["v_min"], soc_min,
                   lim["i_discharge_max_a"], lim.get("t_core_max_c"), tab)
    i_chg = _limit(p, cell, st, ta_c, horizon_s, -1.0, lim["v_max"], soc_max,
                   lim["i_charge_max_a"], lim.get("t_core_max_c"), tab)
    if st[3] < lim.get("t_charge_min_c", 0.0) or st[3] > lim.get("t_charge_max_c", 45.0):
        i_chg = 0.0
    return i_dis, i_chg


# The C version: bms_native.sop(params, x, lim, i_dis, i_chg) reads the filter state x
# (filter units, ukf.py) and the limits vector made by lim_vec, and writes one current
# per horizon into i_dis and i_chg. Layout of lim (sop_core.h: BMS_SOP_*):
LIM_TA = 0      # ambient degC: written before every call
LIM_V_MIN = 1   # the calibration's limits (lim_vec)
LIM_V_MAX = 2
LIM_I_DIS = 3
LIM_I_CHG = 4
LIM_T_CORE = 5  # NaN: no core temperature limit
LIM_T_CHG_MIN = 6
LIM_T_CHG_MAX = 7
LIM_SOC_MIN = 8
LIM_SOC_MAX = 9
LIM_CAP = 10    # this cell's capacity A*s, R0 factor and diffusion shift: written
LIM_R0 = 11     # before every call (the C reads the cell's values from here, params
LIM_SHIFT = 12  # are shared and read only)
LIM_BASE = 13   # then the horizons (s)


def lim_vec(lim, horizons=HORIZONS_S, soc_min=0.0, soc_max=1.0):
    """The limits dict of a calibration as the flat vector bms_native.sop reads."""
    t_core = lim.get("t_core_max_c")
    return [25.0, lim["v_min"], lim["v_max"], lim["i_discharge_max_a"],
            lim["i_charge_max_a"], float("nan") if t_core is None else t_core,
            lim.get("t_charge_min_c", 0.0), lim.get("t_charge_max_c", 45.0),
            soc_min, soc_max, 3600.0, 1.0, 0.0] + [float(h) for h in horizons]


class Python:
    """SOP for one cell with limits() per horizon (the reference; runs everywhere)."""

    def __init__(self, lim):
        self.lim = lim
        n = len(HORIZONS_S)
        self.i_dis = [0.0] * n
        self.i_chg = [0.0] * n

    def update(self, p, x, ta_c, tab, cap_as, r0s, shift):
        """x: the filter state (ukf.py units); p: the shared params; cap_as, r0s, shift:
        this cell's capacity (A*s), R0 factor and diffusion shift."""
        st = (x[ukf.SOC] / 100.0, x[ukf.V1] / 1000.0, x[ukf.V2] / 1000.0, x[ukf.TC],
              x[ukf.TS])
        cell = (cap_as, r0s, shift)
        for k in range(len(HORIZONS_S)):
            self.i_dis[k], self.i_chg[k] = limits(p, cell, st, ta_c, self.lim, HORIZONS_S[k],
                                                  tab)
        return 0


class Native:
    """SOP for one cell in C (bms_native.sop): buffers made once, i_dis and i_chg are
    array('f') updated in place. p and x must be the native backend's arrays."""

    def __init__(self, lim, module):
        from array import array
        self.mod = module
        self.sop = module.sop     # bound once: update is on the SOP tick's path
        tc = module.TYPECODE
        self.vec = array(tc, lim_vec(lim))
        n = len(HORIZONS_S)
        self.i_dis = array(tc, [0.0] * n)
        self.i_chg = array(tc, [0.0] * n)

    def update(self, p, x, ta_c, tab, cap_as, r0s, shift):
        vec = self.vec
        vec[LIM_TA] = ta_c
        vec[LIM_CAP] = cap_as
        vec[LIM_R0] = r0s
        vec[LIM_SHIFT] = shift
        return self.sop(p, x, vec, self.i_dis, self.i_chg)


def make(lim, backend):
    """The fastest SOP for this backend: C when the backend is the native one and its
    module has sop (a firmware built before it has not), else the Python reference."""
    mod = getattr(backend, "mod", None)
    if getattr(backend, "name", "") == "native" and hasattr(mod, "sop"):
        return Native(lim, mod)
    return Python(lim)
