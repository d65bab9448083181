# Drivers for the BMS boards. Each takes a machine.I2C-like bus (readfrom_mem/writeto_mem)
# or a pin/ADC callable, so the same code runs on hardware and against sim_i2c.
