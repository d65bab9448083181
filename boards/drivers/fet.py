# FET or relay outputs on pin-like objects with .value(v). Constructed switched off, so
# a board comes up with both paths open until protection says otherwise.


class Fet:
    def __init__(self, pin, active_high=True, name="fet"):
        self.pin = pin
        self.active_high = active_high
        self.name = name
        self.is_on = True  # forces the write in off()
        self.off()

    def set(self, on):
        on = bool(on)
        if on != self.is_on:
            self.pin.value(1 if on == self.active_high else 0)
            self.is_on = on

    def on(self):
        self.set(True)

    def off(self):
        self.set(False)


class FetBank:
    """Several outputs (e.g. balancing bleeders) driven from a bitmask, bit k = output k."""

    def __init__(self, pins, active_high=True):
        self.fets = [Fet(p, active_high, "bleed%d" % k) for k, p in enumerate(pins)]
        self.mask = 0

    def __len__(self):
        return len(self.fets)

    def set_mask(self, mask):
        for k in range(len(self.fets)):
            self.fets[k].set(mask >> k & 1)
        self.mask = mask & ((1 << len(self.fets)) - 1)

    def off(self):
        self.set_mask(0)
