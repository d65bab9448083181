"""The C core compiles the way every port compiles it: the GNU dialects the unix, qemu,
rp2 and esp32 ports use (under which the C library declares names such as `finite`)
as well as strict C99, on the host compiler and arm-none-eabi for the Cortex-M0+ (RP2040)
and the Cortex-M4F. -Werror: a warning in a port's build is a failed firmware."""
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "device" / "native" / "bms_native"
# The portable core files (the bindings need MicroPython's or CPython's headers and are
# compiled by the firmware builds and setup.py).
CORE = sorted(p for p in SRC.glob("*_core.c"))
DIALECTS = ["c99", "gnu99", "gnu11", "gnu17"]
TARGETS = {
    "host": ["gcc"],
    "cortex-m0plus": ["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb"],
    "cortex-m4f": ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                   "-mfpu=fpv4-sp-d16"],
}
FLAGS = ["-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Os", "-c"]


def test_there_are_core_files():
    assert any(p.name == "ukf_core.c" for p in CORE), CORE


@pytest.mark.parametrize("std", DIALECTS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_core_compiles(tmp_path, target, std):
    cmd = TARGETS[target]
    if shutil.which(cmd[0]) is None:
        pytest.skip("%s is missing: run tools/apt-deps.sh" % cmd[0])
    for src in CORE:
        r = subprocess.run([*cmd, "-std=" + std, *FLAGS, str(src), "-o",
                            str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0, "%s, -std=%s:\n%s" % (src.name, std, r.stderr)
