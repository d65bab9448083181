"""bms-host report: plots and a summary of recorded telemetry, per device."""
import json
import os
import sqlite3

from . import UserError

HELP = "plot recorded telemetry per device (SOC, SOH, cell spread, temperatures, SOP)"


def configure(p):
    p.add_argument("--db", required=True, help="SQLite file written by bms-host record")
    p.add_argument("--out", required=True, help="folder for the PNGs and summary.md")


def load(db):
    if not os.path.isfile(db):
        raise UserError("telemetry database %s does not exist: record one with bms-host record"
                        % db)
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
        rows = conn.execute("SELECT device_id, boot, seq, rx_time, json FROM records "
                            "ORDER BY device_id, rx_time").fetchall()
        conn.close()
    except sqlite3.Error as e:
        raise UserError("cannot read %s as a telemetry database (%s)" % (db, e)) from None
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
    import numpy as np

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


def summarize(dev, recs, gap_lines):
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
             "| gaps | %s |" % ("; ".join(x.strip() for x in gap_lines) or "none"),
             "", "![%s](%s.png)" % (dev, dev), ""]
    return lines


def run(args):
    from .record import gap_report

    devices = load(args.db)
    if not devices:
        raise UserError("%s holds no records yet" % args.db)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise UserError("cannot create the output folder %s (%s)" % (args.out, e)) from None
    conn = sqlite3.connect("file:%s?mode=ro" % args.db, uri=True)
    gaps = gap_report(conn)
    conn.close()
    md = ["# Telemetry report", "", "Source: `%s`, %d device(s)." % (args.db, len(devices)), ""]
    for dev, recs in sorted(devices.items()):
        plot_device(dev, recs, os.path.join(args.out, "%s.png" % dev))
        mine = []
        for line in gaps:
            if line.startswith(dev + ":"):
                mine = [line]
            elif mine and line.startswith("  "):
                mine.append(line)
            elif mine:
                break
        missing = [x for x in mine if not x.endswith(" 0 missing")]
        md += summarize(dev, recs, missing)
    path = os.path.join(args.out, "summary.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    print("wrote %s and %d plot(s)" % (path, len(devices)))
    return 0
