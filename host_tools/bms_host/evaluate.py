"""SOC against truth: the numbers and the plot that the demo and benchmarks print."""
import numpy as np


def load_csv(path):
    data = np.genfromtxt(path, delimiter=",", names=True)
    return {k: data[k] for k in data.dtype.names}


def soc_metrics(t, soc, sigma, truth, skip_s=300.0):
    t, soc, sigma, truth = (np.asarray(a, dtype=float) for a in (t, soc, sigma, truth))
    keep = t - t[0] >= skip_s
    err = soc[keep] - truth[keep]
    return {
        "rmse_pct": 100 * float(np.sqrt(np.mean(err ** 2))),
        "max_pct": 100 * float(np.max(np.abs(err))),
        "coverage_3sigma": float(np.mean(np.abs(err) <= 3 * sigma[keep])),
    }


def soc_table_arrays(t, soc, sigma, truth, png=None):
    m = soc_metrics(t, soc, sigma, truth)
    if png:
        plot(np.asarray(t), np.asarray(soc), np.asarray(sigma), np.asarray(truth), png)
    return ("| SOC RMSE % | max error % | 3-sigma coverage |\n|---|---|---|\n"
            + "| %.2f | %.2f | %.1f %% |" % (m["rmse_pct"], m["max_pct"],
                                            100 * m["coverage_3sigma"])
            + "\n(after the first 300 s; the filter started from its own boot estimate)")


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
