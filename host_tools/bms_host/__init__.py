"""Host tools for the model-based MicroPython BMS: synth, fit, replay, sim, push, record."""
import os
import sys
from pathlib import Path

__version__ = "0.1.0"

REPO = Path(__file__).resolve().parents[2]
DEVICE_DIR = REPO / "device"
BOARDS_DIR = REPO / "boards"
CALIBRATION_DIR = REPO / "calibration"

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")


class UserError(Exception):
    """An error a person caused (bad file, wrong port): printed as one sentence, exit 2."""


def use_device_code():
    """Make the device's `bms` package importable in CPython (numpy stands in for ulab)."""
    p = str(DEVICE_DIR)
    if p not in sys.path:
        sys.path.insert(0, p)
