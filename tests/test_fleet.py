"""Fleet state of health: the RUL estimator on SOH histories of known fade, the fleet
aggregation on SQLite and PostgreSQL, the risk ranking, and the static fleet page opened
in headless Chromium."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from bms_host import UserError, cli, fleet, pgcluster, rul, store
from bms_host.bench_telemetry import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---- the estimator

@pytest.mark.parametrize("fade_per_day,days,noise", [(0.0002, 200, 0.003),
                                                      (0.0004, 120, 0.005),
                                                      (0.00005, 365, 0.002)])
def test_rul_recovers_a_known_linear_fade(fade_per_day, days, noise):
    rng = np.random.default_rng(3)
    d = np.arange(0.0, days)
    soh = 0.98 - fade_per_day * d + rng.normal(0, noise, len(d))
    out = rul.soh_outlook(d, soh, np.full(len(d), noise))
    assert out["fading"]
    assert abs(out["fade_per_unit"] / fade_per_day - 1) < 0.1, out["fade_per_unit"]
    for level in (0.8, 0.7):
        truth = (0.98 - level) / fade_per_day - d[-1]
        mid, lo, hi = out["rul"][level]
        assert abs(mid / truth - 1) < 0.1, (level, mid, truth)
        assert lo <= mid <= hi


def test_rul_band_covers_the_truth_about_as_often_as_it_says():
    rng = np.random.default_rng(11)
    hits = 0
    runs = 60
    for _ in range(runs):
        d = np.sort(rng.uniform(0, 150, 60))
        soh = 1.0 - 0.0003 * d + rng.normal(0, 0.004, len(d))
        mid, lo, hi = rul.soh_outlook(d, soh)["rul"][0.8]
        truth = 0.2 / 0.0003 - d[-1]
        hits += lo <= truth <= hi
    assert hits >= 0.85 * runs, hits  # a 2-sigma band: about 95 %


def test_rul_on_cycles_and_too_short_or_flat_histories():
    cyc = np.linspace(0, 300, 40)
    soh = 1.0 - 0.0005 * cyc  # 80 % at 400 cycles
    out = rul.soh_outlook(cyc, soh + np.random.default_rng(1).normal(0, 0.002, 40))
    assert abs(out["rul"][0.8][0] - 100) < 10
    assert rul.soh_outlook([0, 1], [1.0, 0.99]) is None  # two points: no trend
    flat = rul.soh_outlook(np.arange(100.0), 0.95 + np.random.default_rng(2).normal(0, 0.003,
                                                                                     100))
    assert not flat["fading"] or flat["rul"][0.8][0] is None or flat["rul"][0.8][0] > 3000
    assert "not enough history" in rul.describe(None)[0]
    g = rul.growth_outlook(np.arange(50.0), 0.010 * (1 + 0.002 * np.arange(50.0)))
    assert abs(g["growth_per_unit"] - 0.002) < 1e-6


# ---- the fleet

@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fleet") / "fleet.sqlite")
    st = store.open_store(path)
    truth = fleet.synthetic_fleet(st, devices=12, days=90, per_day=4, seed=5)
    st.close()
    return path, truth


def test_fleet_health_finds_each_packs_fade_and_ranks_the_risky(fleet_db):
    path, truth = fleet_db
    st = store.open_store(path, create=False)
    health = fleet.fleet_health(st)
    st.close()
    assert len(health) == 12 and [d["rank"] for d in health] == list(range(1, 13))
    for d in health:
        t = truth[d["device_id"]]
        assert abs(d["fade_pct_year"] / (36500 * t["fade_per_day"]) - 1) < 0.15, d["device_id"]
        assert abs(d["r0_growth_pct_year"] / (36500 * t["r0_per_day"] / t["r0_0"]) - 1) < 0.3
        assert d["cycles_total"] == pytest.approx(90 * t["cycles_per_day"] / t["soh0"],
                                                  rel=0.05)
    fastest = max(truth, key=lambda k: truth[k]["fade_per_day"])
    hottest = max(health, key=lambda d: d["temp_max_c"])
    by_id = {d["device_id"]: d for d in health}
    assert "fastest fade" in by_id[fastest]["why"]
    assert "hottest cells" in hottest["why"]
    # the riskiest half holds the fastest-fading pack; scores fall down the ranking
    assert by_id[fastest]["rank"] <= 6
    assert all(a["risk"] >= b["risk"] for a, b in zip(health, health[1:], strict=False))


def test_postgres_aggregation_matches_sqlite(fleet_db):
    if not pgcluster.available():
        pytest.skip("the PostgreSQL server is not installed (make apt)")
    path, _ = fleet_db
    with pgcluster.Cluster(port=free_port(), settings=pgcluster.THROWAWAY) as c:
        url = c.create_db("fleet")
        store.migrate(path, url, echo=lambda m: None)
        pg = store.open_store(url, create=False)
        a = fleet.fleet_health(pg)
        pg.close()
    lite = store.open_store(path, create=False)
    b = fleet.fleet_health(lite)
    lite.close()
    for x, y in zip(a, b, strict=True):
        assert x["device_id"] == y["device_id"] and x["records"] == y["records"]
        for k in ("soh_now", "fade_pct_year", "r0_growth_pct_year", "temp_max_c",
                  "cycles_total"):
            assert x[k] == pytest.approx(y[k], rel=1e-9), k
        assert x["fault_records"] == y["fault_records"]


def test_single_device_report_uses_the_same_estimator(fleet_db, tmp_path):
    path, _ = fleet_db
    st = store.open_store(path, create=False)
    h = {d["device_id"]: d for d in fleet.fleet_health(st)}["pack003"]
    st.close()
    # a one-device store: the same rows through `bms-host report --out`
    one = str(tmp_path / "one.sqlite")
    src, dst = store.open_store(path, create=False), store.open_store(one)
    dst.insert_many([r for rows in src.iter_rows() for r in rows if r[0] == "pack003"])
    dst.commit()
    src.close()
    dst.close()
    assert cli.main(["report", "--db", one, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert rul.describe(h["soh_days"], "days")[1] in md


def test_report_needs_a_destination_and_an_existing_store(tmp_path, capsys):
    with pytest.raises(UserError, match="--out FOLDER"):
        from bms_host import report

        report.run(type("A", (), {"db": "x.sqlite", "out": None, "html": None}))
    rc = cli.main(["report", "--db", str(tmp_path / "none.sqlite"), "--html",
                   str(tmp_path / "page")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "page").exists()


# ---- the page in a real browser

def screenshot(url, png, size="1200,1600"):
    """Headless Chromium: (console lines, stderr) after loading url and saving png."""
    args = [CHROMIUM, "--headless", "--disable-gpu", "--hide-scrollbars",
            "--screenshot=%s" % png, "--window-size=%s" % size, "--enable-logging=stderr",
            "--v=0", "--user-data-dir=%s" % (png + ".profile"), url]
    if os.getuid() == 0:
        args.insert(1, "--no-sandbox")
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    return console, r


def inked(png):
    """Share of pixels that are not (near) white."""
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3]
    return float(np.mean(img.min(axis=2) < 0.9))


def local_refs(folder):
    """Local files referenced by the pages (img src / a href) that do not exist."""
    missing = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".html"):
                text = open(os.path.join(root, name)).read()
                for ref in re.findall(r'(?:src|href)="([^"#:]+)"', text):
                    if not os.path.exists(os.path.join(root, ref)):
                        missing.append((name, ref))
    return missing


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make apt)")
def test_fleet_page_renders_in_headless_chromium(fleet_db, tmp_path):
    path, _ = fleet_db
    out = tmp_path / "page"
    assert cli.main(["report", "--db", path, "--html", str(out), "--plots", "3"]) == 0
    index = (out / "index.html").read_text()
    assert index.count("<tr") >= 1 + 12 + 1 + 12 and "Risk ranking" in index
    assert len(list((out / "devices").glob("*.html"))) == 3
    assert local_refs(str(out)) == []
    console, r = screenshot("file://%s" % (out / "index.html"), str(tmp_path / "index.png"))
    assert r.returncode == 0 and console == [], (console, r.stderr[-2000:])
    assert inked(str(tmp_path / "index.png")) > 0.03
    dev = sorted((out / "devices").glob("*.html"))[0]
    console, r = screenshot("file://%s" % dev, str(tmp_path / "dev.png"), "1000,900")
    assert r.returncode == 0 and console == [], console
    assert inked(str(tmp_path / "dev.png")) > 0.03


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make apt)")
def test_the_browser_check_sees_a_broken_page(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><link rel=\"icon\" href=\"data:,\"></head>"
                    "<body><img src=\"gone.png\"><script>undefined_call();</script></body>"
                    "</html>")
    console, _ = screenshot("file://%s" % page, str(tmp_path / "bad.png"), "400,300")
    assert any("undefined_call" in c for c in console)
    assert inked(str(tmp_path / "bad.png")) < 0.03
    assert local_refs(str(tmp_path)) == [("bad.html", "gone.png")]
