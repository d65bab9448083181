"""Fleet state of health: every device in a store, its SOH / resistance trends and remaining
life (rul.py), a risk ranking, and a static HTML page with per-device drill-downs.

The store aggregates in SQL (one row per device and day: mean SOH and R0, hottest cell,
records with faults, charge moved); the trends are fitted here in Python, by the same
estimator the single-device report uses."""
import html
import math
import os

import numpy as np

from . import UserError, rul
from .store import display

RISK_KEYS = ("fade_pct_year", "r0_growth_pct_year", "temp_max_c", "fault_records")
RISK_LABELS = {"fade_pct_year": "fastest fade", "r0_growth_pct_year": "resistance growth",
               "temp_max_c": "hottest cells", "fault_records": "most faults"}


def _f(v):
    return None if v is None else float(v)


def series(rows):
    """Daily rows of one device -> dict of lists."""
    keys = ("day", "first_rx", "records", "soh", "soh_sigma", "r0", "cap", "tmax", "faults",
            "amp_s")
    out = {k: [] for k in keys}
    for r in rows:
        for k, v in zip(keys, r[1:], strict=True):
            out[k].append(_f(v) if k not in ("day", "records", "faults") else int(v or 0))
    out["age_days"] = [(t - out["first_rx"][0]) / 86400.0 for t in out["first_rx"]]
    return out


def device_health(dev, rows):
    s = series(rows)
    nan = float("nan")
    soh = [nan if v is None else v for v in s["soh"]]
    sig = [nan if v is None else v for v in s["soh_sigma"]]
    use_sig = sig if all(math.isfinite(v) and v > 0 for v in sig
                         if math.isfinite(v)) and any(math.isfinite(v) for v in sig) else None
    if use_sig is not None:  # days without a sigma weigh like the typical day
        known = sorted(v for v in sig if math.isfinite(v))
        use_sig = [v if math.isfinite(v) else known[len(known) // 2] for v in sig]
    soh_days = rul.soh_outlook(s["age_days"], soh, use_sig)
    caps = [v for v in s["cap"] if v]
    soh_cycles = None
    cycles = None
    if caps and any(s["amp_s"]):
        cycles = list(rul.equivalent_cycles(s["amp_s"], caps[0]))
        soh_cycles = rul.soh_outlook(cycles, soh, use_sig,
                                     horizon=max(20 * (cycles[-1] - cycles[0]), 5000.0))
    r0 = [nan if v is None else v for v in s["r0"]]
    r0_days = rul.growth_outlook(s["age_days"], r0)
    temps = [v for v in s["tmax"] if v is not None]
    h = {"device_id": dev, "series": s, "soh_days": soh_days, "soh_cycles": soh_cycles,
         "cycles": cycles, "r0_days": r0_days,
         "records": sum(s["records"]), "days": len(s["day"]),
         "first_rx": s["first_rx"][0], "last_rx": s["first_rx"][-1],
         "soh_now": soh_days["soh_now"] if soh_days else _last(s["soh"]),
         "fade_pct_year": 100 * 365 * soh_days["fade_per_unit"] if soh_days else None,
         "r0_now": r0_days["now"] if r0_days else _last(s["r0"]),
         "r0_growth_pct_year": 100 * 365 * r0_days["growth_per_unit"] if r0_days else None,
         "temp_max_c": max(temps) if temps else None,
         "fault_records": sum(s["faults"]),
         "cycles_total": cycles[-1] if cycles else None}
    for level in rul.THRESHOLDS:
        key = "%d" % round(100 * level)
        # None: no trend yet (too short a history)
        h["rul_days_" + key] = soh_days["rul"][level] if soh_days else None
        h["rul_cycles_" + key] = soh_cycles["rul"][level] if soh_cycles else None
    return h


def _last(vals):
    vals = [v for v in vals if v is not None]
    return vals[-1] if vals else None


def fleet_health(store):
    """Health of every device in the store, riskiest first."""
    per = {}
    for r in store.daily():
        per.setdefault(r[0], []).append(r)
    devices = [device_health(dev, rows) for dev, rows in sorted(per.items())]
    rank(devices)
    return devices


def rank(devices):
    """Risk score: the mean over the four criteria of the device's percentile in the fleet
    (1 = worst), plus 1 when SOH is already below 80 %. Reasons: the criteria where it is
    in the worst tenth (of at least 10 devices) or past a plain limit."""
    n = len(devices)
    for key in RISK_KEYS:
        vals = sorted((d[key], i) for i, d in enumerate(devices) if d[key] is not None)
        for pos, (_, i) in enumerate(vals):
            devices[i]["pct_" + key] = (pos + 1) / len(vals) if len(vals) > 1 else 0.5
    for d in devices:
        pcts = [d.get("pct_" + k, 0.0) for k in RISK_KEYS]
        d["risk"] = sum(pcts) / len(pcts) + (1.0 if (d["soh_now"] or 1) < 0.8 else 0.0)
        why = []
        for k in RISK_KEYS:
            worst_tenth = n >= 10 and d.get("pct_" + k, 0) > 0.9 and d[k] and d[k] > 0
            if worst_tenth:
                why.append(RISK_LABELS[k])
        if d["soh_now"] is not None and d["soh_now"] < 0.8:
            why.insert(0, "SOH below 80 %")
        if d["temp_max_c"] is not None and d["temp_max_c"] >= 50 and "hottest cells" not in why:
            why.append("cells at %.0f degC" % d["temp_max_c"])
        d["why"] = why
    devices.sort(key=lambda d: -d["risk"])
    for k, d in enumerate(devices):
        d["rank"] = k + 1


# ---- text

def table_lines(devices, top=None):
    hdr = ("| rank | device | SOH % | fade %/yr | R0 mOhm | R0 growth %/yr | to 80 % (days) | "
           "to 70 % (days) | max degC | fault records | why |")
    out = [hdr, "|" + "---|" * 11]
    for d in devices[:top]:
        out.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |" % (
            d["rank"], d["device_id"], _p(d["soh_now"], 100), _n(d["fade_pct_year"], 2),
            _p(d["r0_now"], 1000, 2), _n(d["r0_growth_pct_year"], 1),
            _rul(d["rul_days_80"]), _rul(d["rul_days_70"]), _n(d["temp_max_c"], 1),
            d["fault_records"], ", ".join(d["why"]) or "-"))
    return out


def _n(v, dec=1):
    return "-" if v is None else "%.*f" % (dec, v)


def _p(v, scale, dec=1):
    return "-" if v is None else "%.*f" % (dec, v * scale)


def _rul(t):
    if t is None:
        return "-"
    mid, lo, hi = t
    if mid is None and lo is None:
        return "beyond horizon"
    if mid is None:
        return "> horizon (from %s)" % rul.fmt(lo)
    return "%s (%s..%s)" % (rul.fmt(mid), rul.fmt(lo), rul.fmt(hi) if hi is not None else "+")


# ---- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_outlook(ax, x, y, out, xlabel, scale=100.0):
    ax.plot(x, [v * scale if v is not None else float("nan") for v in y], ".", ms=3,
            color="k", label="daily mean")
    if out is not None:
        t = out["trend"]
        ends = [v for (m, lo, hi) in out["rul"].values() for v in (m, hi) if v is not None]
        far = t.x_last + (max(ends) if ends else 0.5 * (t.x_last - t.x_first))
        xs = np.linspace(t.x_first, max(far, t.x_last), 200)
        lo, hi = t.band(xs)
        ax.plot(xs, t.at(xs) * scale, color="tab:blue", lw=1, label="trend")
        ax.fill_between(xs, lo * scale, hi * scale, color="tab:blue", alpha=0.2,
                        label="2 sigma band")
    for level in rul.THRESHOLDS:
        ax.axhline(level * scale, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)


def plot_device(h, path):
    plt = _plt()
    s = h["series"]
    fig, ax = plt.subplots(2, 2, figsize=(10, 6.5))
    plot_outlook(ax[0, 0], s["age_days"], s["soh"], h["soh_days"], "days since first record")
    ax[0, 0].set_ylabel("SOH %")
    ax[0, 0].legend(fontsize=7)
    if h["cycles"]:
        plot_outlook(ax[0, 1], h["cycles"], s["soh"], h["soh_cycles"],
                     "equivalent full cycles")
    ax[0, 1].set_ylabel("SOH %")
    r0 = [v * 1000 if v is not None else float("nan") for v in s["r0"]]
    ax[1, 0].plot(s["age_days"], r0, ".", ms=3, color="k")
    if h["r0_days"]:
        t = h["r0_days"]["trend"]
        lo, hi = t.band(s["age_days"])
        ax[1, 0].plot(s["age_days"], t.at(s["age_days"]) * 1000, color="tab:orange", lw=1)
        ax[1, 0].fill_between(s["age_days"], lo * 1000, hi * 1000, color="tab:orange",
                              alpha=0.2)
    ax[1, 0].set_ylabel("R0 mOhm (mean of cells)")
    ax[1, 0].set_xlabel("days since first record")
    tm = [v if v is not None else float("nan") for v in s["tmax"]]
    ax[1, 1].plot(s["age_days"], tm, lw=1, color="tab:red")
    ax[1, 1].set_ylabel("hottest cell degC", color="tab:red")
    a2 = ax[1, 1].twinx()
    a2.bar(s["age_days"], s["faults"], width=0.8, color="tab:purple", alpha=0.5)
    a2.set_ylabel("records with faults", color="tab:purple")
    ax[1, 1].set_xlabel("days since first record")
    fig.suptitle("%s: rank %d" % (h["device_id"], h["rank"]))
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def plot_fleet(devices, path):
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    soh = [100 * d["soh_now"] for d in devices if d["soh_now"] is not None]
    ax[0].hist(soh, bins=30, color="tab:blue")
    ax[0].set_xlabel("SOH % now")
    ax[0].set_ylabel("devices")
    pts = [(d["fade_pct_year"], d["r0_growth_pct_year"], d["rank"]) for d in devices
           if d["fade_pct_year"] is not None and d["r0_growth_pct_year"] is not None]
    if pts:
        ax[1].scatter([p[0] for p in pts], [p[1] for p in pts], s=8,
                      c=["tab:red" if p[2] <= 10 else "tab:gray" for p in pts])
    ax[1].set_xlabel("SOH fade %/year")
    ax[1].set_ylabel("R0 growth %/year")
    ax[1].set_title("red: the ten riskiest", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


# ---- the static page

CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px;
text-align:right}th{background:#eee}td.l{text-align:left}tr.hot td{background:#fde8e8}
img{max-width:100%}"""


def _page(title, body):
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<link rel=\"icon\" href=\"data:,\"><title>%s</title><style>%s</style></head>"
            "<body>\n%s\n</body></html>\n" % (html.escape(title), CSS, body))


def _slug(dev):
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in dev)
    return keep or "device"


def _html_table(devices, linked, top=None):
    cols = ("rank", "device", "SOH %", "fade %/yr", "R0 mOhm", "R0 growth %/yr",
            "to 80 % (days)", "to 70 % (days)", "to 80 % (cycles)", "max degC",
            "fault records", "records", "why")
    rows = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % html.escape(c) for c in cols)]
    for d in devices[:top]:
        name = html.escape(d["device_id"])
        if d["device_id"] in linked:
            name = "<a href=\"devices/%s.html\">%s</a>" % (_slug(d["device_id"]), name)
        cells = [str(d["rank"]), name, _p(d["soh_now"], 100), _n(d["fade_pct_year"], 2),
                 _p(d["r0_now"], 1000, 2), _n(d["r0_growth_pct_year"], 1),
                 _rul(d["rul_days_80"]), _rul(d["rul_days_70"]), _rul(d["rul_cycles_80"]),
                 _n(d["temp_max_c"], 1), str(d["fault_records"]), str(d["records"]),
                 ", ".join(d["why"]) or "-"]
        cls = " class=\"hot\"" if d["why"] else ""
        rows.append("<tr%s>%s</tr>" % (cls, "".join(
            "<td%s>%s</td>" % (" class=\"l\"" if k in (1, 12) else "",
                               c if k == 1 else html.escape(c))
            for k, c in enumerate(cells))))
    rows.append("</table>")
    return "\n".join(rows)


def write_html(devices, source, out, plots=None, top=20, echo=print):
    """index.html (fleet table, risk ranking, fleet plots) and devices/<id>.html with the
    drill-down plots, for the `plots` riskiest devices (all when None). Written into a
    temporary folder beside `out`, then moved into place."""
    import shutil
    import tempfile

    if not devices:
        raise UserError("%s holds no records yet" % display(source))
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError("cannot write the page into %s: it is a file, not a folder" % out)
    if not os.path.isdir(parent):
        raise UserError("cannot write the page into %s: folder %s does not exist"
                        % (out, parent))
    tmp = tempfile.mkdtemp(prefix=".fleet-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "devices"))
        drill = devices if plots is None else devices[:plots]
        linked = {d["device_id"] for d in drill}
        plot_fleet(devices, os.path.join(tmp, "fleet.png"))
        for d in drill:
            slug = _slug(d["device_id"])
            plot_device(d, os.path.join(tmp, "devices", slug + ".png"))
            lines = rul.describe(d["soh_days"], "days")
            if d["soh_cycles"]:
                lines += ["vs cycles: " + x for x in rul.describe(d["soh_cycles"], "cycles")]
            body = ("<p><a href=\"../index.html\">fleet</a></p><h1>%s</h1>"
                    "<p>risk rank %d of %d%s</p><ul>%s</ul>%s"
                    "<img src=\"%s.png\" alt=\"trends of %s\">" % (
                        html.escape(d["device_id"]), d["rank"], len(devices),
                        (": " + html.escape(", ".join(d["why"]))) if d["why"] else "",
                        "".join("<li>%s</li>" % html.escape(x) for x in lines),
                        _html_table([d], linked=set()), slug, html.escape(d["device_id"])))
            with open(os.path.join(tmp, "devices", slug + ".html"), "w") as f:
                f.write(_page("%s - fleet health" % d["device_id"], body))
        records = sum(d["records"] for d in devices)
        span = (max(d["last_rx"] for d in devices) - min(d["first_rx"] for d in devices))
        fading = [d for d in devices if d["soh_days"] and d["soh_days"]["fading"]]
        body = ("<h1>Fleet health</h1><p>Source %s: %d devices, %d records over %.0f days. "
                "Trends: a weighted straight line through each device's daily means, with a "
                "2-sigma band; remaining life is where the trend reaches 80 %% and 70 %% "
                "SOH (between where the band's edges do). %d devices fade measurably.</p>"
                "<img src=\"fleet.png\" alt=\"fleet SOH and trends\">"
                "<h2>Risk ranking (top %d)</h2><p>Criteria: fastest fade, highest resistance "
                "growth, hottest cells, most fault records; each device's percentile in the "
                "fleet, averaged.</p>%s<h2>All devices</h2>%s%s" % (
                    html.escape(display(source)), len(devices), records, span / 86400.0,
                    len(fading), min(top, len(devices)),
                    _html_table(devices, linked, top),
                    "" if len(drill) == len(devices) else
                    "<p>Drill-down pages for the %d riskiest devices.</p>" % len(drill),
                    _html_table(sorted(devices, key=lambda d: d["device_id"]), linked)))
        with open(os.path.join(tmp, "index.html"), "w") as f:
            f.write(_page("Fleet health", body))
        if os.path.isdir(out):
            old = out.rstrip("/") + ".old-%d" % os.getpid()
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    echo("wrote %s: %d devices, %d drill-down pages"
         % (os.path.join(out, "index.html"), len(devices), len(drill)))
    return os.path.join(out, "index.html")


# ---- a synthetic fleet of known ageing (tests and demonstrations)

def synthetic_fleet(store, devices=20, days=180, seed=1, start=1.7e9, cap_ah=5.0, per_day=12):
    """Write `days` days of records for `devices` packs whose SOH fades linearly at a known
    rate, with R0 growing, temperatures and faults; returns {device_id: truth}. Each day
    is one burst of `per_day` records 5 s apart whose current moves that day's charge (a
    day's throughput packed into a burst, so the cycle count is known too)."""
    import json
    import random

    from .store import row_of

    rnd = random.Random(seed)
    truth = {}
    for k in range(devices):
        dev = "pack%03d" % k
        t = {"fade_per_day": rnd.uniform(0.00004, 0.0004), "soh0": rnd.uniform(0.96, 1.0),
             "r0_0": rnd.uniform(0.010, 0.016), "r0_per_day": rnd.uniform(2e-6, 2e-5),
             "temp": rnd.uniform(24, 40), "fault_p": rnd.choice([0.0, 0.0, 0.02, 0.2]),
             "cycles_per_day": rnd.uniform(0.3, 1.2)}
        truth[dev] = t
        boot = rnd.getrandbits(30)
        seq = 0
        rows = []
        for d in range(days):
            if d % 30 == 0:  # a reboot a month: seq restarts under a new boot id
                boot, seq = rnd.getrandbits(30), 0
            soh = t["soh0"] - t["fade_per_day"] * d
            r0 = t["r0_0"] + t["r0_per_day"] * d
            i_a = t["cycles_per_day"] * 2 * cap_ah * 3600 / ((per_day - 1) * 5.0)
            faulty = rnd.random() < t["fault_p"]
            for j in range(per_day):
                rec = {"schema": 1, "device_id": dev, "boot": boot, "seq": seq,
                       "t_ms": d * 86400000 + j * 5000, "cells": 4,
                       "v": [round(3.6 + 0.01 * c, 4) for c in range(4)],
                       "temp_c": [round(t["temp"] + rnd.gauss(0, 1.5), 2),
                                  round(t["temp"] - 2 + rnd.gauss(0, 1.5), 2)],
                       "i_a": round(i_a if j % 2 else -i_a, 3),
                       "soc": [0.6] * 4, "soc_sigma": [0.01] * 4,
                       "soh": round(soh + rnd.gauss(0, 0.004), 5), "soh_sigma": 0.01,
                       "r0_ohm": [round(r0 * (1 + 0.02 * c) + rnd.gauss(0, 2e-4), 6)
                                  for c in range(4)],
                       "capacity_ah": [round(cap_ah * soh, 4)] * 4,
                       "faults": ["OT"] if faulty and j == 0 else []}
                rows.append(row_of(rec, start + d * 86400 + j * 5.0,
                                   json.dumps(rec, separators=(",", ":"))))
                seq += 1
        store.insert_many(rows)
    store.commit()
    return truth
