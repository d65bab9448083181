# The simulated board's sample cell doubles as the device tests' calibration.
from sim.sample_cal import calibration, drive_current  # noqa: F401
