"""Telemetry on the console of a board set up with `make deploy`: main.py starts it, and
`bms-host record|monitor --port` take the records while `bms-host exec` shares the port.
Also: what `make deploy` copies."""
import json
import os
import runpy
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from bms_host import manifest
from bms_host.serialshare import TelSplitter, resolve
from bms_host.sim import SimDevice
from polling import wait_for

ROOT = Path(__file__).resolve().parents[1]
BMS_HOST = str(Path(sys.executable).parent / "bms-host")
LGM50 = str(ROOT / "calibration" / "lgm50.json")
# the simulated board boots as a deployed one: its telemetry is on (boards/sim/boot.py)


def rec(seq):
    return b'\x1eTEL {"device_id": "d", "seq": %d}\n' % seq


def test_records_are_lifted_out_of_raw_repl_traffic_anywhere():
    # a raw-REPL exchange with records landing before "OK", inside the output, after \x04
    stream = (b"raw REPL; CTRL-B to exit\r\n>" + rec(0) + b"OK" + b"hel" + rec(1) + b"lo\r\n"
              + b"\x04" + rec(2) + b"\x04>" + b"\x1e lone separator\n")
    clean = b"raw REPL; CTRL-B to exit\r\n>OKhello\r\n\x04\x04>\x1e lone separator\n"
    for size in (1, 2, 3, 7, len(stream)):   # any split into chunks gives the same
        sp = TelSplitter()
        out, recs = b"", []
        for i in range(0, len(stream), size):
            o, r = sp.feed(stream[i:i + size])
            out += o
            recs += r
        assert out == clean, size
        assert [json.loads(r)["seq"] for r in recs] == [0, 1, 2], size


def test_a_frame_that_never_ends_is_given_back():
    sp = TelSplitter()
    out, recs = sp.feed(b"\x1eTEL " + b"x" * 70000)
    assert recs == [] and len(out) == 70005


def test_main_py_starts_console_telemetry_in_the_background(tmp_path, monkeypatch, capsys):
    """boards/main.py as a board runs it (machine and the board module stand-ins; the
    simulated board's sensors): the BMS runs from a periodic timer, the REPL stays free,
    records go to the console."""
    from sim import board as simboard

    timers, wdts = [], []

    class Timer:
        PERIODIC = 1

        def __init__(self, ident):
            self.ident = ident
            timers.append(self)

        def init(self, period, mode, callback):
            self.period, self.mode, self.callback = period, mode, callback

    class WDT:
        def __init__(self, timeout):
            self.timeout, self.fed = timeout, 0
            wdts.append(self)

        def feed(self):
            self.fed += 1

    machine = types.SimpleNamespace(Timer=Timer, WDT=WDT)
    board = types.SimpleNamespace(make_board=lambda: simboard.make_board(2, None, LGM50, 0.6).board)
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "board", board)
    monkeypatch.chdir(tmp_path)          # the board's flash: no config.json
    g = runpy.run_path(str(ROOT / "boards" / "main.py"))   # returns: the REPL is free
    (t,) = timers
    assert t.ident == -1 and t.period == 10 and t.mode == Timer.PERIODIC
    app = g["app"]
    for _ in range(30):
        t.callback(t)
        time.sleep(0.011)
    out = capsys.readouterr().out
    recs = [json.loads(x[x.index("{"):]) for x in out.split("\n") if "\x1eTEL " in x]
    assert recs and recs[0]["device_id"] == app.device_id and recs[0]["cells"] == 2
    assert app.tel.period_ms == 5000 and wdts[0].fed > 0


def test_record_port_shares_with_exec_on_the_simulated_board(tmp_path):
    db = str(tmp_path / "tel.sqlite")
    with SimDevice(calibration=LGM50, cells=4, flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        rec = subprocess.Popen([BMS_HOST, "record", "--port", sim.port, "--db", db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: resolve(sim.port) != sim.port, 30), "record did not start"
            # the maker's exec, on the same port, while record runs; nothing starts
            # telemetry: the board's boot did
            r = subprocess.run([BMS_HOST, "exec", "--port", sim.port,
                                "import bms; bms.run(20); print('ran', bms.app.now_ms)"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.startswith("ran "), r.stderr
            assert "TEL" not in r.stdout          # records do not leak into exec's output
            r2 = subprocess.run([BMS_HOST, "exec", "--port", sim.port, "bms.run(10)"],
                                capture_output=True, text=True, timeout=60)
            assert r2.returncode == 0 and r2.stdout == "", r2
        finally:
            time.sleep(0.5)
            rec.send_signal(signal.SIGINT)
            out, err = rec.communicate(timeout=15)
    assert rec.returncode == 0, err
    assert "sharing %s" % sim.port in err
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT seq, t_ms FROM records ORDER BY seq").fetchall()
    conn.close()
    # 30 virtual seconds at one record per 5 s
    assert [r[0] for r in rows] == list(range(len(rows))) and 6 <= len(rows) <= 7, rows
    assert "stored %d new records" % len(rows) in out


def test_exec_and_eval_read_around_records_without_a_recorder(tmp_path):
    from bms_host.device import Device

    with SimDevice(calibration=LGM50, cells=2, flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms")
            assert d.exec("bms.run(20); print('ran')").replace("\r", "") == "ran\n"
            # eval parses what the device printed: the records printed meanwhile stay out
            seq = d.eval("[bms.run(11), bms.app.tel.seq][1]")
    assert seq >= 6


def test_monitor_port_shows_the_pack_and_ends_with_the_device(tmp_path):
    with SimDevice(calibration=LGM50, cells=3, flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        mon = subprocess.Popen([BMS_HOST, "monitor", "--port", sim.port],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: resolve(sim.port) != sim.port, 30), "monitor did not start"
            r = subprocess.run([BMS_HOST, "exec", "--port", sim.port,
                                "import bms; bms.run(12)"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            time.sleep(0.5)
        finally:
            sim.stop()      # the device goes away: the monitor ends by itself
        out, err = mon.communicate(timeout=15)
    assert mon.returncode == 0 and "went away" in err, err
    assert "seq 2" in out, out[-3000:]
    last = out[out.rindex("seq 2"):]          # the third record's frame
    for word in ("pack", "SOC", "SOH", "SOP dis", "FETs", "none", "voltage", "sigma",
                 "capacity", "R0 growth"):
        assert word in last, word
    cells = [x for x in last.splitlines() if x.strip("\u2502 ").startswith(("1 ", "2 ", "3 "))]
    assert len(cells) == 3 and all(" V " in c and " C " in c for c in cells), cells


# ---- make deploy

def deploy_commands(*args, dry=True, port="/dev/ttyACM9"):
    # -o: the venv counts as set up (no pip run); -n: print the commands, run none
    cmd = ["make", "-s"] + (["-n"] if dry else []) + ["-o", ".venv/.installed", "deploy",
                                                       "PORT=" + port, *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def shipped_drivers():
    """The driver files device/manifest.py ships."""
    return sorted(t.split("/", 1)[1] for t in manifest.load().targets()
                  if t.startswith("drivers/"))


@pytest.mark.parametrize("board,folder", [(None, "pico"), ("pico", "pico"),
                                          ("RPI_PICO", "pico"), ("esp32", "esp32"),
                                          ("ESP32_GENERIC", "esp32")])
def test_deploy_copies_exactly_what_ships(board, folder):
    rc, text = deploy_commands(*(["BOARD=" + board] if board else []))
    assert rc == 0, text
    assert "cp boards/%s/board.py :board.py" % folder in text
    copied = sorted(w.split("/")[-1] for w in text.split() if w.startswith("boards/drivers/"))
    assert copied == shipped_drivers() and "sim_i2c.py" not in text
    assert ("no BOARD given" in text) == (board is None)


def test_deploy_to_the_simulated_board_while_its_bms_prints_records(tmp_path):
    flash = tmp_path / "flash"
    cfg = tmp_path / "my-config.json"
    cfg.write_text('{"device_id": "garage"}')
    with SimDevice(calibration=LGM50, cells=2, flash=str(flash)) as sim:
        sim.wait_ready()
        r = subprocess.run([BMS_HOST, "exec", "--port", sim.port, "import bms; bms.run(6)"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rc, text = deploy_commands("BOARD=esp32", "CONFIG=" + str(cfg), dry=False,
                                   port=sim.port)
    assert rc == 0, text
    assert sorted(p.name for p in (flash / "drivers").iterdir()) == shipped_drivers()
    assert sorted(p.name for p in (flash / "bms").iterdir()) == \
        sorted(p.name for p in (ROOT / "device" / "bms").glob("*.py"))
    assert (flash / "board.py").read_text() == (ROOT / "boards/esp32/board.py").read_text()
    assert (flash / "main.py").read_text() == (ROOT / "boards/main.py").read_text()
    assert (flash / "config.json").read_text() == cfg.read_text()
    assert (flash / "lib" / "chumicro_mqtt" / "client.py").exists()


def test_deploy_with_a_wrong_board_says_which_to_use():
    rc, text = deploy_commands("BOARD=pico2", dry=False)   # stops before mpremote
    assert rc != 0 and "there is no board 'pico2': use BOARD=pico or BOARD=esp32" in text


def test_monitor_stops_cleanly_on_ctrl_c(tmp_path):
    import tty

    master, slave = os.openpty()     # a stand-in device: its console is this pty's far end
    tty.setraw(slave)
    port = os.ttyname(slave)
    mon = subprocess.Popen([BMS_HOST, "monitor", "--port", port], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: resolve(port) != port, 30), "monitor did not start"
        os.write(master, b">>> " + rec(41).replace(b'"seq"', b'"cells": 1, "v": [3.5], "seq"'))
        time.sleep(1.0)
        mon.send_signal(signal.SIGINT)
        out, err = mon.communicate(timeout=15)
    finally:
        if mon.poll() is None:
            mon.kill()
        os.close(master)
        os.close(slave)
    assert mon.returncode == 0 and "monitor: stopped (1 records)" in err, err
    assert "seq 41" in out and "3.500 V" in out and resolve(port) == port


def test_monitor_shows_the_weakest_cells_health_with_its_sigma():
    from rich.console import Console

    from bms_host import monitor

    rec = {"device_id": "p", "seq": 3, "cells": 2, "v": [3.6, 3.61], "soh": 0.871,
           "soh_sigma": 0.012, "capacity_ah": [4.52, 4.44], "capacity_sigma_ah": [0.05, 0.06],
           "r0_growth": [1.31, 1.22], "r0_growth_sigma": [0.04, 0.03]}
    out = Console(width=100, record=True, force_terminal=False)
    out.print(monitor.render({"p": (rec, 0.0)}, now=0.0))
    text = out.export_text()
    assert "87.1 % +- 1.2 %" in text
    assert "4.44 Ah +- 0.06 Ah" in text and "x1.31 +- 0.04" in text
    rec = {"device_id": "p", "seq": 4, "cells": 1, "v": [3.6]}   # an older device: no health
    out = Console(width=100, record=True, force_terminal=False)
    out.print(monitor.render({"p": (rec, 0.0)}, now=0.0))
    assert "capacity" not in out.export_text()
