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


def _console(port):
    """The maker's terminal on the port: send a line, read what comes back."""
    import select

    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)

    def say(line, wait=3.0, until=b">>> "):
        if line is not None:
            os.write(fd, line.encode() + b"\r")
        buf = b""
        end = time.time() + wait
        while time.time() < end and not buf.endswith(until):
            if select.select([fd], [], [], 0.1)[0]:
                buf += os.read(fd, 4096)
        return buf
    return fd, say


def test_repl_output_ends_lines_with_cr_lf_and_prints_tables_without_a_dict(tmp_path):
    with SimDevice(flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        fd, say = _console(sim.port)
        try:
            seen = say("") + say("import bms") + say("for k in range(3): print(k)", 1.0)
            seen += say("", 2.0)
            for cmd, words in (("bms.status()", b"faults:"), ("bms.faults()", b""),
                               ("bms.selftest()", b"current"), ("bms.run(1)", b"")):
                out = say(cmd, 10.0)
                assert words in out, (cmd, out)
                if cmd != "bms.run(1)":
                    assert b"{" not in out and b"[(" not in out, (cmd, out)  # no echo
                seen += out
            out = say("bms.status(False)['cells']", 5.0)   # the data when asked
            assert b"\r\n1\r\n" in out, out
            seen += out
        finally:
            os.close(fd)
        assert b"0\r\n1\r\n2\r\n" in seen, seen
        # no staircase: every line feed comes after a carriage return
        assert seen.count(b"\n") > 10 and seen.count(b"\n") == seen.count(b"\r\n"), seen


def test_status_faults_selftest_return_data_only_when_asked(tmp_path):
    with SimDevice(flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        with Device(sim.port) as d:
            d.exec("import bms\nbms.run(1)")
            for f in ("status", "faults", "selftest"):
                assert d.exec("print(repr(bms.%s()))" % f).strip().endswith("\nNone"), f
                assert d.exec("bms.%s(show=False)" % f) == "", f   # data, printed nothing
            st = d.eval("bms.status(show=False)")
            assert st["cells"] == 1 and st["t_ms"] == 1000
            assert d.eval("bms.selftest(show=False)")["current"] == "ok"
            assert isinstance(d.eval("bms.faults(show=False)"), list)


ROOT = Path(__file__).resolve().parents[1]
LGM50 = ROOT / "calibration" / "lgm50.json"
BMS_HOST = str(Path(sys.executable).parent / "bms-host")


def _bad_inputs(tmp_path):
    from bms_host.calibration import encode, read_calibration

    cal, _ = read_calibration(LGM50)
    cal["tables"]["r0_ohm"][0][0] = float("nan")   # a fit gone wrong, checksum and all
    (tmp_path / "nan.json").write_text(encode(cal))
    (tmp_path / "truncated.json").write_bytes(LGM50.read_bytes()[:5000])
    (tmp_path / "binary.json").write_bytes(bytes(range(256)) * 16)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("time_s,current_a\n")
    (tmp_path / "milliamps.csv").write_text(
        "time_s,current_a\n" + "".join("%d,%d\n" % (k, 5000 * (k % 2)) for k in range(50)))
    return [("--calibration", "nan.json", "non-finite"),
            ("--calibration", "truncated.json", "cut short"),
            ("--calibration", "binary.json", "binary data"),
            ("--trace", "empty.csv", "is empty"),
            ("--trace", "header.csv", "no data rows"),
            ("--trace", "milliamps.csv", "milliamperes")]


def test_sim_with_a_bad_calibration_or_trace_exits_with_the_reason(tmp_path):
    for option, name, words in _bad_inputs(tmp_path):
        r = subprocess.run([BMS_HOST, "sim", option, str(tmp_path / name), "--flash",
                            str(tmp_path / "flash")], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (name, r)
        assert "port:" not in r.stdout, (name, r.stdout)
        err = r.stderr.strip()
        assert words in err and len(err.splitlines()) == 1, (name, err)


def test_a_bms_that_did_not_start_on_the_board_is_reported(tmp_path):
    cal = tmp_path / "cal.json"
    cal.write_bytes(LGM50.read_bytes())
    sim = SimDevice(calibration=str(cal), flash=str(tmp_path / "flash"))
    try:
        cal.write_bytes(LGM50.read_bytes()[:5000])   # changed after the host's check
        sim.boot()
        sim.wait_ready()
        why = sim.boot_error()
        assert why and "cut short" in why, why
    finally:
        sim.stop()
    with SimDevice(calibration=str(LGM50), flash=str(tmp_path / "flash2")) as sim:
        sim.wait_ready()
        assert sim.boot_error() is None


def test_sim_takes_a_calibration_reformatted_by_json_tool(tmp_path):
    from bms_host.calibration import read_calibration

    pretty = tmp_path / "pretty.json"
    pretty.write_text(subprocess.run([sys.executable, "-m", "json.tool", str(LGM50)],
                                     capture_output=True, text=True, check=True).stdout)
    with SimDevice(calibration=str(pretty), flash=str(tmp_path / "flash")) as sim:
        sim.wait_ready()
        assert sim.boot_error() is None
        with Device(sim.port) as d:
            assert d.eval("__import__('bms').cal_info()['checksum']") == \
                read_calibration(LGM50)[1]
