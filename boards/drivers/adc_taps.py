# Cell taps on the microcontroller's own ADC (machine.ADC.read_u16: 0..65535) behind
# resistor dividers. The callable keeps this module free of `machine`.


def divider_ratio(r_top_ohm, r_bottom_ohm):
    """Tap voltage per volt at the ADC pin for a top/bottom resistor divider."""
    if not (r_top_ohm >= 0 and r_bottom_ohm > 0):
        raise ValueError("divider: r_bottom_ohm must be positive and r_top_ohm not negative")
    return (r_top_ohm + r_bottom_ohm) / r_bottom_ohm


class AdcTap:
    """read_v() = mean of `samples` read_u16() codes * vref_v / 65535 * ratio + offset_v."""

    def __init__(self, read_u16, ratio=1.0, vref_v=3.3, samples=4, offset_v=0.0):
        if samples < 1:
            raise ValueError("adc tap: samples must be at least 1")
        self.read_u16 = read_u16
        self.ratio = ratio
        self.samples = samples
        self.offset_v = offset_v
        self.scale_v = vref_v * ratio / (65535 * samples)

    def read_v(self):
        r = self.read_u16
        acc = 0
        for _ in range(self.samples):
            acc += r()
        return acc * self.scale_v + self.offset_v
