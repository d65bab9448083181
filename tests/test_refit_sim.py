"""The fleet refit end to end on the simulated device: a MicroPython device running the
committed LG M50 calibration publishes telemetry over MQTT to a real mosquitto, the
recorder stores it, and `bms-host fit --from-db` refits from it. On a cell that matches
the calibration the refit must leave it alone; on a cell with 30 % more resistance it
must find that within 5 %."""
import json
import os
import random
import sqlite3
import time

import pytest

from bms_host import REPO, cli, push, refit
from bms_host.bench_telemetry import Broker, RecorderThread, shutil
from bms_host.calibration import write_calibration
from bms_host.device import Device
from bms_host.sim import SimDevice

LGM50 = str(REPO / "calibration" / "lgm50.json")
SECONDS = 240          # virtual seconds of telemetry per device (about 25 s of real time)

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")),
    reason="mosquitto is not installed (make apt)")


def pulse_trace(path, seconds, cap_ah, seed=7, ambient_c=25.0):
    """Random pulses at one ambient: 3-12 s at 0.3-1.5C either way, 3-12 s rests; steps
    fall anywhere between two telemetry records, as in the field."""
    rnd = random.Random(seed)
    t, rows = 0.0, [(0.0, 0.0)]
    while t < seconds:
        t += rnd.uniform(3, 12)
        rows.append((t, rnd.choice([1, 1, -1]) * cap_ah * rnd.uniform(0.3, 1.5)))
        t += rnd.uniform(3, 12)
        rows.append((t, 0.0))
    with open(path, "w") as f:
        f.write("time_s,current_a,ambient_c\n")
        for a, b in rows:
            f.write("%.3f,%.4f,%.2f\n" % (a, b, ambient_c))


def plant_calibration(path, r0_factor):
    """The committed calibration with the resistance tables scaled: a cell that aged."""
    from bms_host import use_device_code

    use_device_code()
    from bms import calfile

    cal, _ = calfile.load(LGM50)
    for name in ("r0_ohm", "r0c_ohm", "rh_ohm"):
        if name in cal["tables"]:
            cal["tables"][name] = [[v * r0_factor for v in row] for row in cal["tables"][name]]
    write_calibration(cal, path)
    return cal


def record(tmp, plant_cal_path, seconds=SECONDS):
    """Telemetry of a simulated device whose cell is plant_cal_path and which runs the
    committed calibration (pushed over its port); returns the database path."""
    db = str(tmp / "tel.sqlite")
    trace = str(tmp / "trace.csv")
    pulse_trace(trace, seconds + 30, 5.0)
    with Broker(tmp) as broker:
        rec = RecorderThread(db, broker.port)
        rec.start()
        try:
            with SimDevice(trace=trace, calibration=plant_cal_path, flash=str(tmp / "flash"),
                           soc=0.6, mqtt="127.0.0.1:%d" % broker.port, device_id="cell",
                           period_s=1.0) as sim:
                sim.wait_ready()
                push.push(sim.port, LGM50)
                with Device(sim.port) as d:
                    d.exec("import bms, time")
                    for _ in range(seconds // 30):
                        d.exec("bms.run(30)", timeout=300)
                        d.exec("for _ in range(10):\n bms.app.tel.poll()\n time.sleep(0.01)",
                               timeout=60)
                    for _ in range(20):
                        d.exec("for _ in range(10):\n bms.app.tel.poll()\n time.sleep(0.01)",
                               timeout=60)
                        if d.eval("bms.app.tel.stats()['buffered']") == 0:
                            break
                    stats = d.eval("bms.app.tel.stats()")
                    running = d.eval("bms.app.store.checksum")
            deadline = time.time() + 20
            while time.time() < deadline and _count(db) < stats["sent"]:
                time.sleep(0.2)
        finally:
            rec.stop()
    assert stats["dropped"] == 0 and _count(db) >= seconds - 5, stats
    with open(LGM50) as f:
        assert running == json.loads(f.read())["checksum"]
    return db


def _count(db):
    try:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_right_calibration_is_left_alone(tmp_path, capsys):
    db = record(tmp_path, LGM50)
    out = tmp_path / "refit.json"
    rc = cli.main(["fit", "--from-db", db, "--device", "cell", "--calibration", LGM50,
                   "--out", str(out)])
    text = capsys.readouterr()
    from bms import calfile

    new, _ = calfile.load(str(out))
    val = new["provenance"]["refit"]["validation"]
    fitted = new["provenance"]["refit"]["result"].get("r0_scale_fitted", 1.0)
    if val["passed"]:   # taken only if it changes nothing measurable
        assert abs(new["provenance"]["refit"]["result"]["r0_scale"] - 1.0) < 0.03, val
        assert rc == 0
    else:
        assert rc == 2 and "refused" in text.err and len(text.err.strip().splitlines()) == 1
        # the file holds what was fitted, marked failed
        base, _ = calfile.load(LGM50)
        assert new["tables"]["r0_ohm"][2][10] == pytest.approx(
            base["tables"]["r0_ohm"][2][10] * fitted, rel=1e-3)
        assert new["cell"] == base["cell"] and new["tables"]["ocv_v"] == base["tables"]["ocv_v"]
        # push refuses the file marked failed, before it touches a port
        with pytest.raises(refit.UserError, match="failed its own validation"):
            push.push("/dev/does-not-exist", str(out))
    assert abs(fitted - 1.0) < 0.05, val
    print("right calibration:", val, "R0 fitted x%.3f" % fitted)


def test_thirty_percent_more_resistance_is_found(tmp_path, capsys):
    plant = str(tmp_path / "aged.json")
    plant_calibration(plant, 1.3)
    db = record(tmp_path, plant)
    out = tmp_path / "refit.json"
    rc = cli.main(["fit", "--from-db", db, "--device", "cell", "--calibration", LGM50,
                   "--out", str(out)])
    text = capsys.readouterr()
    from bms import calfile

    new, _ = calfile.load(str(out))
    res = new["provenance"]["refit"]["result"]
    val = new["provenance"]["refit"]["validation"]
    assert rc == 0 and val["passed"], (text.err, val)
    assert abs(res["r0_scale"] / 1.3 - 1.0) < 0.05, res
    base, _ = calfile.load(LGM50)
    assert abs(new["tables"]["r0_ohm"][2][10] / (1.3 * base["tables"]["r0_ohm"][2][10]) - 1) \
        < 0.05
    assert val["voltage_rms_mv"]["new"] < 0.5 * val["voltage_rms_mv"]["old"], val
    assert new["limits"] == base["limits"]
    print("aged cell:", val, "R0 x%.3f" % res["r0_scale"])
