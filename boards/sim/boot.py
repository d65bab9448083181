# Boot of the simulated board (run by `bms-host sim` in the host's MicroPython).
# The REPL stays free for mpremote; the BMS advances in virtual time: bms.run(seconds)
# (bms.sim, a runner.Runner: plant and BMS together; bms.sim.inject(...) for faults).
# The BMS is started on the simulated board's hardware as a Pico's boot starts it.
# A boot that fails leaves the REPL up with `error` set to one sentence (bms.app stays
# None): `bms-host sim` reads it and exits with it instead of handing out a dead port.
import os

import bms
from sim import board as _board
from sim import runner as _runner

error = None
_cal = os.getenv("BMS_SIM_CALIBRATION")
try:
    _cv = os.getenv("BMS_SIM_CV")
    _sb = _board.make_board(int(os.getenv("BMS_SIM_CELLS") or "1"),
                            os.getenv("BMS_SIM_TRACE"), _cal,
                            float(os.getenv("BMS_SIM_SOC") or "0.8"),
                            os.getenv("BMS_SIM_AGE"), float(_cv) if _cv else None)
    bms.sim = _runner.Runner(_sb, bms.start(_sb.board, _cal))
except Exception as e:   # noqa: BLE001 - any failure is reported, as one sentence
    bms.app = None
    bms.sim = None
    error = "%s: %s" % (type(e).__name__, e)
    print("BMS did not start:", error)

# Telemetry as on a deployed board (boards/main.py): records on the console every 5 s of
# virtual time, over MQTT too when config.json in the flash folder names a broker. The
# simulator's options: --device-id (config.json's device_id wins), --period (wins over
# config.json's period_s), and --mqtt (a broker without a config.json, console quiet).
if bms.app is not None:
    from bms import telemetry

    bms.app.device_id = os.getenv("BMS_SIM_ID") or "sim"
    _period = os.getenv("BMS_SIM_PERIOD")
    _mqtt = os.getenv("BMS_SIM_MQTT")
    if _mqtt:
        _host, _port = _mqtt.rsplit(":", 1)
        _key = os.getenv("BMS_SIM_KEY")
        bms.app.start_telemetry(float(_period or "5"), {"host": _host, "port": int(_port)},
                                False, bytes.fromhex(_key) if _key else None)
    else:
        telemetry.start(bms.app)
        if _period:
            bms.app.tel.period_ms = int(float(_period) * 1000)
