# One cell's estimator: the UKF (through a backend), RLS for R0, SOH and SOP.
# Everything the 100 ms estimator tick needs per cell, with buffers made once.
import math

from bms import backends, hysteresis, model, rls, soh, sop, ukf

# Initial uncertainty (filter units: %, mV, mV, degC, degC, mA).
SIGMA_SOC_REST = 5.0      # SOC from OCV at rest
SIGMA_SOC_LOADED = 15.0   # SOC from a loaded voltage
SIGMA_SOC_GIVEN = 25.0    # a start value given by a person: trust it little
# Those two are the start's spread where the OCV is steep. Where it is flat, or where an
# unknown hysteresis branch (M ~10 mV on LFP) shifts the rested voltage, the voltage's
# error spans many % of SOC: an LFP cell mid-plateau read through the OCV is 10-30 points
# off. The boot takes the SOC range that the voltage +- (M + the OCV's error,
# soh.OCV_SIGMA_MV) spans through the OCV table, starts in its middle, and adds the spread
# of a uniform start over it (width / sqrt(12)) in quadrature (LG M50: a range of 1-4
# points, the sigma stays 5.0-5.1 %; LFP over 20-90 %: 6-34 points, sigma 5-11 %).
# Halvings of each of the three OCV inversions (within 0.03 % SOC, far inside the sigma):
# 36 OCV lookups in all, where one inversion to full precision took 40 (a boot step on a
# Pico is one cell's whole estimator tick).
BOOT_BISECT = 12
# A SOC saved before the reboot (sohstore) is used unless the voltage at boot contradicts
# it beyond this many sigmas of the two together (the pack was charged or swapped while
# the BMS was off); where the OCV is steep and the two agree, the filter's own voltage
# update refines the stored SOC.
BOOT_AGREE_SIGMAS = 3.0
SIGMA0 = (None, 10.0, 10.0, 2.0, 1.0, 5.0)
# The RC voltages of a rested cell are known to be ~0. A wide start lets the large first
# innovations of a wrong SOC leak into them, and their slow return then drags the SOC
# by up to 3 % for minutes after it converged.
SIGMA_RC_REST = 1.0
SOC_LO_PCT = 0.0          # the SOC estimate is kept inside the OCV table's range
SOC_HI_PCT = 100.0

# Noise schedule, set into the filter's cfg before every step (cfg is data: every
# backend reads it each step). A cell model is worst at high current and in the cold,
# so the SOC process noise and the voltage noise floor grow with C-rate and cold.
Q_SOC_PER_C = 0.0         # SOC process noise added per C of current (% per sqrt s)
V_FLOOR_PER_C = 100.0     # voltage noise floor added per C (mV)
V_FLOOR_COLD = 1.0        # voltage noise floor added per degC below 25 degC (mV)
V_FLOOR_REL = 0.3         # voltage noise floor added per mV of model overpotential
# The thermal states' process noise grows with the heat, like the heat model's error: a
# fit to a real cell's rate tests misses their can temperature by about 0.06 degC per
# sqrt(s) per C^2 (0.03-0.05 at 1C, 0.11-0.12 at 1.5C, 0.24-0.35 at 2C). Held at the
# rest value, the filter reads a can cooler than predicted as "less heat, so more charge
# left" through the SOC-temperature covariance: the measured LG M50 at 45 degC, its heat
# overestimated by 4 degC, read 26 points high at 1.5C (bms-host bench real).
Q_TEMP_PER_C2 = 0.06      # degC per sqrt(s) per C^2, added in quadrature
# Honest sigma: a persistent voltage bias b moves the SOC, which a white-noise filter
# does not count. soc_sigma() adds it (Schmidt's "consider"): the slow mean of the
# innovation, a bias the filter sees now, through the local slope, b / (dOCV/dSOC); and
# the calibration's unseen bias BIAS_BASE_MV through the SOC's sensitivity to it, s_bias
# (% per mV), carried along (_consider, every FLAT_EVERY_S): voltage updates that took
# the share a of the SOC's variance give s <- (1 - a) s + a / slope. Where it reads the voltage
# s is 1 / slope; where it coulomb-counts (the flat-OCV noise) it keeps what the last
# reading left. LFP urban and highway drives from full, read at the steep top: mean
# sigma 3.6-4.9 % -> 1.4-3.3 %; the SOC started 20 points off mid-plateau, read there:
# 3.0-3.3 % -> 3.7-4.1 % (b / slope at every step had given both the same). The shift's
# error (below) is carried the same way. Then the OCV table's own SOC-axis uncertainty:
# at the ends of the OCV the slope is steep, b / slope vanishes, yet a measured cell's
# rested voltage there still moves for hours after a load and its end points shift with
# temperature and rate (measured LG M50, bms-host bench real: SOC off by 0.6-1.3 points
# in the rests near empty, where b / slope gave a 0.1 point sigma).
BIAS_BASE_MV = 6.0
SIGMA_SOC_OCV = 0.5       # % SOC, added in quadrature
BIAS_TAU_S = 300.0
# The diffusion shift d is one gain for every load, and where the voltage decides the
# SOC, the SOC is the OCV's SOC plus d: the gain's error is the SOC's, one for one.
# soc_sigma() counts it with this relative sigma (as it entered the SOC, s_shift), and
# the flat-OCV noise (FLAT_*) counts it as model error read through the OCV slope. The
# LFP's fit traces each prefer 0.06-0.07/A (adopted 0.07), and at the knee 0.01/A is
# 30-150 mV: without it the filter ended an aggressive drive near empty 2.1 points high
# with a 0.7 % sigma.
SHIFT_SIGMA_REL = 0.2
SIGMA_SOC_MIN = 0.0       # floor on the filter's own SOC sigma (%), keeps it responsive
# The RLS factor reaches the filter slowly and through a dead band: a fresh cell's pulse
# resistance falls with current, which moves the factor by +-10 % from one load to the
# next (feeding that raw made SOC worse on the PyBaMM cell); ageing moves it for good.
R0_FEED_DEADBAND = 0.1
R0_FEED_TAU_S = 1800.0
SETTLE_S = 900.0          # no capacity segments before the filter has run this long
CAP_MIN_PAIRS = 3         # capacity fed back only after this many segments
# RLS on R0: the scale's variance cap must be ~1/(di*R0)^2 (R0*di ~ 0.1 V) or the gain is
# tiny; a memory of ~7 current steps tracks a 50 % step in R0 within minutes.
RLS_FORGET = 0.85
RLS_P0 = 100.0
# Re-sync at the ends of the OCV, as LFP BMSes do: on a flat OCV the voltage says little
# for hours, but two moments pin the SOC whatever the model's bias.
#   full:  the end of a CV charge (voltage within soh.FULL_V_BELOW of the upper limit, the
#          charge current tapered below soh.TAPER_C, ~C/20, yet above the rest band
#          soh.REST_C, so a sensor's offset and noise at rest never pass for a taper): the
#          SOC a CV hold to C/20 leaves (soh.FULL_SOC, less in the cold), sigma
#          soh.FULL_SIGMA;
#   empty: the voltage at the lower limit under a small load (below RESYNC_EMPTY_C): the
#          OCV table's SOC at the voltage plus the modelled ohmic and RC drops, sigma the
#          OCV's error (soh.OCV_SIGMA_MV, more in the cold) and a share of those drops
#          over the local slope.
# Each is one scalar pseudo-measurement of SOC (pseudo_soc: a Kalman update of x and P
# with H = e_SOC, a reset when they disagree beyond 3 sigma), taken once per visit: the
# event re-arms when the voltage leaves that end. Where the filter already knows the SOC
# well (a steep OCV end) it moves little; after hours on a flat OCV it corrects.
RESYNC_TAPER_C = soh.TAPER_C      # a charger that ends at C/20 stops just above it
RESYNC_EMPTY_V_ABOVE = 0.02   # "at the lower limit": within this of limits.v_min
RESYNC_EMPTY_C = 0.2
RESYNC_REARM_V = 0.05         # re-armed this far inside both ends
# Flat-OCV voltage noise. The model's voltage error is not white: after a load its
# relaxation and diffusion miss the cell by several mV for minutes. A filter that reads it
# as white noise averages it away and follows it, and where the OCV is flat a few mV is
# many % SOC (PyBaMM LFP: rests on its 3 mV/% step after a drive pulled the SOC 2 points
# high). Where that error E, read through the OCV slope, is more than FLAT_SOC_PCT, the
# voltage gets up to the white noise equivalent of an error held FLAT_TAU_S (E^2 tau / dt,
# times 1 - (FLAT_SOC_PCT * slope / E)^2, so it sets in smoothly), and the filter
# coulomb-counts there and still reads the voltage where the OCV is steep.
# E = FLAT_MODEL_MV + FLAT_REL * the model overpotential (as the voltage noise floor),
# and in quadrature the diffusion shift's error (SHIFT_SIGMA_REL) times the OCV slope.
# The slope is the secant over +-FLAT_SIGMAS of the filter's SOC sigma (at least 2
# points): a filter far from sure sees the steep parts its SOC may be in and converges.
FLAT_MODEL_MV = 1.0
FLAT_REL = 0.3
FLAT_SOC_PCT = 1.0
FLAT_TAU_S = 30.0
FLAT_SIGMAS = 2.0
# The slope is looked up again this often: it changes slowly, and two OCV lookups per
# cell per second took a 16-cell Pico from every cell stepped within 0.8 s to 1.4 s
# (bench target); 5 s moves the LFP drive rows by at most 0.2 points, within the floors.
FLAT_EVERY_S = 5.0

# An unknown hysteresis branch (after a boot: hysteresis.py's sigma) is one offset that
# stays until charge flows, not white noise: a filter that averages it away reads the
# gap as charge for good (on LFP, 10 mV is 10 points). Its variance counts as an error
# held this long (as FLAT_TAU_S), plus the time h has not moved: a rest keeps the offset,
# and an hour of it is not six independent readings (an LFP boot mid-plateau on the
# discharge branch, no SOC saved: after an hour's rest 12.4 points low with a 3.5 %
# sigma; now 11.1 with 5.0, the filter's own sigma still too small for it).
HYST_PERSIST_S = 600.0


class CellEstimator:
    def __init__(self, cal, backend=None, cfg=None, params=None):
        """params: the calibration's flat parameters made by backend.alloc, shared by all
        cells of a pack (about 5 KB each in float32) and never written: this cell's own
        values (capacity, R0 factor, diffusion shift) go in its input vector u."""
        self.cal = cal
        self.limits = cal["limits"]
        self.backend = backend if backend is not None else backends.make()
        b = self.backend
        self.nominal_ah = cal["cell"]["capacity_ah"]
        self.p = params if params is not None else b.alloc(model.pack(cal))
        self.shift = 0.0          # this cell's diffusion shift (SOC fraction, model.py)
        # voltage hysteresis (hysteresis.py), when the calibration has it (LFP)
        self.hyst = hysteresis.Hysteresis(cal) if cal.get("hysteresis") else None
        self.hyst_v = 0.0         # M*h taken off the last measurement (V)
        self.u = b.alloc([0.0] * ukf.U_SIZE)   # the step's inputs (ukf.U_*)
        self.cfg = b.alloc(cfg if cfg is not None else ukf.default_cfg())
        self.cfg0 = [float(v) for v in self.cfg]
        self.x = b.alloc([0.0] * ukf.NX)
        self.P = b.alloc([0.0] * (ukf.NX * ukf.NX))
        self.out = b.alloc([0.0] * ukf.OUT_SIZE)
        self.tab = [0.0] * model.NTAB
        self.rls = rls.R0Estimator(forget=RLS_FORGET, p0=RLS_P0)
        self.r0_slow = 1.0        # slow mean of the RLS factor, what the filter may use
        self.cap = soh.CapacityEstimator(self.nominal_ah, self.limits.get("v_max"))
        self.ah = 0.0             # charge moved (Ah, discharge positive), for SOH
        self.ready = False
        self.run_s = 0.0          # time since (re-)initialisation
        self.rv_base = self.cfg0[ukf.CFG_RV]
        self.eta_mv = 0.0         # model overpotential |OCV - V| of the last step (mV)
        self.rv_mv2 = 0.0         # voltage noise variance of the last step (mV^2)
        self.bias_mv = 0.0        # slow mean of the voltage innovation (mV)
        self.flat_var = 0.0       # flat-OCV noise variance times the step (mV^2 s), FLAT_*
        self.flat_slope = 1.0     # the OCV secant _flat_noise used (mV per % SOC)
        self.s_bias = 0.0         # SOC error per mV of unseen voltage bias (% / mV)
        self.s_shift = 0.0        # SOC error per unit of relative shift-gain error (%)
        self.cons_p = (0.0, 0.0, 0.0)
        self.flat_age_s = FLAT_EVERY_S
        v_max = self.limits.get("v_max")
        v_min = self.limits.get("v_min")
        self.v_full = (v_max - soh.FULL_V_BELOW) if v_max else None
        self.v_empty = (v_min + RESYNC_EMPTY_V_ABOVE) if v_min else None
        self.resync_armed = True  # an end's re-sync is taken once per visit
        self.resyncs = 0          # how many were taken (full or empty)
        self.stored = None        # (SOC, sigma, h, h sigma) from flash for the boot
        self.boot_from = None     # where the boot's SOC came from: "flash" or "ocv"
        self.errors = 0
        self.status = ukf.OK
        # SOP in C with the native backend (bms_native.sop), else the Python reference;
        # i_dis / i_chg are its output buffers (one value per sop.HORIZONS_S), updated
        # in place by update_sop.
        self.power = sop.make(self.limits, b)
        self.i_dis = self.power.i_dis
        self.i_chg = self.power.i_chg

    # -- start-up -------------------------------------------------------------
    def init(self, soc, temp_c, soc_sigma=None, rested=True):
        """Start the filter at soc (fraction) and temp_c; rested: the cell has been at
        rest (the RC voltages are ~0), else they are uncertain."""
        x, P, n = self.x, self.P, ukf.NX
        for k in range(n * n):
            P[k] = 0.0
        x[ukf.SOC] = soc * 100.0
        x[ukf.V1] = 0.0
        x[ukf.V2] = 0.0
        x[ukf.TC] = temp_c
        x[ukf.TS] = temp_c
        x[ukf.BIAS] = 0.0
        self.shift = 0.0
        if self.hyst is not None and not self.ready:
            self.hyst.reset()     # which branch the cell rests on is not known at boot
            # (a re-initialisation after a numerical failure keeps it: the cell's is)
        sig = list(SIGMA0)
        sig[0] = (soc_sigma * 100.0) if soc_sigma is not None else SIGMA_SOC_GIVEN
        if rested:
            sig[ukf.V1] = sig[ukf.V2] = SIGMA_RC_REST
        for k in range(n):
            P[k * n + k] = sig[k] * sig[k]
        self.cfg[ukf.CFG_RV] = self.cfg0[ukf.CFG_RV]
        self.rv_base = self.cfg0[ukf.CFG_RV]
        self.eta_mv = 0.0
        self.run_s = 0.0
        self.bias_mv = 0.0
        self.s_bias = 0.0
        self.s_shift = 0.0
        self.cons_p = self._cons_ref()
        self.flat_age_s = FLAT_EVERY_S    # look the OCV slope up on the first step
        self.out[ukf.OUT_V] = model.ocv(self.p, soc, temp_c, self.tab)  # prediction at rest
        self.out[ukf.OUT_TS] = temp_c
        self.ready = True

    def restore(self, soc, sigma, h=None, h_sigma=None):
        """Before the first step after a boot: the SOC (fraction) and its sigma, and the
        hysteresis branch h and its sigma, as flash kept them (sohstore, its sigmas
        already grown for the time off). The first measurement decides (see
        BOOT_AGREE_SIGMAS)."""
        self.stored = (soc, sigma, h, h_sigma)

    def soc_state(self):
        """(SOC, its sigma, h, h's sigma) to keep over a reboot, fractions (h and its
        sigma None without hysteresis); None before the first step. The sigma is the
        filter's own with what an unseen bias has put into the SOC (_consider_var): a
        boot starts that sensitivity at zero. The seen bias (bias_mv) and the OCV table's
        error come back by themselves."""
        if not self.ready:
            return None
        p0 = self.P[0]
        p0 = (p0 if p0 > 0.0 else 0.0) + self._consider_var()
        sig = math.sqrt(p0) * 0.01
        hy = self.hyst
        if hy is None:
            return (self.soc(), sig, None, None)
        return (self.soc(), sig, hy.h, hy.sigma)

    def ocv_soc(self, v, temp_c, rest=True):
        """(SOC, sigma), fractions, that a voltage v (ohmic drop compensated) gives through
        the OCV table when the hysteresis branch is not known (see BOOT_BISECT)."""
        p, tab = self.p, self.tab
        s = model.soc_from_ocv(p, v, temp_c, tab, BOOT_BISECT)
        w = soh.ocv_sigma_mv(temp_c) * 0.001
        if self.hyst is not None:
            self.hyst.volts(s, temp_c)
            w += self.hyst.m_v
        lo = model.soc_from_ocv(p, v - w, temp_c, tab, BOOT_BISECT)
        hi = model.soc_from_ocv(p, v + w, temp_c, tab, BOOT_BISECT)
        if lo > s:                 # the coarse ends within their resolution
            lo = s
        if hi < s:
            hi = s
        u = (hi - lo) * 28.867513459481287   # % SOC: 100 / sqrt(12)
        b = SIGMA_SOC_REST if rest else SIGMA_SOC_LOADED
        return 0.5 * (lo + hi), math.sqrt(b * b + u * u) * 0.01

    def init_from_measurement(self, i_a, v, temp_c):
        """Boot: the SOC flash kept (restore) unless the voltage contradicts it, else the
        SOC from the OCV curve (ocv_soc), compensating the ohmic drop if under load."""
        model.lookup(self.p, 0.5, temp_c, self.tab)
        r0 = self.tab[model.R0] if i_a >= 0 else self.tab[model.R0C]
        rest = abs(i_a) < 0.05 * self.nominal_ah
        soc, sig = self.ocv_soc(v + r0 * i_a, temp_c, rest)
        st = self.stored
        self.stored = None
        if st is not None:
            d = soc - st[0]
            k = BOOT_AGREE_SIGMAS
            if d * d <= k * k * (sig * sig + st[1] * st[1]):
                self.init(st[0], temp_c, st[1], rest)
                if self.hyst is not None and st[2] is not None:
                    self.hyst.reset(st[2], st[3])   # no current while off: same branch
                self.boot_from = "flash"
                return
        self.boot_from = "ocv"
        self.init(soc, temp_c, sig, rest)

    # -- the estimator tick ---------------------------------------------------
    def step(self, i_a, v_meas, ts_meas, ta_c, dt_s, i_now=None):
        """One filter step. i_a: the mean current over the step (the charge it moved);
        i_now: the current sampled with v_meas (None: i_a, a current constant over the
        step). NaN measurements are skipped; a numerical failure re-initialises the
        filter around its last good SOC with a wide sigma."""
        if not self.ready:
            if v_meas == v_meas and ts_meas == ts_meas:
                self.init_from_measurement(i_a, v_meas, ts_meas)
            return self.status
        if dt_s <= 0.0:
            return self.status
        cfg = self.cfg
        c_rate = (i_a if i_a >= 0.0 else -i_a) / self.nominal_ah
        cold = 25.0 - self.x[ukf.TC]
        cfg[ukf.CFG_Q + ukf.SOC] = self.cfg0[ukf.CFG_Q + ukf.SOC] + Q_SOC_PER_C * c_rate
        q = Q_TEMP_PER_C2 * c_rate * c_rate
        for k in (ukf.TC, ukf.TS):
            q0 = self.cfg0[ukf.CFG_Q + k]
            cfg[ukf.CFG_Q + k] = math.sqrt(q0 * q0 + q * q)
        # Voltage noise variance = adapted part (the filter's covariance matching, which
        # learns what the schedule misses) + the scheduled model error for this current
        # and temperature, so a burst of high-current error does not linger into a rest.
        extra = V_FLOOR_PER_C * c_rate + (V_FLOOR_COLD * cold if cold > 0.0 else 0.0) \
            + V_FLOOR_REL * self.eta_mv
        extra *= extra
        # flat-OCV noise (FLAT_*), worked out every FLAT_EVERY_S: on rp2 each float is a
        # heap object, and doing it every step of 16 cells stretched the time between a
        # cell's steps from 0.8 to 1.3 s (bench target)
        cap_as = self.capacity_ah() * 3600.0
        self.flat_age_s += dt_s
        if self.flat_age_s >= FLAT_EVERY_S:
            self._consider(cap_as)
            self._flat_noise()
        if self.flat_var > 0.0:
            extra += self.flat_var / dt_s
        v_term = v_meas
        if self.hyst is not None:
            v_meas, var = self._hysteresis(i_a, v_meas, dt_s, cap_as)
            extra += var
        base = self.rv_base
        f0 = self.cfg0[ukf.CFG_V_FLOOR]
        cfg[ukf.CFG_V_FLOOR] = math.sqrt(f0 * f0 + extra)
        c0 = self.cfg0[ukf.CFG_V_CEIL]
        cfg[ukf.CFG_V_CEIL] = math.sqrt(c0 * c0 + extra)
        cfg[ukf.CFG_RV] = base + extra
        # the diffusion shift is an input of the filter step (see model.py)
        self.shift = model.shift_ahead(self.p, self.shift, i_a - self.x[ukf.BIAS] / 1000.0,
                                       self.x[ukf.TC], dt_s)
        u = self.u
        u[ukf.U_I] = i_a
        u[ukf.U_TA] = ta_c
        u[ukf.U_DT] = dt_s
        u[ukf.U_V] = v_meas
        u[ukf.U_TS] = ts_meas
        u[ukf.U_CAP] = cap_as
        u[ukf.U_R0] = self.r0_feed()
        u[ukf.U_SHIFT] = self.shift
        soc_before = self.x[ukf.SOC]
        self.rv_mv2 = cfg[ukf.CFG_RV]  # the voltage noise variance this step uses
        st = self.backend.step(self.x, self.P, self.p, cfg, u, self.out)
        self.status = st
        if st != ukf.OK:
            self.errors += 1
            t = self.x[ukf.TS] if self.x[ukf.TS] == self.x[ukf.TS] else ta_c
            s = soc_before / 100.0 if soc_before == soc_before else 0.5
            self.init(s, t, SIGMA_SOC_LOADED / 100.0, False)
            return st
        self.run_s += dt_s
        # Project the SOC back into the calibrated range: beyond its ends the OCV table is
        # flat (clamped), the voltage says nothing, and a full cell's estimate would drift
        # above 100 % under load and stay there.
        s = self.x[ukf.SOC]
        if s > SOC_HI_PCT:
            self.project_soc(SOC_HI_PCT)
        elif s < SOC_LO_PCT:
            self.project_soc(SOC_LO_PCT)
        if v_meas == v_meas:
            self._resync(i_a - self.x[ukf.BIAS] * 0.001, v_term)
        base = cfg[ukf.CFG_RV] - extra
        self.rv_base = base if base > f0 * f0 else f0 * f0
        self.ah += i_a * dt_s / 3600.0
        if v_meas == v_meas:
            a = dt_s / BIAS_TAU_S if dt_s < BIAS_TAU_S else 1.0
            self.bias_mv += a * (self.out[ukf.OUT_INNOV] - self.bias_mv)
        P = self.P
        fl = SIGMA_SOC_MIN * SIGMA_SOC_MIN
        if P[0] < fl and P[0] > 0.0:
            # Scale row and column 0 together: P stays positive definite.
            f = math.sqrt(fl / P[0])
            n = ukf.NX
            for k in range(1, n):
                P[k] *= f
                P[k * n] *= f
            P[0] = fl
        # RLS on R0 uses the filter's RC states and the table R0 at this point, and the
        # current sampled with the voltage: a step inside the tick moves the mean current
        # only in part while the voltage has moved in full (the demo's fresh cell: factor
        # x2.46 after an hour, its steps 10-20 % into the mean at the first tick).
        soc = self.x[ukf.SOC] / 100.0
        tc = self.x[ukf.TC]
        i_v = i_a if i_now is None else i_now
        model.lookup(self.p, soc, tc, self.tab, model.R0C + 1)  # OCV, R0, R0C: all it needs
        # the step's loaded side picks the table: the current at rest reads a few mA
        # either way, and a step from discharge to rest is a discharge R0
        last = self.rls.last
        i_dir = i_v + last[0] if last is not None else i_v
        r0_tab = self.tab[model.R0] if i_dir >= 0 else self.tab[model.R0C]
        eta = self.tab[model.OCV] - self.out[ukf.OUT_V]
        self.eta_mv = 1000.0 * (eta if eta >= 0.0 else -eta)
        self.rls.update(i_v, v_meas, (self.x[ukf.V1] + self.x[ukf.V2]) / 1000.0, r0_tab, dt_s,
                        self)
        a = dt_s / R0_FEED_TAU_S
        self.r0_slow += (self.rls.scale - self.r0_slow) * (a if a < 1.0 else 1.0)
        if self.run_s >= SETTLE_S:
            self.cap.update(self, i_a, v_meas, dt_s)
        return st

    def _consider(self, cap_as):
        """The SOC's sensitivity to an unseen voltage bias and to the shift's gain error,
        brought up to date every FLAT_EVERY_S (on a Pico, per step it took a 16-cell
        pack's time between a cell's steps from 0.8 to 1.1 s): the voltage updates since
        took the share a of the SOC's variance, which without them would have grown as
        its linear prediction says (the offset state's share and the process noise).
        Their gain was a / slope (the slope floored at 1 mV per %, as soc_sigma's): a bias
        b entered the SOC by gain * b and the shift's error by gain * slope * shift."""
        P = self.P
        p0, psb, pbb = self.cons_p
        dt = self.flat_age_s
        c = 0.1 * dt / cap_as          # % SOC per mA of offset over the time
        q = self.cfg[ukf.CFG_Q + ukf.SOC]
        pred = p0 + c * (2.0 * psb + c * pbb) + q * q * dt
        self.cons_p = self._cons_ref()
        a = 1.0 - P[0] / pred if pred > 0.0 else 0.0
        a = 0.0 if a < 0.0 else (1.0 if a > 1.0 else a)
        h = self.flat_slope
        k = a / (h if h > 1.0 else 1.0)
        self.s_bias = (1.0 - a) * self.s_bias + k
        self.s_shift = (1.0 - a) * self.s_shift + k * h * 100.0 * self.shift

    def _cons_ref(self):
        """What _consider compares the next SOC variance with: P's SOC variance, its
        covariance with the offset state and the offset's variance, now."""
        P = self.P
        return (P[0], P[ukf.BIAS], P[ukf.BIAS * (ukf.NX + 1)])

    def _consider_var(self):
        """%^2: what an unseen bias and the shift's error have put into the SOC."""
        sb = self.s_bias * BIAS_BASE_MV
        ss = self.s_shift * SHIFT_SIGMA_REL
        return sb * sb + ss * ss

    def project_soc(self, bound):
        """Put the SOC on bound (%) and move the other states with it by their covariance
        with the SOC: the whole estimate projected onto the bound (weighted by P), not
        the SOC alone. Clipping only the SOC kept what the same update had put into the
        states correlated with it: a PyBaMM LFP resting at 3.60 V at full learnt +70 mA
        of a true +30 mA current offset in five minutes, and its SOC then ran 1.8 points
        high over a 2 h drive (the bench's highway rows)."""
        x, P, n = self.x, self.P, ukf.NX
        if P[0] <= 0.0:
            x[ukf.SOC] = bound
            return
        f = (x[ukf.SOC] - bound) / P[0]
        for k in range(1, n):
            x[k] -= f * P[k * n]
        x[ukf.SOC] = bound

    def _hysteresis(self, i_a, v, dt_s, cap_as):
        """Advance the hysteresis with the (offset-corrected) current in a cell of cap_as
        (A*s); returns the voltage without M*h and the variance (mV^2) of what is not known
        about h (HYST_PERSIST_S)."""
        hy = self.hyst
        hy.advance(i_a - self.x[ukf.BIAS] * 0.001, dt_s, cap_as)
        hv, hs = hy.volts(self.x[ukf.SOC] * 0.01, self.x[ukf.TC])
        self.hyst_v = hv
        hs *= 1000.0
        return v - hv, hs * hs * (HYST_PERSIST_S + hy.still_s) / dt_s

    def _flat_noise(self):
        """flat_var (mV^2 s): the flat-OCV noise's variance times the step, from the OCV's
        secant (mV per % SOC) over +-FLAT_SIGMAS sigma around the SOC and the model's
        expected error E (see FLAT_*)."""
        self.flat_age_s = 0.0
        p0 = self.P[0]
        w = FLAT_SIGMAS * 0.01 * math.sqrt(p0 if p0 > 0.0 else 0.0)
        w = w if w > 0.02 else 0.02
        soc = self.x[ukf.SOC] * 0.01
        lo = soc - w if soc > w else 0.0
        hi = soc + w if soc + w < 1.0 else 1.0
        tc = self.x[ukf.TC]
        slope = 10.0 * (model.ocv(self.p, hi, tc, self.tab)
                        - model.ocv(self.p, lo, tc, self.tab)) / (hi - lo)
        self.flat_slope = slope
        e = FLAT_MODEL_MV + FLAT_REL * self.eta_mv
        d = SHIFT_SIGMA_REL * 100.0 * self.shift * slope
        e = math.sqrt(e * e + d * d)
        g = FLAT_SOC_PCT * slope / e
        self.flat_var = e * e * FLAT_TAU_S * (1.0 - g * g) if g < 1.0 else 0.0

    def _resync(self, i_a, v):
        """The full / empty re-sync (see RESYNC_*); i_a: the current less the learnt offset,
        v: the terminal voltage."""
        c = self.nominal_ah
        full = (self.v_full is not None and v >= self.v_full
                and -RESYNC_TAPER_C * c < i_a < -soh.REST_C * c)
        empty = (self.v_empty is not None and v <= self.v_empty
                 and 0.0 <= i_a < RESYNC_EMPTY_C * c)
        if not (full or empty):
            # re-armed once the voltage has clearly left both ends
            if (not self.resync_armed
                    and (self.v_full is None or v < self.v_full - RESYNC_REARM_V)
                    and (self.v_empty is None or v > self.v_empty + RESYNC_REARM_V)):
                self.resync_armed = True
            return
        if not self.resync_armed:
            return
        x = self.x
        tc = x[ukf.TC]
        cold = 25.0 - tc if tc < 25.0 else 0.0
        if full:
            z = soh.FULL_SOC - soh.FULL_COLD * cold
            sig = soh.FULL_SIGMA
        else:
            tab = self.tab
            model.lookup(self.p, x[ukf.SOC] * 0.01, tc, tab, model.R0 + 1)
            drop_mv = 1000.0 * self.tab[model.R0] * i_a + x[ukf.V1] + x[ukf.V2]
            z = model.soc_from_ocv(self.p, v - self.hyst_v + drop_mv * 0.001, tc, tab)
            slope = self._ocv_slope(z, tc)
            if slope <= 0.1:
                return
            e = soh.ocv_sigma_mv(tc)
            r = soh.RELAX_FRAC * drop_mv
            sig = math.sqrt(e * e + r * r) / slope * 0.01
        self.resync_armed = False
        self.resyncs += 1
        self.pseudo_soc(z, sig)

    def pseudo_soc(self, soc, sigma):
        """A direct measurement of SOC (fractions) with variance sigma^2: one Kalman update
        of x and P with H = e_SOC (the correlated states move with the SOC, P stays
        symmetric and positive definite), or, when the two disagree beyond 3 sigma of
        their sum (the filter was wrong and sure of it, as on a flat OCV), a reset of the
        SOC to the measurement and of P's SOC row and column to its variance."""
        x, P, n = self.x, self.P, ukf.NX
        r = sigma * sigma * 1e4
        s = P[0] + r
        if not s > 0.0:
            return
        d = soc * 100.0 - x[ukf.SOC]
        reset = d * d > 9.0 * s
        # what was read from the voltage before keeps the share 1 - gain of the SOC
        f = 0.0 if reset else r / s
        self.s_bias *= f
        self.s_shift *= f
        if reset:
            x[ukf.SOC] = soc * 100.0
            for k in range(1, n):
                P[k] = 0.0
                P[k * n] = 0.0
            P[0] = r
        else:
            self._scalar_update(ukf.SOC, d, s)
            if x[ukf.SOC] > SOC_HI_PCT:
                x[ukf.SOC] = SOC_HI_PCT
            elif x[ukf.SOC] < SOC_LO_PCT:
                x[ukf.SOC] = SOC_LO_PCT
        # this update's share of the SOC's variance is not the voltage's (_consider)
        self.cons_p = (P[0], self.cons_p[1], self.cons_p[2])

    def _scalar_update(self, k, d, s):
        """One Kalman update of x and P by a direct measurement of state k: d the
        measurement less x[k], s its variance plus P's (H = e_k: every state moves by its
        covariance with state k, P stays symmetric)."""
        x, P, n = self.x, self.P, ukf.NX
        col = [P[j * n + k] for j in range(n)]   # column k (= row k)
        for a in range(n):
            ka = col[a] / s
            x[a] += ka * d
            for b in range(a, n):
                v = P[a * n + b] - ka * col[b]
                P[a * n + b] = v
                P[b * n + a] = v

    def current_zero(self, zero_ma, sigma_ma):
        """The current sensor's offset (mA, sigma_ma) read while no current could flow
        (currentzero.py): a direct measurement of the offset state. The SOC moves with it
        by what the filter had put of that offset into the SOC (their covariance)."""
        P, b = self.P, ukf.BIAS * (ukf.NX + 1)
        s = P[b] + sigma_ma * sigma_ma
        if not self.ready or not s > 0.0 or zero_ma != zero_ma:
            return
        self._scalar_update(ukf.BIAS, zero_ma - self.x[ukf.BIAS], s)
        # not a voltage reading: _consider starts its comparison from here
        self.cons_p = self._cons_ref()

    def update_sop(self, ta_c):
        self.power.update(self.p, self.x, ta_c, self.tab, self.capacity_ah() * 3600.0,
                          self.r0_feed(), self.shift)

    # -- results --------------------------------------------------------------
    def soc(self):
        return self.x[ukf.SOC] / 100.0

    def soc_sigma(self):
        """SOC sigma (fraction): the filter's own, plus what an unseen voltage bias and the
        diffusion shift's error have put into the SOC (_consider), what the bias seen now
        does through the local OCV slope, and the OCV table's own error."""
        v = self.P[0]
        v = v if v > 0.0 else 0.0
        v += self._consider_var()
        if self.bias_mv != 0.0:
            slope = self._ocv_slope(self.x[ukf.SOC] / 100.0, self.x[ukf.TC])
            if slope < 1.0:
                slope = 1.0        # mV per % SOC, flat regions floored
            v += self.bias_mv * self.bias_mv / (slope * slope)
        v += SIGMA_SOC_OCV * SIGMA_SOC_OCV
        return math.sqrt(v) / 100.0

    def _ocv_slope(self, soc, tc):
        """The OCV's slope at soc (mV per % SOC), over the 4 points from soc - 2."""
        lo = soc - 0.02 if soc > 0.02 else 0.0
        return 250.0 * (model.ocv(self.p, lo + 0.04, tc, self.tab)
                        - model.ocv(self.p, lo, tc, self.tab))

    def temp_core_c(self):
        return self.x[ukf.TC]

    def voltage_pred_v(self):
        return self.out[ukf.OUT_V] + self.hyst_v

    def bias_a(self):
        return self.x[ukf.BIAS] / 1000.0

    def r0_feed(self):
        d = self.r0_slow - 1.0
        if -R0_FEED_DEADBAND <= d <= R0_FEED_DEADBAND:
            return 1.0
        return self.r0_slow - (R0_FEED_DEADBAND if d > 0 else -R0_FEED_DEADBAND)

    def r0_ohm(self):
        """Online R0 (discharge) at the filter's SOC and core temperature: the table
        value times the RLS factor."""
        model.lookup(self.p, self.soc(), self.temp_core_c(), self.tab)
        return self.tab[model.R0] * self.rls.scale

    def r0_growth(self):
        """Resistance growth against the calibration (1.0 = as calibrated)."""
        return self.r0_slow

    def capacity_ah(self):
        return self.cap.feed_ah()   # soh.py: anchored capacity, the calibration's until then

    def soh(self):
        return self.cap.soh()
