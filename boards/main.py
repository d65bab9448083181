# main.py on a board (copied by `make deploy`): build the board, start the BMS and its
# telemetry, and run it in the background so the REPL stays free for mpremote and
# `bms-host exec` while the BMS protects the pack.
# The calibration comes from the store on flash (cal/active.json), pushed with
# `bms-host push`; without one the BMS protects with the chemistry's default limits.
# Telemetry: a record every 5 s on the console; over MQTT too when config.json on flash
# names a broker (and the Wi-Fi on an ESP32 / Pico W): see the README.
import machine

import board
import bms
from bms import application, telemetry

app = bms.start(board.make_board())
telemetry.start(app)
app.wdt = machine.WDT(timeout=2000)  # fed only when every task has checked in


def _service(_timer):
    app.service(application.ticks_ms())


# A periodic timer whose callback MicroPython schedules (a soft interrupt): it runs between
# two bytecodes of whatever the REPL executes and while the REPL waits for input, never
# inside another scheduled callback, and a Ctrl-C from the host waits until it has
# returned, so an interrupted command never leaves a tick half done.
try:
    timer = machine.Timer(-1)   # a soft timer (RP2040)
except (ValueError, TypeError):
    timer = machine.Timer(0)    # ESP32: hardware timer 0, its callback scheduled all the same
timer.init(period=application.FAST_MS, mode=machine.Timer.PERIODIC, callback=_service)
