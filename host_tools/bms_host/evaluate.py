"""SOC against truth: the numbers and the plot that the demo and benchmarks print."""
import numpy as np


def load_csv(path):
    data = np.genfromtxt(path, delimiter=",", names=True)
    return {k: data[k] for k in data.dtype.names}


def soc_errors(trace, est, skip_s=300.0):
    tr = load_csv(trace)
    es = load_csv(est)
    keep = es["time_s"] - es["time_s"][0] >= skip_s
    err = es["soc"][keep] - tr["soc_true"][keep]
    sig = es["soc_sigma"][keep]
    return {
        "rmse_pct": 100 * float(np.sqrt(np.mean(err ** 2))),
        "max_pct": 100 * float(np.max(np.abs(err))),
        "coverage_3sigma": float(np.mean(np.abs(err) <= 3 * sig)),
    }


def soc_table(trace, est, png=None):
    m = soc_errors(trace, est)
    if png:
        plot(trace, est, png)
    return ("| SOC RMSE % | max error % | 3-sigma coverage |\n|---|---|---|\n"
            + "| %.2f | %.2f | %.1f %% |" % (m["rmse_pct"], m["max_pct"],
                                            100 * m["coverage_3sigma"]))


def plot(trace, est, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = load_csv(trace)
    es = load_csv(est)
    h = (es["time_s"] - es["time_s"][0]) / 3600.0
    fig, ax = plt.subplots(2, 1, figsize=(8, 5), sharex=True, dpi=90)
    ax[0].plot(h, 100 * tr["soc_true"], "k", label="true")
    ax[0].plot(h, 100 * es["soc"], "C0", label="UKF")
    ax[0].fill_between(h, 100 * (es["soc"] - 3 * es["soc_sigma"]),
                       100 * (es["soc"] + 3 * es["soc_sigma"]), color="C0", alpha=0.25,
                       label="3 sigma")
    ax[0].set_ylabel("SOC %")
    ax[0].legend()
    ax[1].plot(h, 100 * (es["soc"] - tr["soc_true"]), "C3")
    ax[1].set_ylabel("error, SOC points")
    ax[1].set_xlabel("hours")
    ax[1].set_ylim(-5, 5)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
