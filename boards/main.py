# main.py on a board (copied by `make deploy`): build the board, start the BMS, run.
# The calibration comes from the store on flash (cal/active.json), pushed with
# `bms-host push`; without one the BMS protects with the chemistry's default limits.
import machine

import board
import bms

app = bms.start(board.make_board())
app.wdt = machine.WDT(timeout=2000)  # fed only when every task has checked in
app.run_forever()
