"""Telemetry end to end on the host: a real mosquitto on loopback, MicroPython devices,
the recorder, report and refit from field data."""
import json
import os
import random
import sqlite3
import subprocess
import time

import pytest

from bms_host import UserError, bench_telemetry, cli, mpylib, record, refit, report
from bms_host.mpy import micropython_binary, micropython_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LGM50 = os.path.join(ROOT, "calibration", "lgm50.json")
KEY = "k3y-Only-The-Device-Knows-0123456789"

needs_broker = pytest.mark.skipif(
    not (bench_telemetry.shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto")),
    reason="mosquitto is not installed (make apt)")


@needs_broker
def test_short_bench_with_broker_restart_loses_nothing(tmp_path):
    res = bench_telemetry.run_bench(devices=3, seconds=10, down_s=2, workdir=str(tmp_path),
                                    log=lambda m: None)
    line = bench_telemetry.line(res)
    assert res["sent"] >= 27 and res["lost"] == 0 and res["duplicated"] == 0, line
    assert res["stored"] == res["sent"], line


def test_recorder_is_idempotent_and_reports_gaps(tmp_path):
    conn = record.open_db(str(tmp_path / "t.sqlite"))
    rec = {"device_id": "d1", "boot": 5, "seq": 0, "t_ms": 0, "v": [3.7]}
    assert record.insert(conn, rec)
    assert not record.insert(conn, dict(rec))  # QoS 1 redelivery
    assert record.insert(conn, dict(rec, boot=6))  # the device rebooted: seq restarts
    for s in (1, 2, 5, 6):
        record.insert(conn, dict(rec, seq=s))
    conn.commit()
    assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 6
    lines = record.gap_report(conn)
    assert lines[0] == "d1: 6 records, 2 boot(s), 2 missing"
    assert "gaps at 3-4" in lines[1]
    assert record.parse(b"not json") is None and record.parse(b'{"seq": 1}') is None


@pytest.mark.parametrize("argv,words", [
    (["--mqtt", "127.0.0.1:%d" % bench_telemetry.free_port()], "cannot reach the MQTT broker"),
    (["--mqtt", "localhost"], "--mqtt must be HOST:PORT"),
    (["--port", "/dev/does-not-exist"], "cannot open serial port"),
])
def test_record_errors_are_one_sentence(tmp_path, capsys, argv, words):
    rc = cli.main(["record"] + argv + ["--db", str(tmp_path / "t.sqlite"), "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err


def test_unwritable_db_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        record.open_db(str(tmp_path / "no" / "such" / "t.sqlite"))


def field_db(db, r0_scale=1.3, cap_scale=0.92, seconds=3600, seed=1):
    """Field records of an aged cell: the device model as the plant (R0 x r0_scale,
    capacity x cap_scale) on a random drive cycle, one record per second."""
    from bms import calfile, model, telemetry

    cal, _ = calfile.load(LGM50)
    rnd = random.Random(seed)
    cap = cal["cell"]["capacity_ah"]
    p = model.pack(cal, capacity_ah=cap * cap_scale)
    sim = model.Simulator(p, 0.9, 25.0, r0_scale)
    conn = record.open_db(db)
    i, hold = 0.0, 0
    for k in range(seconds):
        if hold <= 0:
            i = rnd.choice([0.0, 0.5, 1.0, 2.0, -0.5, -1.0]) * cap * rnd.random() + 0.4 * cap
            hold = rnd.randint(2, 30)
        hold -= 1
        v = sim.step(i, 25.0, 1.0)
        st = {"t_ms": (k + 1) * 1000, "cells": 1, "v": [v + rnd.gauss(0, 0.001)],
              "temp_c": [sim.ts + rnd.gauss(0, 0.05)], "i_a": i + rnd.gauss(0, 0.01),
              "soc": [sim.soc], "soc_sigma": [0.01], "soh": 0.95, "soh_sigma": 0.02,
              "sop_dis_a": [20.0, 15.0, 10.0], "sop_chg_a": [8.0, 6.0, 5.0],
              "fet_chg": True, "fet_dsg": True, "faults": []}
        record.insert(conn, telemetry.make_record(st, "cellA", 42, k), 1e9 + k)
    conn.commit()
    conn.close()
    return cal


def test_refit_finds_r0_grown_by_30_percent(tmp_path, capsys):
    db = str(tmp_path / "field.sqlite")
    base = field_db(db)
    out = tmp_path / "refit.json"
    rep = refit.run_from_db(db, "cellA", LGM50, str(out))
    assert abs(rep["r0_scale"] / 1.3 - 1.0) < 0.05, rep
    from bms import calfile

    new, _ = calfile.load(str(out))
    r_old = base["tables"]["r0_ohm"][2][10]
    assert abs(new["tables"]["r0_ohm"][2][10] / (1.3 * r_old) - 1.0) < 0.05
    assert abs(new["cell"]["capacity_ah"] / (0.92 * base["cell"]["capacity_ah"]) - 1) < 0.03
    assert new["provenance"]["refit"]["device_id"] == "cellA"
    assert new["limits"] == base["limits"]
    assert "R0 tables" in capsys.readouterr().out
    # the report reads the same database
    args = type("A", (), {"db": db, "out": str(tmp_path / "rep")})
    assert report.run(args) == 0
    assert (tmp_path / "rep" / "cellA.png").stat().st_size > 10000
    assert "cellA" in (tmp_path / "rep" / "summary.md").read_text()


DEVICE = """
import time, json
from bms import telemetry
applied = []
def on_cal(text):
    applied.append(text)
    return True, "applied"
tel = telemetry.Telemetry("dk", period_s=0.5, key=%r, on_calibration=on_cal,
                          mqtt={"host": "127.0.0.1", "port": %d, "user": "dev",
                                "password": "devpass"})
st = {"t_ms": 0, "cells": 1, "v": [3.7], "temp_c": [25.0], "i_a": 0.0, "soc": [0.5],
      "soc_sigma": [0.01], "soh": 1.0, "faults": [], "cal_checksum": "0" * 64}
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < %d and len(applied) < 1:
    now = time.ticks_diff(time.ticks_ms(), t0)
    st["t_ms"] = now
    tel.tick(now, st)
    time.sleep_ms(50)
for _ in range(20):
    tel.poll()
    time.sleep_ms(20)
print("STATS " + json.dumps(tel.stats()))
print("APPLIED %%d" %% len(applied))
"""


@needs_broker
def test_signed_calibration_over_mqtt_and_key_never_leaks(tmp_path):
    import paho.mqtt.client as mqtt

    with bench_telemetry.Broker(str(tmp_path), passwords={"dev": "devpass"}) as broker:
        env = micropython_env([mpylib.ensure()])
        dev = subprocess.Popen([micropython_binary(), "-c", DEVICE % (KEY, broker.port, 15000)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        seen = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.username_pw_set("dev", "devpass")
        c.on_message = lambda cl, u, m: seen.append((m.topic, m.payload))
        c.connect("127.0.0.1", broker.port)
        c.subscribe("bms/#", qos=1)
        c.loop_start()
        try:
            deadline = time.time() + 10
            while not any(t.endswith("/telemetry") for t, _ in seen) and time.time() < deadline:
                time.sleep(0.05)
            text = open(LGM50).read()
            from bms import telemetry

            c.publish("bms/dk/calibration", telemetry.sign(b"not the key", text), qos=1)
            c.publish("bms/dk/calibration", json.dumps({"calibration": text, "hmac": "0" * 64}),
                      qos=1)
            c.publish("bms/dk/calibration", telemetry.sign(KEY.encode(), text), qos=1)
            out, _ = dev.communicate(timeout=20)
            time.sleep(0.3)
        finally:
            c.loop_stop()
            c.disconnect()
            if dev.poll() is None:
                dev.kill()
    assert "APPLIED 1" in out, out[-2000:]
    results = [json.loads(p) for t, p in seen if t == "bms/dk/calibration/result"]
    assert [r["ok"] for r in results] == [False, False, True], results
    assert results[0]["message"] == "bad signature"
    tel = [p for t, p in seen if t == "bms/dk/telemetry"]
    assert tel and json.loads(tel[0])["device_id"] == "dk"
    from bms import hmac_sha256

    key_hex = "".join("%02x" % b for b in KEY.encode())
    everything = out + "".join(p.decode("utf-8", "replace") for t, p in seen
                               if not t.endswith("/calibration"))
    for secret in (KEY, key_hex, "devpass"):
        assert secret not in everything
    assert hmac_sha256.verify(KEY, "x", hmac_sha256.hexdigest(KEY, "x"))


@needs_broker
def test_device_with_wrong_password_reports_it(tmp_path):
    with bench_telemetry.Broker(str(tmp_path), passwords={"dev": "other"}) as broker:
        env = micropython_env([mpylib.ensure()])
        r = subprocess.run([micropython_binary(), "-c", DEVICE % (KEY, broker.port, 2500)],
                           env=env, capture_output=True, text=True, timeout=30)
    stats = json.loads([x for x in r.stdout.splitlines() if x.startswith("STATS ")][0][6:])
    assert not stats["connected"] and "rejected CONNECT" in stats["last_error"]
    assert stats["buffered"] == stats["records"] > 0 and "devpass" not in r.stdout


def test_db_rows_have_the_record_fields(tmp_path):
    db = str(tmp_path / "f.sqlite")
    field_db(db, seconds=5)
    row = sqlite3.connect(db).execute("SELECT json FROM records").fetchone()[0]
    rec = json.loads(row)
    for k in ("device_id", "boot", "seq", "t_ms", "v", "temp_c", "i_a", "soc", "soh",
              "sop_dis_a", "fet_chg", "faults"):
        assert k in rec
