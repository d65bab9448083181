"""The device at work, end to end on the simulated board over a pty: calibration push
and hot reload, corrupt calibrations refused, power cuts during pushes, over-voltage
trip and latch, an unplugged current sensor."""
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bms_host import UserError, use_device_code
from bms_host.device import Device
from bms_host.push import push
from bms_host.sim import SimDevice

ROOT = Path(__file__).resolve().parents[1]
LGM50 = ROOT / "calibration" / "lgm50.json"
BMS_HOST = str(Path(sys.executable).parent / "bms-host")
use_device_code()
from bms import calfile  # noqa: E402
from sim import sample_cal  # noqa: E402


def write_cal(path, cal):
    path.write_text(calfile.encode(json.dumps(cal, sort_keys=True, indent=1)))
    return str(path)


@pytest.fixture
def sample_file(tmp_path):
    return write_cal(tmp_path / "sample.json", sample_cal.calibration())


def checksum_of(path):
    return calfile.split(Path(path).read_text())[0]


def test_push_hot_reloads_and_rejects_corrupt(tmp_path, sample_file):
    with SimDevice(calibration=sample_file, flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms")
            assert d.eval("bms.cal_info()['checksum']") == checksum_of(sample_file)
        new = push(sim.port, str(LGM50))
        assert new == checksum_of(LGM50)
        with Device(sim.port) as d:
            d.exec("bms.run(2)")
            st = d.eval("bms.status(False)")
            assert st["cal_checksum"] == new and st["soc"] and 0 <= st["soc"][0] <= 1
            assert d.eval("bms.cal_info()['cell']") == "lgm50"

        good = Path(LGM50).read_text()
        truncated = tmp_path / "truncated.json"
        truncated.write_text(good[: len(good) // 2])
        edited = tmp_path / "edited.json"
        edited.write_text(good.replace('"v_max":4.2', '"v_max":4.1', 1))
        assert edited.read_text() != good
        cal = sample_cal.calibration()
        cal["pack"] = {"series_cells": 4}
        wrong_count = write_cal(tmp_path / "count.json", cal)
        cal = sample_cal.calibration()
        cal["limits"]["v_max"] = 4.4
        too_high = write_cal(tmp_path / "limits.json", cal)
        cases = [(str(truncated), "checksum"), (str(edited), "checksum mismatch"),
                 (wrong_count, "series_cells"), (too_high, "maxima")]
        for path, words in cases:
            # The device checks on its own, even when the host's check is skipped.
            with pytest.raises(UserError, match=words) as e:
                push(sim.port, path, check=False)
            assert "rejected" in str(e.value)
            if path != wrong_count:  # only the board knows its cell count
                with pytest.raises(UserError, match="not a valid calibration"):
                    push(sim.port, path)
            with Device(sim.port) as d:
                assert d.eval("bms.app.store.checksum") == new


def test_power_cut_during_push_keeps_old_or_new(tmp_path, sample_file):
    """50 pushes, each cut by SIGKILL at a random moment; every boot finds an intact
    calibration that is either the old or the new one."""
    rng = random.Random(7)
    other = tmp_path / "lgm50.json"
    other.write_bytes(LGM50.read_bytes())
    files = {checksum_of(sample_file): sample_file, checksum_of(other): str(other)}
    sim = SimDevice(calibration=sample_file, flash=str(tmp_path / "flash"))
    outcomes = {"old": 0, "new": 0}
    before = checksum_of(sample_file)
    try:
        sim.boot()
        sim.wait_ready()
        # How long one whole push takes here (process start included): the cuts are
        # spread over that window.
        window = {}
        for f in files.values():  # the larger file uploads longer: a window for each
            times = []
            for _ in range(3):  # the median: a cold first start must not stretch it
                t0 = time.time()
                subprocess.run([BMS_HOST, "push", f, "--port", sim.port], check=True,
                               capture_output=True)
                times.append(time.time() - t0)
            window[f] = sorted(times)[1]
        before = checksum_of(files[list(files)[-1]])
        for k in range(50):
            target = [f for c, f in files.items() if c != before][0]
            pusher = subprocess.Popen([BMS_HOST, "push", target, "--port", sim.port],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3 * window[target], 1.2 * window[target]))
            sim.kill()
            # A pty does not report a vanished board to the host side; end the pusher
            # too, so it cannot eat the next boot's output. What matters is the flash.
            pusher.kill()
            pusher.wait()
            sim.boot()
            sim.wait_ready()
            with Device(sim.port) as d:
                after = d.eval("__import__('bms').app.store.checksum")
                assert d.eval("__import__('bms').app.store.source") == "cal/active.json"
            assert after in files, "boot %d found no intact calibration" % k
            outcomes["old" if after == before else "new"] += 1
            before = after
    finally:
        sim.stop()
    # The random cuts landed both before and after the swap.
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes


def _fets(d):
    return d.eval("(bms.app.protection.charge_fet_on, bms.app.protection.discharge_fet_on)")


def test_over_voltage_trace_trips_after_delay_and_latches(tmp_path, sample_file):
    trace = tmp_path / "charge.csv"
    # Charge at C/5 into the limit, then (after the trip) a discharge that the open
    # charge FET does not block.
    trace.write_text("time_s,current_a,ambient_c\n" + "".join(
        "%d,%s,25\n" % (k, "-1.0" if k < 1000 else "2.5") for k in range(0, 3600)))
    with SimDevice(trace=str(trace), calibration=sample_file, soc=0.93,
                   flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms\nfrom bms import application as A")
            d.exec("""
def _until_ov():
    a = bms.app
    bms.run(1)  # boot: FETs close after the first valid sample
    below = 0
    while a.protection.charge_fet_on:
        bms.run(0.01)
        if a.sensors.sample.cell_v[0] <= a.protection.config['ov_trip_v']:
            below = a.now_ms
        if a.now_ms > 1800000:
            return None
    return below, a.now_ms
""")
            # The cell creeps over the limit with sensor noise: the trip comes one delay
            # after the last sample at or below it, not earlier, not later.
            t_below, t_open = d.eval("_until_ov()", timeout=300)
            delay = d.eval("bms.app.protection.config['ov_trip_ms']")
            assert t_below > 0 and delay <= t_open - t_below <= delay + 20, (t_below, t_open)
            assert _fets(d) == (False, True)
            d.exec("bms.run(1100 - bms.app.now_ms / 1000)")  # into the discharge phase
            assert d.eval("bms.app.sensors.sample.cell_v[0]") < 4.1
            assert "OV" in d.eval("bms.status(False)['faults']")
            assert _fets(d) == (False, True)
            assert "OV" in [e[0] for e in d.eval("bms.app.log.events()")]
            assert "OV" in d.exec("bms.faults()")  # the maker's printed view
            d.eval("bms.reset_faults()")
            d.exec("bms.run(0.02)")
            assert _fets(d)[0] is True


def test_unplugged_current_sensor_opens_both_fets_within_one_tick(tmp_path, sample_file):
    with SimDevice(calibration=sample_file, flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms\nbms.run(1)")
            assert _fets(d) == (True, True)
            d.exec("bms.sim.inject('unplug_current')\nbms.run(0.01)")
            assert _fets(d) == (False, False)
            assert "CUR_MISSING" in d.eval("bms.status(False)['faults']")
            # Plugged back, it stays latched until a person resets it, also across a
            # hot-reloaded calibration; the cells keep their SOC through the reload.
            d.exec("bms.sim.inject('plug_current')\nbms.run(1)")
            assert _fets(d) == (False, False)
            soc = d.eval("bms.app.cells[0].soc()")
        push(sim.port, str(LGM50))
        with Device(sim.port) as d:
            d.exec("import bms")
            assert d.eval("bms.app.cells[0].soc()") == soc  # carried, not re-booted
            d.exec("bms.run(1)")
            assert _fets(d) == (False, False)
            d.exec("bms.reset_faults()\nbms.run(0.02)")
            assert _fets(d) == (True, True)


def test_status_table_and_diagnostics(tmp_path, sample_file):
    with SimDevice(calibration=sample_file, cells=4, flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms\nbms.run(3)")
            text = d.exec("bms.status()")
            for words in ("backend=python", "SOC", "SOP 2/10/30 s", "faults: none", "loop:"):
                assert words in text, text
            st = d.eval("bms.status(False)")
            assert st["cells"] == 4 and len(st["soc"]) == 4
            assert st["soc_pack"] == min(st["soc"])
            assert "current       ok" in d.exec("bms.selftest()")   # the printed table
            assert d.eval("bms.selftest(show=False)")["current"] == "ok"   # the data
            assert d.eval("bms.app.wdt.feeds") > 0
