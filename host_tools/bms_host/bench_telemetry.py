"""Telemetry bench: N simulated devices (real MicroPython processes running
device/bms/telemetry.py with a synthetic status) publish to a real mosquitto on loopback,
the recorder stores into SQLite, and the broker is restarted once in the middle. Ends with
one line: `records: sent=N stored=N lost=0 duplicated=0 rate=R/s`."""
import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from . import UserError
from .mpy import micropython_binary, micropython_env

HELP = "telemetry bench: simulated devices, mosquitto restart, recorder; zero loss"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary():
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise UserError("the MQTT broker mosquitto is missing: run `make apt` "
                        "(sudo apt-get install mosquitto)")
    return found


class Broker:
    """A private mosquitto on 127.0.0.1 with a generated config; its state (persistent
    sessions, queued messages) is kept in workdir across restart()."""

    def __init__(self, workdir, port=None, passwords=None):
        self.workdir = str(workdir)
        self.port = port or free_port()
        self.proc = None
        self.conf = os.path.join(self.workdir, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port,
                 "persistence true",
                 "persistence_location %s/" % self.workdir,
                 "max_queued_messages 0",  # the recorder's queue while it reconnects
                 "set_tcp_nodelay true",
                 # as root mosquitto would switch to user `mosquitto`, which cannot write
                 # its persistence file into our folder: stay the user who runs the tests
                 "user %s" % pwd.getpwuid(os.getuid()).pw_name,
                 "log_dest file %s/mosquitto.log" % self.workdir]
        if passwords:  # {user: password}: a password file made with mosquitto_passwd
            pw = os.path.join(self.workdir, "passwd")
            open(pw, "w").close()
            for user, password in passwords.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                                "-b", pw, user, password], check=True, capture_output=True)
            os.chmod(pw, 0o600)
            lines += ["allow_anonymous false", "password_file %s" % pw]
        else:
            lines.append("allow_anonymous true")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise UserError("mosquitto exited at start (see %s/mosquitto.log)" % self.workdir)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise UserError("mosquitto did not listen on port %d within %g s" % (self.port, timeout))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s=0.0):
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# The simulated device: telemetry with a synthetic status at the record rate, then a
# drain (no new records) until everything buffered is acknowledged, then its stats.
DEVICE = """
import time, json, math
from bms import telemetry
cfg = %r
tel = telemetry.Telemetry(cfg["id"], period_s=cfg["period_s"], mqtt=cfg["mqtt"],
                          serial=False, buffer_max=cfg["buffer_max"])
n = 4
st = {"device_id": cfg["id"], "cells": n, "v": [3.7] * n, "temp_c": [25.0, 25.5],
      "i_a": 0.0, "soc": [0.8] * n, "soc_sigma": [0.01] * n, "soc_pack": 0.8, "soh": 0.97,
      "soh_sigma": 0.01, "sop_dis_a": [40.0, 30.0, 20.0], "sop_chg_a": [10.0, 8.0, 5.0],
      "fet_chg": True, "fet_dsg": True, "faults": [], "backend": "python",
      "cal_checksum": "0" * 64}
t0 = time.ticks_ms()
end_ms = int(cfg["seconds"] * 1000)
while True:
    now = time.ticks_diff(time.ticks_ms(), t0)
    if now >= end_ms:
        break
    st["t_ms"] = now
    st["i_a"] = 5.0 * math.sin(now / 7000.0)
    st["v"] = [3.7 - 0.02 * st["i_a"] + 0.001 * k for k in range(n)]
    tel.tick(now, st)
    time.sleep_ms(100)
dl = time.ticks_add(time.ticks_ms(), int(cfg["drain_s"] * 1000))
while tel.stats()["buffered"] and time.ticks_diff(dl, time.ticks_ms()) > 0:
    tel.poll()
    time.sleep_ms(20)
print("STATS " + json.dumps(tel.stats()))
tel.close()
"""


def start_device(dev_id, port, seconds, env, period_s=1.0, drain_s=30.0, buffer_max=200):
    cfg = {"id": dev_id, "period_s": period_s, "seconds": seconds, "drain_s": drain_s,
           "buffer_max": buffer_max, "mqtt": {"host": "127.0.0.1", "port": port}}
    return subprocess.Popen([micropython_binary(), "-c", DEVICE % (cfg,)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def device_stats(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("STATS "):
            return json.loads(line[6:])
    raise RuntimeError("a simulated device ended without stats (exit %s): %s"
                       % (proc.returncode, (err or out)[-800:]))


class RecorderThread(threading.Thread):
    """The same Recorder as `bms-host record --mqtt`, in a thread with its own database
    connection."""

    def __init__(self, db, port, client_id="bms-bench-recorder"):
        super().__init__(daemon=True)
        from . import record

        self.record = record
        self.db = db
        self.source = record.MqttSource("127.0.0.1", port, client_id=client_id)
        self.source.start()
        self.rec = None
        self.ready = threading.Event()

    def run(self):
        conn = self.record.open_db(self.db)
        self.rec = self.record.Recorder(conn, self.source)
        self.ready.set()
        try:
            self.rec.run()
        finally:
            conn.commit()
            conn.close()

    def stop(self):
        self.ready.wait(5)
        if self.rec is not None:
            self.rec.stop_flag = True
        self.join(10)
        self.source.stop()


def count(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    finally:
        conn.close()


def run_bench(devices=20, seconds=120.0, down_s=3.0, workdir=None, log=None):
    """Returns a dict with sent, stored, lost, duplicated, rate, repeats."""
    from . import mpylib, record

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bms-bench-telemetry-")
        workdir = tmp.name
    db = os.path.join(workdir, "telemetry.sqlite")
    env = micropython_env([mpylib.ensure()])
    broker = Broker(workdir).start()
    procs = []
    recorder = None
    try:
        recorder = RecorderThread(db, broker.port)
        recorder.start()
        t0 = time.time()
        for k in range(devices):
            procs.append(start_device("sim%02d" % k, broker.port, seconds, env))
        log("bench: %d devices at 1 record/s for %g s, broker on port %d"
            % (devices, seconds, broker.port))
        time.sleep(max(0.0, t0 + seconds / 2 - time.time()))
        log("bench: restarting the broker (down %g s)" % down_s)
        broker.restart(down_s)
        stats = [device_stats(p, seconds + 60) for p in procs]
        sent = sum(s["records"] for s in stats)
        deadline = time.time() + 20
        while count(db) < sent and time.time() < deadline:
            time.sleep(0.2)
        recorder.stop()
        conn = record.open_db(db)
        expected = {("sim%02d" % k, s["boot"], q) for k, s in enumerate(stats)
                    for q in range(s["records"])}
        rows = conn.execute("SELECT device_id, boot, seq FROM records").fetchall()
        first, last = conn.execute("SELECT MIN(rx_time), MAX(rx_time) FROM records").fetchone()
        conn.close()
        stored = set(rows)
        lost = len(expected - stored)
        duplicated = (len(rows) - len(stored)) + len(stored - expected)
        span = (last - first) if rows and last > first else 1.0
        res = {"sent": sent, "stored": len(rows), "lost": lost, "duplicated": duplicated,
               "rate": len(rows) / span, "repeats": recorder.rec.repeats,
               "dropped": sum(s["dropped"] for s in stats),
               "acked": sum(s["sent"] for s in stats)}
        log("bench: devices acked %d, dropped %d; recorder ignored %d redeliveries"
            % (res["acked"], res["dropped"], res["repeats"]))
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if recorder is not None and recorder.is_alive():
            recorder.stop()
        broker.stop()
        if tmp is not None:
            tmp.cleanup()


def line(res):
    return ("records: sent=%d stored=%d lost=%d duplicated=%d rate=%.1f/s"
            % (res["sent"], res["stored"], res["lost"], res["duplicated"], res["rate"]))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bms-host bench telemetry", description=HELP)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--down", type=float, default=3.0, help="seconds the broker stays down")
    args = ap.parse_args(argv)
    try:
        res = run_bench(args.devices, args.seconds, args.down)
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print(line(res), flush=True)
    return 0 if res["lost"] == 0 and res["duplicated"] == 0 and res["sent"] else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
