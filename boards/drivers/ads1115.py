# TI ADS1115 16-bit ADC (datasheet SBAS444), single-ended single-shot reads of cell taps
# behind resistor dividers. No ID register: presence is a config register read.
try:
    from time import sleep_us
except ImportError:  # CPython
    def sleep_us(us):
        pass

REG_CONVERSION = 0x00
REG_CONFIG = 0x01
REG_LO_THRESH = 0x02
REG_HI_THRESH = 0x03
OS_BIT = 0x8000
MUX_SINGLE = (4, 5, 6, 7)          # AINx vs GND
FSR_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)   # PGA codes 0..5
RATES_SPS = (8, 16, 32, 64, 128, 250, 475, 860)      # DR codes 0..7
COMP_DISABLE = 3


class ADS1115:
    """Single-ended voltages at AIN0..AIN3, in volts at the pin."""

    def __init__(self, i2c, addr=0x48, fsr_v=4.096, rate_sps=860):
        if fsr_v not in FSR_V:
            raise ValueError("ADS1115: fsr_v must be one of 6.144, 4.096, 2.048, 1.024, "
                             "0.512, 0.256")
        if rate_sps not in RATES_SPS:
            raise ValueError("ADS1115: rate_sps must be one of 8, 16, 32, 64, 128, 250, "
                             "475, 860")
        self.i2c = i2c
        self.addr = addr
        self.fsr_v = fsr_v
        self.lsb_v = fsr_v / 32768
        self.rate_sps = rate_sps
        self._pga = FSR_V.index(fsr_v)
        self._dr = RATES_SPS.index(rate_sps)
        self._wait_us = 1000000 // rate_sps + 100
        self._b = bytearray(2)
        self._w = bytearray(2)
        self._into = getattr(i2c, "readfrom_mem_into", None)
        try:
            self.read_reg(REG_CONFIG)
        except OSError:
            raise OSError("ADS1115 at I2C address 0x%02x does not answer (check wiring, power "
                          "and the ADDR pin)" % addr)

    def read_reg(self, reg):
        b = self._b
        if self._into is not None:
            self._into(self.addr, reg, b)
        else:
            b[:] = self.i2c.readfrom_mem(self.addr, reg, 2)
        return (b[0] << 8) | b[1]

    def write_reg(self, reg, value):
        w = self._w
        w[0] = (value >> 8) & 0xFF
        w[1] = value & 0xFF
        self.i2c.writeto_mem(self.addr, reg, w)

    def read_raw(self, ch):
        """Start one single-shot conversion of AINch and return the signed 16-bit code."""
        self.start(ch)
        return self.finish()

    def start(self, ch):
        """Start a single-shot conversion of AINch (finish() waits for it and reads it)."""
        cfg = OS_BIT | (MUX_SINGLE[ch] << 12) | (self._pga << 9) | 0x100 \
            | (self._dr << 5) | COMP_DISABLE
        self.write_reg(REG_CONFIG, cfg)

    def finish(self):
        """The signed 16-bit code of the conversion start() began."""
        for _ in range(5):
            # OS reads 0 while converting; checked before sleeping so a simulated
            # device (done at once) costs no wall time
            if self.read_reg(REG_CONFIG) & OS_BIT:
                v = self.read_reg(REG_CONVERSION)
                return v - 0x10000 if v & 0x8000 else v
            sleep_us(self._wait_us)
        raise OSError(110)  # ETIMEDOUT: conversion never finished

    def read_v(self, ch):
        return self.read_raw(ch) * self.lsb_v


class Tap:
    """One cell tap on an ADS1115 input behind a divider; read_v() is the tap voltage."""

    def __init__(self, adc, ch, ratio=1.0):
        if ch not in (0, 1, 2, 3):
            raise ValueError("ADS1115 tap: channel must be 0..3")
        self.adc = adc
        self.ch = ch
        self.ratio = ratio

    def read_v(self):
        return self.adc.read_raw(self.ch) * self.adc.lsb_v * self.ratio


class TapBank:
    """Cell taps spread over several ADS1115s (tap k on chip k // 4, input k % 4), converted
    in parallel: scan() starts input c on every chip at once, so 16 taps take 4 conversion
    times (about 5 ms at 860 SPS) instead of 16 (about 19 ms, more than the 10 ms fast
    tick). taps[k].read_v() then returns tap k of the last scan, or raises OSError when its
    chip failed. Nothing is allocated per scan."""

    def __init__(self, adcs, ratios):
        n = len(ratios)
        if n > 4 * len(adcs):
            raise ValueError("ADS1115 taps: %d taps need %d chips, %d given"
                             % (n, (n + 3) // 4, len(adcs)))
        self.adcs = list(adcs)
        self.taps = [BankTap(self, k, ratios[k]) for k in range(n)]
        self.code = [0] * n
        self.failed = bytearray(n)

    def scan(self):
        n = len(self.taps)
        adcs, failed = self.adcs, self.failed
        for ch in range(4):
            for j in range(len(adcs)):
                k = 4 * j + ch
                if k < n:
                    try:
                        adcs[j].start(ch)
                        failed[k] = 0
                    except OSError:
                        failed[k] = 1
            for j in range(len(adcs)):
                k = 4 * j + ch
                if k < n and not failed[k]:
                    try:
                        self.code[k] = adcs[j].finish()
                    except OSError:
                        failed[k] = 1


class BankTap:
    """Tap k of a TapBank: the voltage of its last scan."""

    def __init__(self, bank, k, ratio):
        self.bank = bank
        self.k = k
        self.adc = bank.adcs[k // 4]
        self.ch = k % 4
        self.ratio = ratio

    def read_v(self):
        b = self.bank
        if b.failed[self.k]:
            raise OSError(5)  # EIO: the chip did not answer during the scan
        return b.code[self.k] * self.adc.lsb_v * self.ratio
