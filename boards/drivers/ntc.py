# NTC thermistors: Beta and Steinhart-Hart models, and a divider channel read through an
# ADC callable (read_u16: 0..65535) with open/short detection at the rails.
import math

K0 = 273.15
OK = 0
OPEN = 1
SHORT = 2
_NAN = float("nan")


class Beta:
    """1/T = 1/T0 + ln(R/R0)/beta (T in kelvin)."""

    def __init__(self, r0_ohm=10000.0, t0_c=25.0, beta=3950.0):
        if not (r0_ohm > 0 and beta > 0):
            raise ValueError("NTC Beta model: r0_ohm and beta must be positive")
        self.r0_ohm = r0_ohm
        self.inv_t0 = 1.0 / (t0_c + K0)
        self.beta = beta

    def temperature_c(self, r_ohm):
        return 1.0 / (self.inv_t0 + math.log(r_ohm / self.r0_ohm) / self.beta) - K0

    def resistance_ohm(self, t_c):
        return self.r0_ohm * math.exp(self.beta * (1.0 / (t_c + K0) - self.inv_t0))


def _cbrt(x):
    return x ** (1.0 / 3.0) if x >= 0 else -((-x) ** (1.0 / 3.0))


class SteinhartHart:
    """1/T = a + b ln R + c (ln R)^3 (T in kelvin)."""

    def __init__(self, a, b, c):
        self.a = a
        self.b = b
        self.c = c

    def temperature_c(self, r_ohm):
        lr = math.log(r_ohm)
        return 1.0 / (self.a + self.b * lr + self.c * lr * lr * lr) - K0

    def resistance_ohm(self, t_c):
        a, b, c = self.a, self.b, self.c
        if c == 0:
            return math.exp((1.0 / (t_c + K0) - a) / b)
        y = (a - 1.0 / (t_c + K0)) / c
        x = math.sqrt((b / (3.0 * c)) ** 3 + y * y / 4.0)
        return math.exp(_cbrt(x - y / 2.0) - _cbrt(x + y / 2.0))


def sh_from_points(t1_c, r1_ohm, t2_c, r2_ohm, t3_c, r3_ohm):
    """Steinhart-Hart coefficients through three (temperature, resistance) points."""
    l1, l2, l3 = math.log(r1_ohm), math.log(r2_ohm), math.log(r3_ohm)
    y1, y2, y3 = 1.0 / (t1_c + K0), 1.0 / (t2_c + K0), 1.0 / (t3_c + K0)
    g2 = (y2 - y1) / (l2 - l1)
    g3 = (y3 - y1) / (l3 - l1)
    c = (g3 - g2) / (l3 - l2) / (l1 + l2 + l3)
    b = g2 - c * (l1 * l1 + l1 * l2 + l2 * l2)
    a = y1 - (b + l1 * l1 * c) * l1
    return SteinhartHart(a, b, c)


class Ntc:
    """An NTC in a divider with a fixed resistor, read by an ADC.

    ntc_low=True: NTC from the ADC pin to ground, fixed resistor to the reference.
    read_c() returns degC, or NaN with .fault = OPEN or SHORT when the pin sits at a rail.
    """

    def __init__(self, read_u16, model, r_fixed_ohm=10000.0, ntc_low=True, samples=4,
                 rail=0.002):
        self.read_u16 = read_u16
        self.model = model
        self.r_fixed_ohm = r_fixed_ohm
        self.ntc_low = ntc_low
        self.samples = samples
        self.rail = rail
        self.fault = OK

    def resistance_ohm(self, x):
        """NTC resistance for a divider ratio x = code / 65535."""
        if self.ntc_low:
            return self.r_fixed_ohm * x / (1.0 - x)
        return self.r_fixed_ohm * (1.0 - x) / x

    def ratio_for(self, t_c):
        """Divider ratio at a temperature (for simulations and tests)."""
        r = self.model.resistance_ohm(t_c)
        if self.ntc_low:
            return r / (r + self.r_fixed_ohm)
        return self.r_fixed_ohm / (r + self.r_fixed_ohm)

    def read_c(self):
        r = self.read_u16
        acc = 0
        for _ in range(self.samples):
            acc += r()
        x = acc / (65535.0 * self.samples)
        if x >= 1.0 - self.rail:
            self.fault = OPEN if self.ntc_low else SHORT
            return _NAN
        if x <= self.rail:
            self.fault = SHORT if self.ntc_low else OPEN
            return _NAN
        self.fault = OK
        return self.model.temperature_c(self.resistance_ohm(x))
