"""bms-host report: plots and a summary of recorded telemetry per device (--out: the
records over time, and the daily SOH and resistance with their trends and the remaining
life to 80 % and 70 % SOH with its band), and the fleet's state of health as a static page
(--html): SOH / resistance trends, remaining life and a risk ranking over every device in
the store."""
import json
import os

import numpy as np

from . import UserError
from .store import open_store

HELP = ("plot recorded telemetry per device (--out) or write the fleet health page (--html); "
        "SQLite file or postgresql:// URL")


def configure(p):
    p.add_argument("--db", required=True,
                   help="SQLite file or postgresql:// URL written by bms-host record")
    p.add_argument("--out", help="folder for the per-device PNGs and summary.md")
    p.add_argument("--html", metavar="FOLDER",
                   help="folder for the fleet page (index.html, drill-down pages and plots)")
    p.add_argument("--plots", type=int, default=200,
                   help="with --html: drill-down pages for this many of the riskiest devices "
                        "(default 200)")


def load(db, device_id=None):
    store = open_store(db, create=False)
    try:
        rows = store.records(device_id)
    finally:
        store.close()
    devices = {}
    for dev, boot, seq, rx, text in rows:
        devices.setdefault(dev, []).append((boot, seq, rx, json.loads(text)))
    return devices


def timeline(recs):
    """Wall-clock seconds per record: each boot is anchored where its records arrived
    soonest after being made (buffered ones arrive late), plus the device's own t_ms."""
    offset = {}
    for boot, _, rx, r in recs:
        o = rx - r.get("t_ms", 0) / 1000.0
        offset[boot] = min(o, offset.get(boot, o))
    out = sorted(((offset[b] + r.get("t_ms", 0) / 1000.0, b, s, r) for b, s, _, r in recs),
                 key=lambda x: x[0])
    t0 = out[0][0]
    return [(t - t0, b, s, r) for t, b, s, r in out]


def _col(recs, key, k=None):
    out = []
    for r in recs:
        v = r.get(key)
        if k is not None:
            v = v[k] if isinstance(v, list) and len(v) > k else None
        out.append(float("nan") if v is None else v)
    return out


def plot_device(dev, recs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tl = timeline(recs)
    t = np.array([x[0] for x in tl]) / 60.0
    rs = [x[3] for x in tl]
    fig, ax = plt.subplots(5, 1, figsize=(9, 12), sharex=True)
    ncell = max(len(r.get("soc") or []) for r in rs) or 0
    for c in range(ncell):
        soc = np.array(_col(rs, "soc", c)) * 100
        sig = np.array(_col(rs, "soc_sigma", c)) * 100
        ax[0].plot(t, soc, lw=1, label="cell %d" % (c + 1))
        ax[0].fill_between(t, soc - 3 * sig, soc + 3 * sig, alpha=0.2)
    ax[0].set_ylabel("SOC % (3 sigma band)")
    soh = np.array(_col(rs, "soh")) * 100
    ssig = np.array(_col(rs, "soh_sigma")) * 100
    ax[1].plot(t, soh, color="k", lw=1)
    ax[1].fill_between(t, soh - 3 * ssig, soh + 3 * ssig, alpha=0.2, color="k")
    ax[1].set_ylabel("SOH %")
    v = [r.get("v") or [float("nan")] for r in rs]
    ax[2].plot(t, [max(x) for x in v], lw=1, label="max")
    ax[2].plot(t, [min(x) for x in v], lw=1, label="min")
    ax2 = ax[2].twinx()
    ax2.plot(t, [1000 * (max(x) - min(x)) for x in v], color="tab:red", lw=0.8)
    ax2.set_ylabel("spread mV", color="tab:red")
    ax[2].set_ylabel("cell V")
    ntemp = max(len(r.get("temp_c") or []) for r in rs)
    for k in range(ntemp):
        ax[3].plot(t, _col(rs, "temp_c", k), lw=1, label="sensor %d" % (k + 1))
    ax[3].set_ylabel("degC")
    for k, lab in enumerate(("2 s", "10 s", "30 s")):
        ax[4].plot(t, _col(rs, "sop_dis_a", k), lw=1, label="discharge " + lab)
        ax[4].plot(t, [-x for x in _col(rs, "sop_chg_a", k)], lw=1, ls="--",
                   label="charge " + lab)
    ax[4].set_ylabel("SOP A")
    ax[4].set_xlabel("minutes")
    for a in (ax[0], ax[2], ax[3], ax[4]):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7, loc="best")
    fig.suptitle("device %s" % dev)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summarize(dev, recs, gap_lines, health=None):
    tl = timeline(recs)
    last = tl[-1][3]
    faults = sorted({f for _, _, _, r in tl for f in (r.get("faults") or [])})
    v = [x for _, _, _, r in tl for x in (r.get("v") or [])]
    temps = [x for _, _, _, r in tl for x in (r.get("temp_c") or [])]
    lines = ["## %s" % dev, "",
             "| | |", "|---|---|",
             "| records | %d over %.1f min, %d boot(s) |" % (len(tl), tl[-1][0] / 60.0,
                                                        len({b for _, b, _, _ in tl})),
             "| last SOC | %s |" % (", ".join("%.1f %%" % (100 * s)
                                               for s in last.get("soc") or []) or "-"),
             "| last SOH | %s |" % ("%.1f %%" % (100 * last["soh"]) if "soh" in last else "-"),
             "| cell voltage | %.3f .. %.3f V |" % (min(v), max(v)) if v
             else "| cell voltage | - |",
             "| temperature | %.1f .. %.1f degC |" % (min(temps), max(temps)) if temps
             else "| temperature | - |",
             "| faults seen | %s |" % (", ".join(faults) or "none"),
             "| gaps | %s |" % ("; ".join(x.strip() for x in gap_lines) or "none")]
    if health is not None:
        from . import rul

        trend = rul.describe(health["soh_days"], "days")
        if health["soh_cycles"]:
            trend += ["vs cycles: " + x for x in rul.describe(health["soh_cycles"], "cycles")]
        lines.append("| SOH trend | %s |" % "; ".join(trend))
        if health["r0_growth_pct_year"] is not None:
            lines.append("| R0 trend | %.2f mOhm, %+.1f %% per year |"
                         % (1000 * health["r0_now"], health["r0_growth_pct_year"]))
    lines += ["", "![%s](%s.png)" % (dev, dev), "",
              "![%s health](%s_health.png)" % (dev, dev), ""]
    return lines


def run(args):
    from . import fleet
    from .record import gap_report

    html_out = getattr(args, "html", None)
    if not args.out and not html_out:
        raise UserError("say where to write: --out FOLDER (per-device plots) and/or "
                        "--html FOLDER (the fleet page)")
    store = open_store(args.db, create=False)
    try:
        health = fleet.fleet_health(store)
        gaps = gap_report(store) if args.out else []
    finally:
        store.close()
    if not health:
        raise UserError("%s holds no records yet" % args.db)
    if html_out:
        fleet.write_html(health, args.db, html_out, plots=getattr(args, "plots", 200))
    if not args.out:
        return 0
    by_dev = {h["device_id"]: h for h in health}
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise UserError("cannot create the output folder %s (%s)" % (args.out, e)) from None
    md = ["# Telemetry report", "", "Source: `%s`, %d device(s)." % (args.db, len(health)), ""]
    for dev in sorted(by_dev):
        recs = load(args.db, dev)[dev]
        plot_device(dev, recs, os.path.join(args.out, "%s.png" % dev))
        # the SOH and resistance trends and the remaining life they imply (daily means)
        fleet.plot_device(by_dev[dev], os.path.join(args.out, "%s_health.png" % dev))
        mine = []
        for line in gaps:
            if line.startswith(dev + ":"):
                mine = [line]
            elif mine and line.startswith("  "):
                mine.append(line)
            elif mine:
                break
        missing = [x for x in mine if not x.endswith(" 0 missing")]
        md += summarize(dev, recs, missing, by_dev[dev])
    path = os.path.join(args.out, "summary.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(md) + "\n")
    os.replace(path + ".tmp", path)
    print("wrote %s and %d plot(s)" % (path, len(health)))
    return 0
