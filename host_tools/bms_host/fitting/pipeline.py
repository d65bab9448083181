"""The whole fit of a data folder, steps 1-5 in order."""
import time

import numpy as np

from .. import ecm
from .dataset import load_dataset
from .hysteresis import fit_hysteresis, without_hysteresis
from .ocv import fit_capacity, fit_ocv
from .options import default_options
from .pulses import initial_tables
from .refine import extend_temperature, global_refine, search_diffusion
from .thermal import fit_heat_table, fit_thermal


def fit_dataset(folder, ambients=None, opts=None, log=print):
    """Run the whole fit; returns (tables, ecm.Tables, info)."""
    opts = dict(default_options(), **(opts or {}))
    t0 = time.perf_counter()
    cases, manifest = load_dataset(folder, ambients, opts.get("fit_profiles"))
    log("fit: %d traces (%d fit, %d validation) read in %.1f s"
        % (len(cases), sum(c.role == "fit" for c in cases),
           sum(c.role != "fit" for c in cases), time.perf_counter() - t0))
    cap, cap_t = fit_capacity(cases)
    grid = np.array(opts["soc_grid"])
    temps, ocv_c20 = fit_ocv(cases, cap, grid)
    log("fit: capacity %.4f Ah (C/20 at %g degC), OCV at %s degC"
        % (cap, cap_t, ", ".join("%g" % t for t in temps)))
    tabs, blocks = initial_tables(cases, cap, grid, temps, ocv_c20, opts["tau1_range_s"],
                                  opts["tau2_range_s"])
    tabs["ocv_v"] = ocv_c20
    log("fit: %d HPPC steps fitted (%.1f s)" % (sum(len(v) for v in blocks.values()),
                                                 time.perf_counter() - t0))
    # Arrhenius needs two columns: data at one ambient keeps its one column
    if opts.get("t_extend_c") is not None and opts["t_extend_c"] > temps[-1] \
            and len(temps) >= 2:
        temps, tabs, ocv_c20 = extend_temperature(temps, tabs, ocv_c20, opts["t_extend_c"])
        opts["_strong_prior_t"] = [len(temps) - 1]
        log("fit: tables extended to %g degC (Arrhenius from the two warmest columns)"
            % temps[-1])
    dif = opts.get("diffusion")
    if dif == "search":
        opts["diffusion"] = dict(ecm.NO_DIFFUSION)
        tabs0, info0 = global_refine(cases, cap, grid, temps, tabs, ocv_c20, opts)
        dif = search_diffusion(cases, cap, grid, temps, tabs, tabs0, ocv_c20, opts, log=log,
                               none_mv=info0.get("trace_rms_mv"))
        phi0 = info0.get("phi")
    else:
        phi0 = None
    opts["diffusion"] = dict(ecm.NO_DIFFUSION, **(dif or {}))
    prior = tabs
    tabs, ginfo = global_refine(cases, cap, grid, temps, prior, ocv_c20, opts, log=log,
                                phi0=phi0)
    extended = bool(opts.get("_strong_prior_t"))
    for _ in range(opts.get("ext_passes", 1) - 1 if extended else 0):
        # the extrapolated column again, now from the fitted columns below it
        _, ext, _ = extend_temperature(temps[:-1], {k: np.asarray(v)[:-1] for k, v in
                                                    tabs.items() if k in prior}, ocv_c20[:-1],
                                       temps[-1])
        prior = dict(prior, **{k: np.vstack([np.asarray(prior[k])[:-1], ext[k][-1:]])
                               for k in ext if k != "ocv_v"})
        tabs, ginfo = global_refine(cases, cap, grid, temps, prior, ocv_c20, opts,
                                    phi0=ginfo.get("phi"))
    log("fit: global refinement done (%.1f s)" % (time.perf_counter() - t0))
    thermal0 = {"c_core_j_per_k": 70.0, "c_surf_j_per_k": 5.0, "r_core_surf_k_per_w": 2.0,
                "r_surf_amb_k_per_w": 10.0}
    tb = ecm.Tables(grid, temps, tabs, thermal0, cap, opts["diffusion"])
    thermal = fit_thermal(cases, tb, cap, opts)
    tb = ecm.Tables(grid, temps, tabs, thermal, cap, opts["diffusion"])
    if opts.get("heat_table"):
        got = fit_heat_table(cases, tb, cap, opts, thermal["c_core_j_per_k"])
        if got is not None:
            tabs = dict(tabs, rh_ohm=got[0])
            thermal = got[1]
            tb = ecm.Tables(grid, temps, tabs, thermal, cap, opts["diffusion"])
    log("fit: thermal %s (%.1f s)" % (", ".join("%s=%.3g" % kv for kv in thermal.items()),
                                       time.perf_counter() - t0))
    hyst = fit_hysteresis(cases, tb, cap, log=log) if opts.get("hysteresis", True) else None
    if hyst is not None:
        # the other tables again, with the hysteresis known (the fit traces' rests after a
        # discharge sit M below the mid OCV, which the RC pairs and the shift had taken up)
        new, ginfo = global_refine(without_hysteresis(cases, tb, cap, hyst), cap, grid, temps,
                                   prior, ocv_c20, opts, phi0=ginfo.get("phi"))
        tabs = dict(tabs, **new)   # the heat table (rh_ohm) stays
        tb = ecm.Tables(grid, temps, tabs, thermal, cap, opts["diffusion"], hyst)
        log("fit: refined with the hysteresis (%.1f s)" % (time.perf_counter() - t0))
    info = {"cases": cases, "manifest": manifest, "capacity_ah": cap, "opts": opts,
            "blocks": blocks, "ocv_c20": ocv_c20, "t_start": t0}
    return tabs, tb, info
