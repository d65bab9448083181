# The current sensor's zero, read while the pack cannot carry current. With both
# protection FETs open (back to back, their body diodes opposed) nothing flows through
# the shunt, so what the sensor reports is its own offset. The filter otherwise learns
# that offset only through the voltage where the OCV is steep; on an LFP plateau it
# coulomb-counts it for hours (30 mA is 1.3 % of a 2.3 Ah cell per hour).
#
# The reading is the mean current of a window, taken from the application's integer
# charge counter (every fast-tick sample, no per-tick work here), once per opening: the
# filter's offset state has almost no process noise, and a reading every window of a
# long opening would make it sure of an offset that still drifts with temperature.
from bms.compat import ticks_diff

SETTLE_MS = 2000    # after both FETs open: gate charge, the load's capacitors
WINDOW_MS = 10000   # the offset is the mean current over this long
SIGMA_MA = 0.5      # a reading's sigma (mA): the mean of 1000 samples, FET leakage


class CurrentZero:
    def __init__(self):
        self.since = None     # when both FETs opened (ms)
        self.start = None     # (charge counter mA*s, ms) when the window began
        self.done = False     # this opening has given its reading
        self.last_ma = None   # the last reading (mA), for status

    def update(self, no_current, charge_mas, now_ms):
        """no_current: both FETs are open and the current sensor reads OK. Returns the
        offset (mA) when an opening's window is complete, else None."""
        if not no_current:
            self.since = None
            self.start = None
            self.done = False
            return None
        if self.done:
            return None
        if self.since is None:
            self.since = now_ms
            return None
        if self.start is None:
            if ticks_diff(now_ms, self.since) >= SETTLE_MS:
                self.start = (charge_mas, now_ms)
            return None
        dt_ms = ticks_diff(now_ms, self.start[1])
        if dt_ms < WINDOW_MS:
            return None
        self.done = True
        # mA*s per ms is A
        self.last_ma = 1000.0 * (charge_mas - self.start[0]) / dt_ms
        return self.last_ma
