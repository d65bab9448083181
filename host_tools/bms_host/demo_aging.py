"""An ageing cell on the simulated device, recorded and reported: `make demo-aging`.

The simulated board plays the LG M50 at four ageing levels in turn (`bms-host synth
--aged-use`: 100, 95, 87 and 80 % capacity, PyBaMM truth, a maker's use at 25 degC), DAYS
virtual days each, with the fresh calibration, keeping its flash across the swaps (so the
SOH it learnt is restored at each boot, as after a power cut). `bms-host record --port`
stores its console telemetry; `bms-host report` then draws the SOH trend and the remaining
life to 80 % and 70 %. The virtual days pass in minutes (bms.run(seconds, step)), so each
record's arrival time is set to the virtual clock before the report: the report's days
are the device's days. The ageing is accelerated (20 points in DAYS * 4 days), as the
synthetic ageing is; what it shows is the SOH following the cell and the RUL from it.

    python -m bms_host.demo_aging [--out out/demo-aging] [--days 2]
"""
import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from . import CALIBRATION_DIR, REPO
from .serialshare import resolve
from .sim import SimDevice

LEVELS = (100, 95, 87, 80)
DEVICE = "aged-demo"
T0 = 1.7e9    # the virtual clock's start (any fixed time: the report counts days from it)


def _bms_host():
    return str(Path(sys.executable).parent / "bms-host")


def _wait_shared(port, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        if resolve(port) != port:
            return True
        time.sleep(0.1)
    return False


def run_level(level, days, cal, flash, db, period_s, step_s):
    """One ageing level: boot the board on its trace, record while it runs. Returns the
    last status (soh, sigma, capacity) and the wall time."""
    from .device import Device

    trace = os.path.join(REPO / "data", "lgm50_aged%d" % level, "use_25C.csv")
    t = time.time()
    with SimDevice(trace=trace, calibration=cal, flash=flash, device_id=DEVICE,
                   period_s=period_s) as sim:
        sim.wait_ready()
        rec = subprocess.Popen([_bms_host(), "record", "--port", sim.port, "--db", db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if not _wait_shared(sim.port):
                raise RuntimeError("bms-host record did not start")
            r = subprocess.run([_bms_host(), "exec", "--port", sim.port, "--timeout", "7000",
                                "import bms; bms.run(%d, %g)" % (days * 86400, step_s)],
                               capture_output=True, text=True, timeout=7200)
            if r.returncode:
                raise RuntimeError("exec failed: %s" % r.stderr.strip())
        finally:
            time.sleep(0.5)
            rec.send_signal(signal.SIGINT)
            rec.communicate(timeout=30)
        with Device(sim.port) as d:
            st = d.eval("bms.status(False)")
    return st, time.time() - t


def virtual_clock(db, days):
    """Set each record's arrival time to the virtual clock: the boots in the order they
    ran, each `days` long, its t_ms from its own boot."""
    conn = sqlite3.connect(db)
    try:
        boots = [b for b, in conn.execute(
            "SELECT boot FROM records WHERE device_id = ? GROUP BY boot ORDER BY MIN(rx_time)",
            (DEVICE,))]
        for k, b in enumerate(boots):
            conn.execute("UPDATE records SET rx_time = ? + ? + t_ms / 1000.0 "
                         "WHERE device_id = ? AND boot = ?", (T0, k * days * 86400.0,
                                                              DEVICE, b))
        conn.commit()
    finally:
        conn.close()
    return len(boots)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo-aging", help="folder for the database and report")
    p.add_argument("--days", type=float, default=2.0, help="virtual days per ageing level")
    p.add_argument("--period", type=float, default=300.0,
                   help="telemetry period, virtual seconds")
    p.add_argument("--step", type=float, default=30.0, help="largest virtual step, seconds")
    a = p.parse_args(argv)
    cal = str(CALIBRATION_DIR / "lgm50.json")
    cap = json.loads(Path(cal).read_text())["cell"]["capacity_ah"]
    os.makedirs(a.out, exist_ok=True)
    db = os.path.join(a.out, "telemetry.sqlite")
    flash = os.path.join(a.out, "flash")
    for old in (db, os.path.join(flash, "soh.json")):
        if os.path.exists(old):
            os.remove(old)
    print("level  true SOH  device SOH +- sigma  capacity Ah +- sigma  R0 growth  wall s")
    for level in LEVELS:
        man = json.loads((REPO / "data" / ("lgm50_aged%d" % level) / "manifest.json")
                         .read_text())
        true = man["c20_capacity_25c_ah"] / cap
        st, wall = run_level(level, a.days, cal, flash, db, a.period, a.step)
        print("%4d %%  %8.3f  %10.3f +- %.3f  %11.3f +- %.3f  %9.2f  %6.0f" % (
            level, true, st["soh"], st["soh_sigma"], st["capacity_ah"][0],
            st["capacity_sigma_ah"][0], st["r0_growth"][0], wall), flush=True)
    n = virtual_clock(db, a.days)
    print("%d boots re-timed to the virtual clock (%g days each)" % (n, a.days))
    report = os.path.join(a.out, "report")
    r = subprocess.run([_bms_host(), "report", "--db", db, "--out", report],
                       capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.returncode == 0:
        summary = Path(report, "summary.md").read_text()
        for line in summary.splitlines():
            if "SOH" in line or "R0 trend" in line:
                print(line)
        print("plot: %s" % os.path.join(report, DEVICE + ".png"))
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
