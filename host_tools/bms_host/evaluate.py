"""SOC against truth: the numbers and the plot that the demo and benchmarks print."""
import numpy as np


def soc_metrics(soc, sig, truth, keep):
    """SOC error in %: rmse, max, bias, and the 3-sigma coverage (when sig is given),
    over the samples selected by keep; NaN when an estimate went non-finite."""
    err = soc[keep] - truth[keep]
    if not np.isfinite(err).all():
        return {"rmse": float("nan"), "max": float("nan"), "cover": float("nan")}
    out = {"rmse": 100 * float(np.sqrt(np.mean(err ** 2))),
           "max": 100 * float(np.max(np.abs(err))),
           "bias": 100 * float(np.mean(err))}
    if sig is not None:
        out["cover"] = 100 * float(np.mean(np.abs(err) <= 3 * sig[keep]))
    return out


def soc_table_arrays(t, soc, sigma, truth, png=None, skip_s=300.0):
    t, soc, sigma, truth = (np.asarray(a, dtype=float) for a in (t, soc, sigma, truth))
    m = soc_metrics(soc, sigma, truth, t - t[0] >= skip_s)
    if png:
        plot(t, soc, sigma, truth, png)
    return ("| SOC RMSE % | max error % | 3-sigma coverage |\n|---|---|---|\n"
            + "| %.2f | %.2f | %.1f %% |" % (m["rmse"], m["max"], m["cover"])
            + "\n(after the first %d s; the filter started from its own boot estimate)"
            % skip_s)


def plot(t, soc, sigma, truth, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = (t - t[0]) / 3600.0
    fig, ax = plt.subplots(2, 1, figsize=(8, 5), sharex=True, dpi=90)
    ax[0].plot(h, 100 * truth, "k", label="true (PyBaMM)")
    ax[0].plot(h, 100 * soc, "C0", label="device UKF")
    ax[0].fill_between(h, 100 * (soc - 3 * sigma), 100 * (soc + 3 * sigma), color="C0",
                       alpha=0.25, label="3 sigma")
    ax[0].set_ylabel("SOC %")
    ax[0].legend()
    ax[1].plot(h, 100 * (soc - truth), "C3")
    ax[1].fill_between(h, -300 * sigma, 300 * sigma, color="C0", alpha=0.2)
    ax[1].set_ylabel("error, SOC points")
    ax[1].set_xlabel("hours")
    ax[1].set_ylim(-5, 5)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
