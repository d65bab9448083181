import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Device code, board files and device-side tests import the same way in CPython as on
# the board (numpy stands in for ulab.numpy).
for sub in ("device", "boards", "tests/device"):
    p = str(ROOT / sub)
    if p not in sys.path:
        sys.path.insert(0, p)
# CPython's `time` gets MicroPython's ticks_* and sleep_us, which the board drivers use
import bms.compat  # noqa: E402, F401
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def device_scratch(tmp_path_factory):
    """Device tests (in CPython and in the host MicroPython, which inherits the
    environment) write their files here, a folder pytest owns, not /tmp."""
    os.environ["BMS_SCRATCH"] = str(tmp_path_factory.mktemp("device"))
    yield
    os.environ.pop("BMS_SCRATCH", None)
