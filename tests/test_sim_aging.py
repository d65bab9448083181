"""An aged cell on the simulated device, end to end: the board plays a recorded LG M50 aged
to 87 % (PyBaMM truth, `bms-host synth --aged-use`) with the fresh calibration, its
console telemetry is on from boot, `bms-host record --port` stores what it sends, and the
SOH in the database moves from the calibration's 1.0 to the aged truth. A slice of the
maker's-use trace keeps it short: a long rest at ~30 % SOC (a steep part of the OCV),
the full charge with its CV taper, the rest after it; fast virtual time runs its
5.5 hours in seconds."""
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bms_host.serialshare import resolve
from bms_host.sim import SimDevice
from polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
BMS_HOST = str(Path(sys.executable).parent / "bms-host")
LGM50 = ROOT / "calibration" / "lgm50.json"
AGED = ROOT / "data" / "lgm50_aged87"


def truth_soh():
    """The aged cell's C/20 capacity over the calibration's (the fresh cell's)."""
    aged = json.loads((AGED / "manifest.json").read_text())["c20_capacity_25c_ah"]
    return aged / json.loads(LGM50.read_text())["cell"]["capacity_ah"]


def slice_trace(path, t0, t1):
    lines = (AGED / "use_25C.csv").read_text().splitlines()
    keep = [x for x in lines[1:] if t0 <= float(x.split(",", 1)[0]) <= t1]
    path.write_text("\n".join([lines[0]] + keep) + "\n")
    return str(path)


def test_recorded_soh_of_an_aged_cell_converges_to_the_truth(tmp_path):
    # from 4 h into the night rest at ~30 % SOC through the full charge to 1 h after it
    trace = slice_trace(tmp_path / "aged87.csv", 140000.0, 160000.0)
    db = str(tmp_path / "tel.sqlite")
    with SimDevice(trace=trace, calibration=str(LGM50), flash=str(tmp_path / "flash"),
                   device_id="aged87", period_s=60) as sim:
        sim.wait_ready()
        rec = subprocess.Popen([BMS_HOST, "record", "--port", sim.port, "--db", db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: resolve(sim.port) != sim.port, 30), "record did not start"
            # nothing starts telemetry here: the board's boot did
            r = subprocess.run([BMS_HOST, "exec", "--port", sim.port, "--timeout", "240",
                                "import bms; bms.run(20000, 30); print(bms.app.now_ms)"],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and r.stdout.strip() == "20000000", (r.stdout, r.stderr)
        finally:
            time.sleep(0.5)
            rec.send_signal(signal.SIGINT)
            out, err = rec.communicate(timeout=15)
    assert rec.returncode == 0, err
    conn = sqlite3.connect(db)
    rows = [json.loads(j) for (j,) in conn.execute(
        "SELECT json FROM records WHERE device_id = 'aged87' ORDER BY seq")]
    conn.close()
    # a record per minute of virtual time (the steps are 10-30 s)
    assert 300 <= len(rows) <= 340, len(rows)
    first, last = rows[0], rows[-1]
    for k in ("soh", "soh_sigma", "capacity_ah", "capacity_sigma_ah", "r0_growth",
              "r0_growth_sigma"):
        assert k in last, k
    true = truth_soh()
    assert first["soh"] == 1.0 and first["soh_sigma"] >= 0.05   # the calibration's prior
    # converged: within 2 points of the truth, and the sigma says so honestly
    assert abs(last["soh"] - true) < 0.02, (last["soh"], true)
    assert last["soh_sigma"] < 0.04 and abs(last["soh"] - true) < 3 * last["soh_sigma"]
    assert abs(last["capacity_ah"][0] / json.loads(LGM50.read_text())["cell"]["capacity_ah"]
               - last["soh"]) < 1e-3
    # the report of these records: their plots, the health plot and the SOH line
    r = subprocess.run([BMS_HOST, "report", "--db", db, "--out", str(tmp_path / "rep")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "| last SOH | %.1f %% |" % (100 * last["soh"]) in md and "SOH trend" in md
    for png in ("aged87.png", "aged87_health.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 10000, png


def test_sim_ages_its_model_cell_and_charges_cc_cv(tmp_path):
    from bms_host.device import Device

    with SimDevice(calibration=str(LGM50), cells=2, soc=0.9, age="0.8", charger_cv=4.1,
                   flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms")
            plant = d.eval("[bms.sim.board.plant.cells[0].p[2] / 3600, "
                           "bms.sim.board.plant.cv_v, bms.app.store.cal['cell']['capacity_ah']]")
    cap = json.loads(LGM50.read_text())["cell"]["capacity_ah"]
    # the plant aged, the BMS's calibration as it was
    assert abs(plant[0] - 0.8 * cap) < 1e-3 and plant[1] == 4.1 and plant[2] == cap


def test_sim_age_is_checked_in_one_sentence(tmp_path):
    import pytest

    from bms_host import UserError

    for age in ("2", "0.9:0.5", "old"):
        with pytest.raises(UserError, match="--age is a capacity retention"):
            SimDevice(calibration=str(LGM50), age=age)
    trace = slice_trace(tmp_path / "aged.csv", 0.0, 600.0)
    with pytest.raises(UserError, match="plays as they are"):
        SimDevice(trace=trace, calibration=str(LGM50), age="0.9")
    with pytest.raises(UserError, match="--charger-cv"):
        SimDevice(calibration=str(LGM50), charger_cv=42.0)
