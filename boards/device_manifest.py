# The device code every firmware freezes: the `bms` package and the hardware drivers
# (not the host-only simulated I2C bus). Included by each board's manifest.py.
# ruff: noqa: F821  (package comes from MicroPython's manifest tool)
package("bms", base_path="../device")
package("drivers", files=("__init__.py", "assemble.py", "ina226.py", "ina228.py",
                          "ads1115.py", "adc_taps.py", "ntc.py", "fet.py"), base_path=".")
