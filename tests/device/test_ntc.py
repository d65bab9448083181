# NTC models against independent references over -20..60 degC.
import math

from drivers import ntc

K0 = 273.15
# Classic 10 kOhm thermistor Steinhart-Hart coefficients (a widely published set).
A, B, C = 1.009249522e-3, 2.378405444e-4, 2.019202697e-7


def _ref_beta_r(t_c, r0=10000.0, beta=3950.0):
    return r0 * math.exp(beta * (1.0 / (t_c + K0) - 1.0 / (25.0 + K0)))


def _ref_sh_r(t_c):
    # bisection on ln R, independent of the module's closed-form inverse
    target = 1.0 / (t_c + K0)
    lo, hi = math.log(10.0), math.log(1e7)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if A + B * mid + C * mid ** 3 > target:
            hi = mid
        else:
            lo = mid
    return math.exp(0.5 * (lo + hi))


def _temps():
    return [t * 0.5 for t in range(-40, 121)]   # -20 .. 60 in 0.5 degC steps


def test_beta_matches_reference():
    m = ntc.Beta(10000.0, 25.0, 3950.0)
    for t in _temps():
        assert abs(m.temperature_c(_ref_beta_r(t)) - t) < 0.1, t
        assert abs(m.resistance_ohm(t) / _ref_beta_r(t) - 1) < 1e-6


def test_steinhart_hart_matches_reference():
    fitted = ntc.sh_from_points(-20.0, _ref_sh_r(-20.0), 20.0, _ref_sh_r(20.0),
                                60.0, _ref_sh_r(60.0))
    assert abs(fitted.c / C - 1) < 1e-2
    direct = ntc.SteinhartHart(A, B, C)
    for t in _temps():
        r = _ref_sh_r(t)
        assert abs(fitted.temperature_c(r) - t) < 0.1, t
        assert abs(direct.temperature_c(r) - t) < 0.1, t
        assert abs(direct.resistance_ohm(t) / r - 1) < 1e-4, t


def test_beta_and_steinhart_hart_agree():
    beta = ntc.Beta(10000.0, 25.0, 3950.0)
    sh = ntc.sh_from_points(0.0, beta.resistance_ohm(0.0), 25.0, 10000.0,
                            50.0, beta.resistance_ohm(50.0))
    for t in _temps():
        r = _ref_beta_r(t)
        assert abs(sh.temperature_c(r) - beta.temperature_c(r)) < 0.1, t


class _Adc:
    def __init__(self):
        self.code = 0

    def read_u16(self):
        return self.code


def test_divider_channel_through_16_bit_adc():
    for low in (True, False):
        adc = _Adc()
        ch = ntc.Ntc(adc.read_u16, ntc.Beta(), r_fixed_ohm=10000.0, ntc_low=low, samples=1)
        for t in _temps():
            adc.code = int(ch.ratio_for(t) * 65535 + 0.5)
            got = ch.read_c()
            assert ch.fault == ntc.OK
            assert abs(got - t) < 0.1, (low, t, got)


def test_open_and_short_detection():
    code = {"v": 65535}
    low = ntc.Ntc(lambda: code["v"], ntc.Beta(), ntc_low=True)
    high = ntc.Ntc(lambda: code["v"], ntc.Beta(), ntc_low=False)
    t = low.read_c()
    assert t != t and low.fault == ntc.OPEN
    t = high.read_c()
    assert t != t and high.fault == ntc.SHORT
    code["v"] = 0
    low.read_c()
    high.read_c()
    assert low.fault == ntc.SHORT and high.fault == ntc.OPEN
    code["v"] = 30000
    assert abs(low.read_c() - 27.0) < 3.0 and low.fault == ntc.OK
