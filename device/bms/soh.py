# State of health: capacity by weighted total least squares (Plett's approach, scaled
# form with forgetting), resistance growth from the RLS factor.
#
# Each finished segment gives a pair (x = charge moved in Ah, y = SOC change from the
# filter). Both are noisy: x by the current sensor (offset x duration), y by the
# filter's SOC sigma at both ends, so ordinary least squares would be biased. The
# model is y = x / Q; the estimate of 1/Q is the scaled-TLS slope of the weighted sums.
import math


class CapacityEstimator:
    def __init__(self, nominal_ah, prior_sigma=0.1, min_swing=0.2, max_sigma=0.03,
                 forget=0.98, k=1.0):
        self.nominal_ah = nominal_ah
        self.min_swing = min_swing      # SOC change that closes a segment
        self.max_sigma = max_sigma      # only trust SOC ends this certain
        self.forget = forget
        self.k = k                      # ratio sigma_y^2 / sigma_x^2 after weighting
        self.reset(nominal_ah, prior_sigma)

    def reset(self, capacity_ah, prior_sigma=0.05):
        # The calibration's capacity enters as a prior pair (x = Q, y = 1).
        w = 1.0 / (prior_sigma * prior_sigma)
        self.sxx = w * capacity_ah * capacity_ah
        self.sxy = w * capacity_ah
        self.syy = w
        self.capacity_ah = capacity_ah
        self.sigma_ah = prior_sigma * capacity_ah
        self.pairs = 0
        self._start = None  # (soc, sigma, ah counter)

    def add_pair(self, x_ah, y_soc, sigma_y):
        f = self.forget
        w = 1.0 / (sigma_y * sigma_y)
        self.sxx = f * self.sxx + w * x_ah * x_ah
        self.sxy = f * self.sxy + w * x_ah * y_soc
        self.syy = f * self.syy + w * y_soc * y_soc
        self.pairs += 1
        self._solve()

    def _solve(self):
        sxx, sxy, syy, k = self.sxx, self.sxy, self.syy, self.k
        if sxy <= 0.0:
            return
        d = syy - k * sxx
        b = (d + math.sqrt(d * d + 4.0 * k * sxy * sxy)) / (2.0 * sxy)  # slope = 1/Q
        if b <= 0.0:
            return
        self.capacity_ah = 1.0 / b
        # Curvature of the weighted cost: information about b is ~ sxx.
        sigma_b = 1.0 / math.sqrt(sxx)
        self.sigma_ah = sigma_b / (b * b)

    def update(self, soc, soc_sigma, ah_counter):
        """Feed the filter's SOC (fraction), its sigma and the integer-backed charge
        counter in Ah (discharge positive). Closes a segment on a large enough swing."""
        if soc_sigma > self.max_sigma:
            return False
        if self._start is None:
            self._start = (soc, soc_sigma, ah_counter)
            return False
        s0, sig0, ah0 = self._start
        # Close the segment on the charge counted, not on the noisy SOC: choosing the
        # moment by the SOC would pick its noise and bias the capacity low.
        dx = ah_counter - ah0
        swing = self.min_swing * self.nominal_ah
        if -swing < dx < swing:
            return False
        dy = s0 - soc
        self.add_pair(ah_counter - ah0, dy, math.sqrt(sig0 * sig0 + soc_sigma * soc_sigma))
        self._start = (soc, soc_sigma, ah_counter)
        return True

    def soh(self):
        return self.capacity_ah / self.nominal_ah

    def soh_sigma(self):
        return self.sigma_ah / self.nominal_ah
