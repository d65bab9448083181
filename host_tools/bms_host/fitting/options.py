"""Fit options: the defaults, the grids and ranges they start from, and the reader of an
options file (calibration/options/*.json)."""
import json
import math

from .. import UserError


FIT_VERSION = "fit-5"


# SOC grid: denser at the ends, where OCV bends.
SOC_GRID = (0.0, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
            0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0)


# The multi-level pulse test ("pulses") gives the least squares the current levels the
# kinetic term needs and pulses of 30 s; the first estimates (time constants) still come
# from the HPPC alone. "minorloops" (a cell with voltage hysteresis) shows how fast a
# branch switch goes (fitting/hysteresis.py).
FIT_PROFILES = ("pocv_dis", "pocv_chg", "hppc", "pulses", "dst", "chgsteps", "rate",
                "minorloops")


# The two RC pairs' time constants (s), from the HPPC pulses (opts tau1_range_s,
# tau2_range_s; fit --tau1-max). The ranges overlap: at 0 degC the fast pair slides to
# 45-60 s. Splitting them (--tau1-max 30) fits the LG M50's cold 2C charge better
# (held-out fastcharge_0C 17 -> 12 mV) and its cold surface temperature, but costs the
# LFP's fastcharge_m10C surface temperature (0.45 -> 0.52 degC): a choice per cell.
TAU1_RANGE = (0.5, 60.0)


TAU2_RANGE = (40.0, 4000.0)


REST_OCV_S = 600.0  # rested this long, the terminal voltage is the OCV the filter sees


I0_ACTIVATION_K = 4000.0  # Ea/R of the exchange current beyond the data (~33 kJ/mol)


def default_options():
    return {"soc_grid": list(SOC_GRID), "bias_weight": 1.0, "smooth_r": 3e-3,
            "smooth_r_temp": 0.0, "smooth_ocv": 0.3, "prior_ocv": 0.1, "prior_r": 1e-3,
            "core_temp_weight": 0.3, "thermal_heat": "data", "fit_heat_v2": True,
            "r2c_tie": 1e-2,
            # solid-diffusion shift (model.py): "search" tries these against none: gain g
            # (SOC/A) on discharge and g_chg on charge (default g), tau at 25 degC, and
            # activation e_k = Ea/R (default shift_activation_k, 3600 K ~ 30 kJ/mol).
            # The last is an LFP cathode's, read off its 1C rate test: large, flat in
            # temperature and one-sided (the discharge stops with 15 % SOC left, the
            # charge with 1 %; the rest after relaxes over ~300 s)
            "diffusion": "search",
            "shift_candidates": [{"g": 0.0015, "tau_s": 100.0},
                                 {"g": 0.07, "g_chg": 0.01, "tau_s": 300.0, "e_k": 0.0}],
            "shift_activation_k": 3600.0,
            # rows rested >= 10 min count this many times: the OCV the filter sees at rest
            "rest_weight": 10,
            # those rows' target: the voltage their rest relaxes to, extrapolated from
            # its tail (problem._relaxed_voltage), not the voltage still drifting there.
            # On for the LG M50 (calibration/options/lgm50.json): its 30-min cold rests
            # had pulled the 0 / -10 degC OCV 5 / 11 mV RMS below PyBaMM's (now 3 / 4)
            "rest_relax": False,
            # OCV nodes between rests that no rest reaches, from this SOC up: pulled this
            # much more firmly to the C/20 curve (LFP: the charge legs bent its top 20-35
            # mV up). Not below: there the OCV takes up the end-of-discharge knee that the
            # diffusion shift only approximates (LFP cp 5-7 -> 10-17 mV when held)
            "prior_ocv_gap": 10.0, "prior_ocv_gap_from": 0.5,
            # the OCV node at the top of the grid: its pull to the C/20 curve's rested
            # full cell this much firmer (LFP: the loaded rows of every discharge's first
            # percent pulled it 37 mV below the 3.600 V that each trace rests at there,
            # and a filter whose SOC sits at 100 % put that gap into the current offset)
            "prior_ocv_full": 1.0,
            # OCV nodes below the lowest rested SOC: their pull to the C/20 curve this
            # much firmer (1: left to the loaded rows, which bend them to take up the
            # end-of-discharge knee; LFP at 9 % SOC: 36 mV above the cell's rested OCV)
            "prior_ocv_low": 1.0,
            # a table column above the warmest ambient, Arrhenius-extrapolated (from the
            # HPPC tables, then once more from the fitted ones: ext_passes fits in all)
            "t_extend_c": 65.0, "ext_passes": 2,
            "tau1_range_s": list(TAU1_RANGE), "tau2_range_s": list(TAU2_RANGE),
            "kinetic": True, "i0_soc_knots": [0.0, 0.2, 0.5, 0.8, 1.0],
            "i0_range_a": [0.05, 1e4], "i0_smooth": 0.01, "i0_smooth_slope": 0.002,
            "i0_smooth_t": 0.002, "i0_max_nfev": 60,
            "ls_pocv": False, "profile_weights": {},
            # what a trace's weight is divided by (_trace_rows): "rows" or "loaded"
            "trace_norm": "rows",
            # weight of a fit-role profile in the thermal fit (default 1, 0 = left out):
            # the stepped charge heats by charge only, where the unmodelled reversible heat
            # has the other sign, so it would bend the network towards charge
            "thermal_weights": {"chgsteps": 0.0},
            # the ohmic heat's own table (fit_heat_table): smooth along SOC, a weak pull
            # to R0 (fit-trace surface RMS 0.097-0.099 degC for smoothing 0.03-0.3)
            "heat_table": True, "heat_smooth": 0.1, "heat_prior": 0.001}


OPTION_CHOICES = {"trace_norm": ("rows", "loaded")}


SIGNED_OPTIONS = ("t_extend_c",)


def read_options(path):
    """Fit options from a JSON file: an object whose keys are default_options keys,
    each value of the default's type (an int where a float is due is fine)."""
    try:
        with open(path) as f:
            got = json.load(f)
    except OSError as e:
        raise UserError("cannot read the fit options %s: %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise UserError("the fit options %s are not valid JSON (%s)" % (path, e)) from None
    if not isinstance(got, dict):
        raise UserError("the fit options %s must be a JSON object of option: value" % path)
    defaults = default_options()
    for k, v in got.items():
        if k not in defaults:
            raise UserError("the fit options %s name an unknown option %r (known: %s)"
                            % (path, k, ", ".join(sorted(defaults))))
        want = defaults[k]
        ok = isinstance(v, type(want)) or (isinstance(want, float) and isinstance(v, int)
                                           and not isinstance(v, bool))
        if not ok or isinstance(v, bool) != isinstance(want, bool):
            raise UserError("the fit option %r in %s must be a %s like the default %r"
                            % (k, path, type(want).__name__, want))
        if k.endswith(("_range_s", "_range_a")) and not (
                len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                    and math.isfinite(x) for x in v) and 0 < v[0] < v[1]):
            raise UserError("the fit option %r in %s must be two numbers, 0 < low < high"
                            % (k, path))
        if k in OPTION_CHOICES and v not in OPTION_CHOICES[k]:
            raise UserError("the fit option %r in %s must be one of %s"
                            % (k, path, ", ".join(OPTION_CHOICES[k])))
        # weights, smoothing, priors and counts: none is negative (a temperature may be)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (
                math.isfinite(v) and (v >= 0 or k in SIGNED_OPTIONS)):
            raise UserError("the fit option %r in %s must be a finite number%s"
                            % (k, path, "" if k in SIGNED_OPTIONS else " >= 0"))
    return got
