"""Trends of state of health and resistance, and the remaining useful life they imply.

One estimator for the single-device report and the fleet: a weighted straight-line fit of
a health quantity (SOH, capacity or R0) against age (days, or equivalent full cycles),
with the parameters' covariance. The fit's 2-sigma band around the trend gives the
uncertainty; the remaining life to a threshold (80 % and 70 % SOH) is where the trend
crosses it, between where the band's edges do. A straight line is what a few months of
field data support: it is the conservative choice once the knee of a fade is not yet
seen, and the band widens the further it is carried."""
import math

import numpy as np

THRESHOLDS = (0.8, 0.7)
K = 2.0  # band half-width in sigmas


class Trend:
    """y = a + b * (x - x0), fitted by weighted least squares."""

    def __init__(self, x, y, sigma=None):
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        ok = np.isfinite(x) & np.isfinite(y)
        if sigma is not None:
            s = np.asarray(sigma, float)
            s = np.where(np.isfinite(s) & (s > 0), s, np.nan)
            ok &= np.isfinite(s)
        x, y = x[ok], y[ok]
        self.n = len(x)
        if self.n < 3 or np.ptp(x) <= 0:
            raise ValueError("a trend needs at least 3 points at different ages")
        w = np.ones(self.n) if sigma is None else 1.0 / np.asarray(sigma, float)[ok] ** 2
        self.x0 = float(np.average(x, weights=w))
        X = np.column_stack([np.ones(self.n), x - self.x0])
        W = w[:, None]
        A = X.T @ (W * X)
        coef = np.linalg.solve(A, X.T @ (w * y))
        res = y - X @ coef
        dof = max(1, self.n - 2)
        # scale by the scatter actually seen (the given sigmas may be too small or large)
        chi2 = float(np.sum(w * res ** 2)) / dof
        self.cov = np.linalg.inv(A) * max(chi2, 1e-12)
        self.a, self.b = float(coef[0]), float(coef[1])
        self.resid_sd = float(np.sqrt(np.sum(res ** 2) / dof))
        self.x_first, self.x_last = float(x.min()), float(x.max())

    @property
    def slope_sigma(self):
        return math.sqrt(self.cov[1, 1])

    def at(self, x):
        x = np.asarray(x, float) - self.x0
        return self.a + self.b * x

    def sd(self, x):
        x = np.asarray(x, float) - self.x0
        return np.sqrt(self.cov[0, 0] + 2 * x * self.cov[0, 1] + x * x * self.cov[1, 1])

    def band(self, x):
        m, s = self.at(x), self.sd(x)
        return m - K * s, m + K * s

    def crossing(self, level, horizon):
        """Ages (mid, early, late) at which the trend and its band edges reach `level` going
        down, searched up to x_last + horizon; None where it does not within that."""
        xs = np.linspace(self.x_last, self.x_last + horizon, 4001)
        lo, hi = self.band(xs)

        def first(v):
            below = np.nonzero(v <= level)[0]
            return float(xs[below[0]]) if len(below) else None

        return first(self.at(xs)), first(lo), first(hi)


def remaining(trend, level, horizon):
    """Remaining (mid, low, high) from the last age to `level`: low is the earliest (the
    band's lower edge), high the latest (None: not within the horizon)."""
    mid, early, late = trend.crossing(level, horizon)

    def rel(v):
        return None if v is None else max(0.0, v - trend.x_last)
    return rel(mid), rel(early), rel(late)


def soh_outlook(x, soh, sigma=None, horizon=None, thresholds=THRESHOLDS):
    """SOH trend and remaining life to each threshold, in the units of x (days or cycles).
    Returns a dict, or None when the history is too short for a trend."""
    try:
        t = Trend(x, soh, sigma)
    except ValueError:
        return None
    span = t.x_last - t.x_first
    horizon = horizon if horizon is not None else max(20 * span, 3650.0)
    out = {"trend": t, "n": t.n, "span": span, "soh_now": float(t.at(t.x_last)),
           "fade_per_unit": -t.b, "fade_sigma": t.slope_sigma,
           # a fade the data cannot tell from zero gives no finite life
           "fading": t.b < 0 and -t.b > K * t.slope_sigma, "rul": {}}
    for level in thresholds:
        out["rul"][level] = remaining(t, level, horizon)
    return out


def growth_outlook(x, value, sigma=None):
    """Trend of a quantity that grows with age (R0): relative growth per unit of x, with
    its sigma, against the fitted value at the first age. None when too short."""
    try:
        t = Trend(x, value, sigma)
    except ValueError:
        return None
    base = float(t.at(t.x_first))
    if not base > 0:
        return None
    return {"trend": t, "n": t.n, "growth_per_unit": t.b / base,
            "growth_sigma": t.slope_sigma / base, "now": float(t.at(t.x_last)),
            "first": base}


def equivalent_cycles(amp_seconds, capacity_ah):
    """Cumulative equivalent full cycles from charge moved per period (A*s): one cycle is
    one full discharge and one full charge, 2 x capacity."""
    a = np.nan_to_num(np.asarray(amp_seconds, float))
    return np.cumsum(a) / 3600.0 / (2.0 * capacity_ah)


def describe(out, unit="days"):
    """One line per threshold, e.g. `80 %: 412 days (350..490)`."""
    if out is None:
        return ["not enough history for a trend (3 points at different ages are needed)"]
    per, scale = {"days": ("year", 365.0), "cycles": ("100 cycles", 100.0)}.get(
        unit, (unit, 1.0))
    lines = ["SOH now %.1f %%, fade %.2f %% per %s (+/- %.2f)"
             % (100 * out["soh_now"], 100 * scale * out["fade_per_unit"], per,
                100 * scale * K * out["fade_sigma"])]
    for level, (mid, lo, hi) in out["rul"].items():
        if mid is None and lo is None:
            lines.append("%d %%: beyond the horizon" % round(100 * level))
            continue
        lines.append("%d %%: %s %s (%s..%s)" % (round(100 * level), fmt(mid), unit, fmt(lo),
                                                 fmt(hi) if hi is not None else "later"))
    return lines


def fmt(v):
    if v is None:
        return "-"
    return "%.0f" % v
