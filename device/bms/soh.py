# State of health: capacity from charge counted between two well-known SOC points, and
# resistance growth from the RLS factor, each with a sigma.
#
# A maker's pack rarely sees a full cycle, but it often sits still, and now and then it
# is charged full. Both pin its SOC without the filter's capacity:
#   - a long rest on a steep part of the OCV: the relaxed voltage (plus the RC voltage
#     the filter still models) read through the OCV table gives the SOC, with a sigma of
#     the OCV's known error over the local slope (a few mV over ~9 mV/% mid-SOC on an
#     NMC cell: about 1 %); on the flat parts the sigma is too large and the rest is
#     not used;
#   - the end of a CV charge (at the upper limit, the current tapered below ~C/20): full,
#     up to the little a CV hold to C/20 leaves, more in the cold (FULL_SOC, FULL_COLD).
# Between two such anchors the charge moved over the SOC change is one capacity
# measurement. The charge is counted in integer mA*s, corrected by the filter's
# current-offset state, and not at rest: a resting cell moves no charge, and an offset
# the filter has not learnt (30 mA over a night's rest: 5 % of a 5 Ah cell) would
# otherwise count as if it did (the price: a standing load below REST_C, a small
# always-on device, is not counted either). Its sigma comes from both anchors' sigmas
# and what an offset error does over the time under load between them. Measurements
# are combined by their information with a fading memory (the capacity may age), the
# calibration's (or flash's) capacity entering as a prior; the sigma is widened by the
# scatter of the measurements when they disagree with their own sigmas (Birge ratio),
# so it stays honest when a sigma was optimistic.
#
# Per estimator step the work is a few comparisons and one multiply-add (rest time,
# the rest voltage's running mean, the charge counter); the OCV is read only a few
# times per long rest, and the capacity is solved only when an anchor closes.
import math

from bms import model, ukf

REST_C = 0.02          # |current| below this C-rate is rest
REST_MIN_S = 1800.0    # a rest anchors the SOC only after this long
REST_CHECK_S = 600.0   # ... and is re-read this often while it lasts (relaxing further)
V_AVG_S = 60.0         # time constant of the rest voltage's running mean
OCV_SIGMA_MV = 6.0     # the OCV table's error on this cell (fit bias, ageing's shift)
OCV_SIGMA_COLD = 0.5   # ... plus this per degC below 25 degC (mV): the tables between
                       # their temperatures, and the cold's slower relaxation
RELAX_FRAC = 0.5       # share of the filter's remaining RC voltage counted as error
MAX_ANCHOR_SIGMA = 0.015   # rests whose SOC is less certain than this are not used
FULL_V_BELOW = 0.02    # "at the upper limit": within this of limits.v_max
TAPER_C = 0.06         # the CV current has tapered below this C-rate
# SOC at the end of a CV hold to ~C/20: what the taper current still leaves, more in the
# cold where the cell's resistance is higher. These are the LG M50's (PyBaMM OKane2022:
# 98.6 % at 25 degC, 97.6 % at 10 degC, aged or not); a calibration of another cell
# should carry its own.
FULL_SOC = 0.985
FULL_COLD = 0.0007     # per degC below 25 degC
FULL_SIGMA = 0.01
MIN_SWING = 0.2        # SOC change between two anchors that makes a measurement
MAX_SPAN_S = 172800.0  # anchors further apart than this are not paired
BIAS_SIGMA_MIN_MA = 5.0    # floor on the current offset's uncertainty
PRIOR_SIGMA = 0.1      # an unlearned cell's capacity: +-10 % of the calibration's
FORGET = 0.9           # memory of ~10 measurements (days of use)
R_SYS = 0.05           # the RLS factor's systematic spread (pulse R depends on current)
R_AVG = 0.02           # weight of one RLS update in the factor's running variance


def ocv_sigma_mv(temp_c):
    """The OCV table's error (mV) at temp_c (OCV_SIGMA_MV, more in the cold)."""
    return OCV_SIGMA_MV + (OCV_SIGMA_COLD * (25.0 - temp_c) if temp_c < 25.0 else 0.0)


class CapacityEstimator:
    def __init__(self, nominal_ah, v_max=None):
        self.nominal_ah = nominal_ah
        self.v_full = (v_max - FULL_V_BELOW) if v_max else None
        self.rest_a = REST_C * nominal_ah
        self.taper_a = TAPER_C * nominal_ah
        self.reset(nominal_ah, PRIOR_SIGMA * nominal_ah)

    def reset(self, capacity_ah, sigma_ah):
        """Start from a prior: the calibration's capacity, or what flash remembers."""
        w = 1.0 / (sigma_ah * sigma_ah)
        self.info = w
        self.wsum = w * capacity_ah
        self.w2 = w * capacity_ah * capacity_ah
        self.n_eff = 1.0
        self.capacity_ah = capacity_ah
        self.sigma_ah = sigma_ah
        self.pairs = 0
        self.last_pair_ah = None     # the last measurement and its sigma (diagnostics)
        self.last_pair_sigma = None
        # anchor: SOC, sigma, seconds since it; the counter counts from it
        self.anchor_soc = None
        self.anchor_sigma = 0.0
        self.span_s = 0.0
        self.load_s = 0.0            # time not at rest since the anchor
        self.q_mas = 0               # charge since the anchor, mA*s (discharge positive)
        self._rem = 0.0
        # candidate anchor of the present rest / CV taper: SOC, sigma, counter then
        self.cand_soc = None
        self.cand_sigma = 0.0
        self.cand_q = 0
        self.cand_full = False
        self.rest_s = 0.0
        self._checked_s = 0.0
        self.v_avg = 0.0
        # resistance: running variance of the RLS factor around its slow mean
        self.r_var = 0.0
        self._rls_n = 0

    # -- per estimator step ---------------------------------------------------------
    def update(self, est, i_a, v, dt_s):
        """After each filter step of CellEstimator est: current (A, discharge positive),
        measured voltage (NaN if missing), step length."""
        b_ma = est.x[ukf.BIAS]
        i_true = i_a - b_ma * 0.001
        self.span_s += dt_s
        rest = -self.rest_a < i_true < self.rest_a
        if not rest:
            q = (i_a * 1000.0 - b_ma) * dt_s + self._rem
            n = int(q)
            self.q_mas += n
            self._rem = q - n
            self.load_s += dt_s
        rls = est.rls
        if rls.updates != self._rls_n:
            self._rls_n = rls.updates
            d = rls.scale - est.r0_slow
            self.r_var += R_AVG * (d * d - self.r_var)
        if rest:
            if v != v:
                return
            if self.rest_s == 0.0 or self.cand_full:
                if self.cand_full:
                    self._close(est)
                self.v_avg = v
            else:
                a = dt_s / V_AVG_S
                self.v_avg += (v - self.v_avg) * (a if a < 1.0 else 1.0)
            self.rest_s += dt_s
            if self.rest_s >= REST_MIN_S and self.rest_s - self._checked_s >= REST_CHECK_S:
                self._checked_s = self.rest_s
                self._read_rest(est)
            return
        if self.rest_s > 0.0:
            self.rest_s = 0.0
            self._checked_s = 0.0
            if self.cand_soc is not None:
                self._close(est)
        vf = self.v_full
        if vf is not None and v == v and v >= vf and i_true < 0.0:
            if i_true > -self.taper_a:
                # CV taper: the latest such step is the anchor
                cold = 25.0 - est.x[ukf.TC]
                self.cand_soc = FULL_SOC - (FULL_COLD * cold if cold > 0.0 else 0.0)
                self.cand_sigma = FULL_SIGMA
                self.cand_q = self.q_mas
                self.cand_full = True
        elif self.cand_full:
            self._close(est)

    def _read_rest(self, est):
        """The relaxed voltage through the OCV table: a candidate anchor if steep enough."""
        p, tab, x = est.p, est.tab, est.x
        tc = x[ukf.TC]
        rc_mv = x[ukf.V1] + x[ukf.V2]
        soc = model.soc_from_ocv(p, self.v_avg + rc_mv * 0.001, tc, tab)
        lo = soc - 0.02 if soc > 0.02 else 0.0
        hi = lo + 0.04
        if hi > 1.0:
            hi = 1.0
            lo = 0.96
        slope = 250.0 * (model.ocv(p, hi, tc, tab) - model.ocv(p, lo, tc, tab))  # mV/%
        if slope <= 0.1:
            return
        r = RELAX_FRAC * rc_mv
        e = ocv_sigma_mv(tc)
        sig = math.sqrt(e * e + r * r) / slope * 0.01
        if sig <= MAX_ANCHOR_SIGMA and (self.cand_soc is None or sig <= 1.2 * self.cand_sigma):
            self.cand_soc = soc
            self.cand_sigma = sig
            self.cand_q = self.q_mas

    def _close(self, est):
        """The rest or taper has ended: its candidate becomes the anchor, paired with the
        previous one when far enough apart."""
        soc, sig, q = self.cand_soc, self.cand_sigma, self.cand_q
        self.cand_soc = None
        self.cand_full = False
        a = self.anchor_soc
        if a is not None and self.span_s <= MAX_SPAN_S:
            dsoc = a - soc
            if dsoc >= MIN_SWING or dsoc <= -MIN_SWING:
                pb = est.P[ukf.BIAS * (ukf.NX + 1)]
                self._measure(q / 3600000.0, dsoc,
                              math.sqrt(sig * sig + self.anchor_sigma * self.anchor_sigma),
                              math.sqrt(pb) if pb > 0.0 else 0.0)
            elif sig > self.anchor_sigma:
                return   # too close: keep the surer anchor (and its counter)
        self.anchor_soc = soc
        self.anchor_sigma = sig
        self.q_mas -= q
        self.span_s = 0.0
        self.load_s = 0.0

    def _measure(self, dq_ah, dsoc, sig_soc, sig_bias_ma):
        c = dq_ah / dsoc
        if c <= 0.0:
            return
        sb = sig_bias_ma if sig_bias_ma > BIAS_SIGMA_MIN_MA else BIAS_SIGMA_MIN_MA
        sq = sb * self.load_s / 3600000.0
        s2 = (c * sig_soc / dsoc) ** 2 + (sq / dsoc) ** 2
        self.add(c, s2)

    def add(self, c_ah, var_ah2):
        """One capacity measurement and its variance, with the fading memory."""
        f = FORGET
        w = 1.0 / var_ah2
        self.info = f * self.info + w
        self.wsum = f * self.wsum + w * c_ah
        self.w2 = f * self.w2 + w * c_ah * c_ah
        self.n_eff = f * self.n_eff + 1.0
        self.pairs += 1
        self.last_pair_ah = c_ah
        self.last_pair_sigma = math.sqrt(var_ah2)
        mean = self.wsum / self.info
        self.capacity_ah = mean
        s2 = 1.0 / self.info
        if self.n_eff > 1.5:
            chi2 = (self.w2 - self.info * mean * mean) / (self.n_eff - 1.0)
            if chi2 > 1.0:
                s2 *= chi2
        self.sigma_ah = math.sqrt(s2)

    # -- results --------------------------------------------------------------------
    def feed_ah(self):
        """The capacity the filter uses."""
        return self.capacity_ah

    def soh(self):
        return self.capacity_ah / self.nominal_ah

    def soh_sigma(self):
        return self.sigma_ah / self.nominal_ah

    def r_sigma(self, est):
        """Sigma of the resistance growth (est.r0_slow): the RLS factor's own scatter
        plus its systematic part."""
        return math.sqrt(self.r_var * 0.1 + R_SYS * R_SYS) * est.r0_slow


def pulse_growth(est, soc=0.5, temp_c=25.0, pulse_s=10.0):
    """Growth of the 1C pulse resistance over pulse_s (the drop after a step from rest,
    over the current) that the RLS factor on R0 means, against the calibration: the R0
    part scaled, the RC pairs and the kinetic term as calibrated. Comparable with a
    measured 10 s resistance; not for the estimator tick."""
    p, tab = est.p, est.tab
    model.lookup(p, soc, temp_c, tab)
    i = est.nominal_ah
    rest = (tab[model.R1] * (1.0 - math.exp(-pulse_s / tab[model.TAU1]))
            + tab[model.R2] * (1.0 - math.exp(-pulse_s / tab[model.TAU2]))) * i \
        + model.kinetic_v(i, tab[model.I0], temp_c)
    r0 = tab[model.R0] * i
    return (r0 * est.r0_slow + rest) / (r0 + rest)
