# The Pico firmware the tests and `make bench-target` run in the rp2040js emulator:
# the same port manifest, device code and pin map as manifest.py (the maker's), plus the
# host-only simulated I2C bus, and without main.py. main.py starts the BMS at boot with
# a watchdog that nothing can stop on an RP2040; the emulated Pico has no I2C devices to
# protect and no filesystem to hold a "do not start" flag, so its tests need the bare
# REPL, and the maker's firmware stays untouched.
# ruff: noqa: F821  (include/package/module come from MicroPython's manifest tool)
include("$(PORT_DIR)/boards/manifest.py")
include("../../device/manifest.py")
module("board.py")
package("sim", files=("sim_i2c.py",), base_path="..")   # `from sim import sim_i2c`
