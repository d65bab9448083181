# What ships to a board, in MicroPython's manifest syntax: the `bms` package and the
# hardware drivers (boards/drivers, all of it: the simulated bus lives in boards/sim).
# Every firmware freezes it (boards/*/manifest.py include it); package.json and
# `make deploy` take their file lists and the version from it (bms_host.manifest).
# ruff: noqa: F821  (metadata/package come from MicroPython's manifest tool)
metadata(version="0.1.0", description="Model-based battery management system: SOC, SOH, "
         "SOP and protection for Li-ion packs", license="MIT")
package("bms", base_path=".")
package("drivers", base_path="../boards")
