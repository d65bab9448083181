"""The simulated device on a pty, reached with the real mpremote CLI."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bms_host import UserError
from bms_host.device import Device
from bms_host.sim import SimDevice

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


def mpremote(port, *args, timeout=30):
    return subprocess.run([MPREMOTE, "connect", port, "resume", *args],
                          capture_output=True, timeout=timeout)


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("round_", range(20))
def test_put_get_exec_eval_and_clean_stop(tmp_path, round_):
    payload = os.urandom(3000) + bytes(range(256))
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    back = tmp_path / "back.bin"
    proc = subprocess.Popen([sys.executable, "-m", "bms_host.cli", "sim", "--flash",
                             str(tmp_path / "flash")], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("port: /dev/pts/"), first
        port = first.split(": ", 1)[1]
        deadline = time.time() + 20
        while True:  # the interpreter needs a moment to boot
            r = mpremote(port, "eval", "1+1")
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert r.stdout.strip() == b"2", r
        r = mpremote(port, "cp", str(src), ":blob.bin")
        assert r.returncode == 0, r
        assert (tmp_path / "flash" / "blob.bin").read_bytes() == payload
        r = mpremote(port, "cp", ":blob.bin", str(back))
        assert r.returncode == 0, r
        assert back.read_bytes() == payload
        r = mpremote(port, "exec", "x = 6 * 7; print('x is', x)")
        assert r.stdout.strip() == b"x is 42", r
        r = mpremote(port, "eval", "x + 1")
        assert r.stdout.strip() == b"43", r
        kids = children_of(proc.pid)
        assert kids, "the simulator should run micropython as a child"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for k in kids:
        assert not os.path.exists("/proc/%d" % k) or _zombie(k), "left process %d behind" % k


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True


def test_client_exec_eval_put_get(tmp_path):
    with SimDevice(flash=str(tmp_path)) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            assert d.eval("[1, 2.5, 'a']") == [1, 2.5, "a"]
            assert d.exec("print(3*3)").strip() == "9"
            d.write_bytes("f.txt", b"hello\x00world")
            assert d.get("f.txt") == b"hello\x00world"
            with pytest.raises(UserError, match="ZeroDivisionError"):
                d.exec("1/0")


def test_client_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Device("/dev/pts/999999")
    # A pty nobody answers on: silent port.
    import tty
    m, s = os.openpty()
    tty.setraw(s)
    try:
        with pytest.raises(UserError, match="no MicroPython REPL answered"):
            Device(os.ttyname(s), timeout=1.0)
    finally:
        os.close(m)
        os.close(s)


def test_sim_reboots_after_kill(tmp_path):
    with SimDevice(flash=str(tmp_path)) as sim:
        sim.wait_ready()
        sim.kill()
        assert not sim.alive()
        sim.boot()
        sim.wait_ready()
        assert sim.boots == 2


def test_ctrl_c_stops_a_long_run_within_a_second_and_the_bms_goes_on(tmp_path):
    with SimDevice(flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            t = d.t
            t.exec_raw_no_follow("import bms\nbms.run(100000)")
            time.sleep(1.0)                     # well into the run
            t0 = time.time()
            t.serial.write(b"\x03")
            out, err = t.follow(timeout=10)
            took = time.time() - t0
            assert b"KeyboardInterrupt" in err, (out, err)
            assert took < 1.0, took
            a = d.eval("bms.status(False)['t_ms']")
            assert 0 < a < 100000 * 1000
            d.exec("bms.run(2)")
            st = d.eval("bms.status(False)")
            assert st["t_ms"] == a + 2000 and st["faults"] == [], st


@pytest.mark.parametrize("arg", ["'ten'", "None", "float('nan')", "float('inf')", "-5"])
def test_bad_run_arguments_get_one_sentence(tmp_path, arg):
    with SimDevice(flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            with pytest.raises(UserError) as e:
                d.exec("import bms\nbms.run(%s)" % arg)
            msg = str(e.value)
            assert "run(seconds) takes a number of seconds" in msg, msg
            assert "Traceback" not in msg, msg
