"""The whole application on the simulated device publishes telemetry over MQTT to a real
mosquitto, and the host recorder stores it."""
import sqlite3
import time

from bms_host.bench_telemetry import Broker, RecorderThread
from bms_host.device import Device
from bms_host.sim import SimDevice


def test_sim_device_publishes_records_the_recorder_stores(tmp_path):
    db = str(tmp_path / "tel.sqlite")
    with Broker(tmp_path) as broker:
        rec = RecorderThread(db, broker.port)
        rec.start()
        try:
            with SimDevice(flash=str(tmp_path / "flash"), mqtt="127.0.0.1:%d" % broker.port,
                           device_id="pack7", period_s=1.0) as sim:
                sim.wait_ready()
                with Device(sim.port) as d:
                    d.exec("import bms, time")
                    # 20 virtual seconds of BMS work, then real time for the network.
                    d.exec("bms.run(20)")
                    d.exec("for _ in range(100):\n bms.app.tel.poll()\n time.sleep(0.03)",
                           timeout=30)
                    stats = d.eval("bms.app.tel.stats()")
            deadline = time.time() + 10
            while time.time() < deadline and _count(db) < stats["sent"]:
                time.sleep(0.1)
        finally:
            rec.stop()
    assert stats["sent"] >= 15 and stats["dropped"] == 0, stats
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT device_id, seq FROM records ORDER BY seq").fetchall()
    conn.close()
    assert len(rows) == stats["sent"]
    assert {r[0] for r in rows} == {"pack7"}
    assert [r[1] for r in rows] == sorted({r[1] for r in rows})  # no duplicates


def _count(db):
    try:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
