# Drivers for the BMS boards. Each takes a machine.I2C-like bus (readfrom_mem/writeto_mem)
# or a pin/ADC callable, so the same code runs on hardware and against the simulated bus
# (boards/sim/sim_i2c.py). They use MicroPython built-ins only and import nothing from
# the BMS: what they may take from the firmware (bms_native) their caller hands them.
