# Boot of the simulated board (run by `bms-host sim` in the host's MicroPython).
# The REPL stays free for mpremote; the BMS advances in virtual time: bms.run(seconds).
import os

import bms
from sim import board as _board

_cal = os.getenv("BMS_SIM_CALIBRATION")
bms.start(_board.make_board(int(os.getenv("BMS_SIM_CELLS") or "1"), os.getenv("BMS_SIM_TRACE"),
                            _cal), _cal)
