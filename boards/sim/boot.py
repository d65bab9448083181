# Boot of the simulated board (run by `bms-host sim` in the host's MicroPython).
# The REPL stays free for mpremote; the BMS advances in virtual time on request.
import os

import bms

try:
    from sim import board as _board
except ImportError:  # the simulated board is not there yet: REPL only
    _board = None

if _board is not None:
    bms.start(_board.make_board(int(os.getenv("BMS_SIM_CELLS") or "1"),
                                os.getenv("BMS_SIM_TRACE")),
              os.getenv("BMS_SIM_CALIBRATION"))
