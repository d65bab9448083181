# Freeze the BMS device code, the hardware drivers and this board's pin map:
#   make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=/path/to/boards/pico/manifest.py
# ruff: noqa: F821  (include/package/module come from MicroPython's manifest tool)
include("$(PORT_DIR)/boards/manifest.py")
include("../../device/manifest.py")
module("board.py")
module("main.py", base_path="..")  # starts the BMS at boot
