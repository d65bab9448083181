# Boot of the simulated board (run by `bms-host sim` in the host's MicroPython).
# The REPL stays free for mpremote; the BMS advances in virtual time: bms.run(seconds).
import os

import bms
from sim import board as _board

_cal = os.getenv("BMS_SIM_CALIBRATION")
bms.start(_board.make_board(int(os.getenv("BMS_SIM_CELLS") or "1"), os.getenv("BMS_SIM_TRACE"),
                            _cal, float(os.getenv("BMS_SIM_SOC") or "0.8")), _cal)

# Telemetry over MQTT when the simulator is given a broker (the unix port has sockets).
_mqtt = os.getenv("BMS_SIM_MQTT")
if _mqtt:
    _host, _port = _mqtt.rsplit(":", 1)
    _key = os.getenv("BMS_SIM_KEY")
    bms.app.device_id = os.getenv("BMS_SIM_ID") or "sim"
    bms.app.start_telemetry(float(os.getenv("BMS_SIM_PERIOD") or "5"),
                            {"host": _host, "port": int(_port)}, False,
                            bytes.fromhex(_key) if _key else None)
