"""The validation report: summary.md, a plot per case, residual histograms, tables."""
import re
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np

from .dataset import split_record
from .options import FIT_VERSION
from .validation import floor_misses, floors_for, STRESS_PROFILES


def default_report_dir(cal_path, cell_id):
    """calibration/lgm50.json -> calibration/reports/lgm50/"""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cell_id)) or Path(cal_path).stem
    return Path(cal_path).resolve().parent / "reports" / name


def summary_table(results, role=None):
    lines = ["| case | role | V RMSE mV | bias mV | bias dis/chg mV | max mV | Ts RMSE degC |",
             "|---|---|---|---|---|---|---|"]
    order = sorted(results.items(), key=lambda kv: (kv[1]["role"] != "fit", kv[0]))
    for name, m in order:
        if role is not None and m["role"] != role:
            continue
        bd = "%s / %s" % tuple("-" if m[k] is None else "%+.1f" % m[k]
                               for k in ("bias_dis_mv", "bias_chg_mv"))
        lines.append("| %s | %s | %.2f | %+.2f | %s | %.1f | %.3f |"
                     % (name, m["role"], m["rmse_mv"], m["bias_mv"], bd, m["max_mv"],
                        m["t_rmse_c"]))
    return "\n".join(lines)


def write_report(folder, info, tb, results, sims, fit_s, cal_path):
    """PNG plots per case, residual histograms and summary.md."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    cases = {c.name: c for c in info["cases"]}
    for name in sorted(sims):
        sim, err = sims[name]
        c = cases[name]
        t = c.cols["time_s"] / 3600.0
        step = max(1, len(t) // 3000)
        sl = slice(None, None, step)
        fig, ax = plt.subplots(3, 1, figsize=(8, 6.4), sharex=True,
                               gridspec_kw={"height_ratios": [3, 1.4, 2]})
        ax[0].plot(t[sl], c.cols["voltage_v"][sl], lw=0.8, label="data")
        ax[0].plot(t[sl], sim["voltage_v"][sl], lw=0.8, ls="--", label="model")
        ax[0].set_ylabel("voltage (V)")
        ax[0].legend(loc="best", fontsize=8)
        m = results[name]
        ax[0].set_title("%s (%s): RMSE %.1f mV, bias %+.1f mV, max %.0f mV"
                        % (name, m["role"], m["rmse_mv"], m["bias_mv"], m["max_mv"]), fontsize=9)
        ax[1].plot(t[sl], err[sl] * 1e3, lw=0.6, color="C3")
        ax[1].axhline(0, color="k", lw=0.5)
        ax[1].set_ylabel("error (mV)")
        ax[2].plot(t[sl], c.cols["temperature_c"][sl], lw=0.8, label="surface data")
        ax[2].plot(t[sl], sim["temp_surface_c"][sl], lw=0.8, ls="--", label="surface model")
        if "temp_core_c" in c.cols:
            ax[2].plot(t[sl], c.cols["temp_core_c"][sl], lw=0.6, alpha=0.6, label="core data")
        ax[2].plot(t[sl], sim["temp_core_c"][sl], lw=0.6, ls=":", label="core model")
        ax[2].set_ylabel("temperature (degC)")
        ax[2].set_xlabel("time (h)")
        ax[2].legend(loc="best", fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(folder / ("%s.png" % name), dpi=70)
        plt.close(fig)
    # residual histograms: one panel per profile, one colour per ambient
    profiles = sorted({cases[n].profile for n in sims})
    ncol = 3
    nrow = -(-len(profiles) // ncol)
    fig, axs = plt.subplots(nrow, ncol, figsize=(10, 2.6 * nrow), squeeze=False)
    for k, prof in enumerate(profiles):
        ax = axs[k // ncol][k % ncol]
        for name in sorted(sims):
            if cases[name].profile != prof:
                continue
            e = sims[name][1] * 1e3
            lim = 40.0
            ax.hist(np.clip(e, -lim, lim), bins=80, range=(-lim, lim), histtype="step",
                    density=True, label="%g degC" % cases[name].ambient_c)
        roles = {cases[n].role for n in sims if cases[n].profile == prof}
        ax.set_title("%s (%s)" % (prof, "fit" if roles == {"fit"} else "held out"),
                     fontsize=9)
        ax.set_xlabel("model - data (mV, clipped at 40)", fontsize=8)
        ax.legend(fontsize=7)
    for k in range(len(profiles), nrow * ncol):
        axs[k // ncol][k % ncol].axis("off")
    fig.tight_layout()
    fig.savefig(folder / "residual_histograms.png", dpi=70)
    plt.close(fig)
    # OCV and resistance tables
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.4))
    for j, T in enumerate(tb.temp):
        ax[0].plot(tb.soc, tb.tab["ocv_v"][j], marker=".", label="%g degC" % T)
        ax[1].plot(tb.soc, tb.tab["r0_ohm"][j] * 1e3, label="R0 %g" % T)
        ax[1].plot(tb.soc, tb.tab["r0c_ohm"][j] * 1e3, ls="--", color=ax[1].lines[-1].get_color())
        ax[2].plot(tb.soc, (tb.tab["r1_ohm"][j] + tb.tab["r2_ohm"][j]) * 1e3, label="%g" % T)
        ax[3].semilogy(tb.soc, tb.tab["i0_a"][j], label="%g" % T)
    ax[0].set_title("OCV (V)", fontsize=9)
    ax[1].set_title("R0 discharge (solid), charge (dashed), mOhm", fontsize=9)
    ax[2].set_title("R1 + R2 (mOhm)", fontsize=9)
    ax[3].set_title("exchange current i0 (A)", fontsize=9)
    for a in ax:
        a.set_xlabel("SOC")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "tables.png", dpi=70)
    plt.close(fig)
    (folder / "summary.md").write_text(summary_markdown(info, tb, results, fit_s, cal_path))


def summary_markdown(info, tb, results, fit_s, cal_path):
    sp = split_record(info["cases"])
    held = {n: m for n, m in results.items() if m["role"] != "fit"}
    fitr = {n: m for n, m in results.items() if m["role"] == "fit"}
    lines = ["# Fit report: %s" % Path(cal_path).name, "",
             "Generated by `bms-host fit` (%s). Capacity %.4f Ah; tables over %d SOC points x "
             "%s degC; fit time %.1f s." % (FIT_VERSION, info["capacity_ah"], len(tb.soc),
                                            ", ".join("%g" % t for t in tb.temp), fit_s),
             "", "Every case is re-simulated open loop with the device's model equations "
             "(fully coupled: the model's own core temperature drives the tables), from the "
             "trace's first-row SOC (soc_true) and temperature. Error = model - data. "
             "Floors on held-out dynamic profiles (DST, random pulses, constant power): "
             "voltage RMSE <= 10 mV at ambients >= 0 degC, <= 20 mV at -10 degC; surface "
             "temperature RMSE <= 0.5 degC. Held out as stress cases, shown against the same "
             "numbers but not counted: %s." % ", ".join(STRESS_PROFILES), "",
             "Data split (decided by the fit, `--fit-profiles`): fit on %s; held out: %s.%s"
             % (", ".join(sp["fit_profiles"]), ", ".join(sp["validation_profiles"]) or "none",
                (" Roles that differ from the data manifest: %s."
                 % ", ".join(sp["role_differs_from_manifest"]))
                if sp["role_differs_from_manifest"] else ""), "",
             "Model: OCV - R0*i - two RC pairs - Butler-Volmer term b*asinh(i / 2 i0), "
             "b = 2RT/F; i0_a(soc, T) fitted by variable projection (log i0 at SOC knots %s "
             "per temperature), the linear tables by bounded least squares with mean-error "
             "rows per trace and current direction. Heat: i*(Rh*i + k1*v1 + eta) + "
             "k2*i*v2, %s." % (", ".join("%g" % k for k in info["opts"]["i0_soc_knots"]),
                               "Rh a table of its own (rh_ohm), k1, k2 and the network by "
                               "equation error on the fit traces' core and surface "
                               "temperatures" if tb.heat_rh else "Rh = R0"), "",
             "## Held-out validation cases", ""]
    if held:
        lines.append(summary_table(held))
        lines.append("")
        bad, stress = floor_misses(results)
        lines.extend(["- **%s above the floor**: %.1f mV (floor %.0f), %.2f degC"
                      % (n, held[n]["rmse_mv"], floors_for(held[n]["ambient_c"]),
                         held[n]["t_rmse_c"]) for n in bad]
                     or ["All held-out dynamic profiles meet the floors."])
        lines.extend("- stress case %s above the floor's numbers (not counted): %.1f mV "
                     "(%.0f), %.2f degC" % (n, held[n]["rmse_mv"],
                                            floors_for(held[n]["ambient_c"]),
                                            held[n]["t_rmse_c"]) for n in stress)
    else:
        lines.append("(no held-out cases in the data set)")
    lines += ["", "## Fit cases", "", summary_table(fitr), "",
              "## Thermal parameters", ""]
    for k, v in sorted(tb.thermal.items()):
        lines.append("- %s = %.4g" % (k, v))
    lines += ["", "## Plots", "", "- `tables.png`: OCV and resistances (the one plot kept in git)",
              "- `residual_histograms.png`: voltage residuals per profile and ambient",
              "- `<case>.png`: voltage, error and temperatures, model against data", "",
              "The plots other than `tables.png` are made again by `make calibration`.", ""]
    return "\n".join(lines)
