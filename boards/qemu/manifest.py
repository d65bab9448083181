# Freeze the BMS device code and the hardware drivers into the qemu Cortex-M3 firmware
# (BOARD=MPS2_AN385), the emulated board the tests run the device code on:
#   make -C ports/qemu BOARD=MPS2_AN385 FROZEN_MANIFEST=/path/to/boards/qemu/manifest.py
# The qemu port has no boards/manifest.py of its own to include (its Makefile's default
# freezes only MicroPython's own test modules), and no board.py/main.py: nothing starts
# the BMS at boot, the tests drive it from the raw REPL.
# ruff: noqa: F821  (include comes from MicroPython's manifest tool)
include("../../device/manifest.py")
