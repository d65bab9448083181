import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Device code, board files and device-side tests import the same way in CPython as on
# the board (numpy stands in for ulab.numpy).
for sub in ("device", "boards", "tests/device"):
    p = str(ROOT / sub)
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
