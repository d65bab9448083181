# Freeze the BMS device code, the hardware drivers and this board's pin map:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/boards/esp32/manifest.py
# ruff: noqa: F821  (include/package/module come from MicroPython's manifest tool)
include("$(PORT_DIR)/boards/manifest.py")
include("../../device/manifest.py")
module("board.py")
module("main.py", base_path="..")  # starts the BMS at boot
