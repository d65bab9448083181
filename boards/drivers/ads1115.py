# TI ADS1115 16-bit ADC (datasheet SBAS444), single-ended single-shot reads of cell taps
# behind resistor dividers. No ID register: presence is a config register read.
from array import array
from time import sleep_us, ticks_diff, ticks_us

_NAN = float("nan")
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

    def config_word(self, ch):
        """The config register value that starts a single-shot conversion of AINch."""
        return OS_BIT | (MUX_SINGLE[ch] << 12) | (self._pga << 9) | 0x100 \
            | (self._dr << 5) | COMP_DISABLE

    def start(self, ch):
        """Start a single-shot conversion of AINch (finish() waits for it and reads it)."""
        self.write_reg(REG_CONFIG, self.config_word(ch))

    def finish(self):
        """The signed 16-bit code of the conversion start() began."""
        self.wait()
        return self.result()

    def wait(self):
        """Wait until the conversion start() began is done."""
        for _ in range(5):
            # OS reads 0 while converting; checked before sleeping so a simulated
            # device (done at once) costs no wall time
            if self.read_reg(REG_CONFIG) & OS_BIT:
                return
            sleep_us(self._wait_us)
        raise OSError(110)  # ETIMEDOUT: conversion never finished

    def result(self):
        """The signed 16-bit code of the last finished conversion, without waiting: call it
        at least one conversion time (1.2 ms at 860 SPS) after start()."""
        v = self.read_reg(REG_CONVERSION)
        return v - 0x10000 if v & 0x8000 else v

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
    """Cell taps spread over several ADS1115s (tap k on chip k // 4, input k % 4), scanned
    as a pipeline across fast ticks: each scan() reads the conversions the previous scan
    started (one input on every chip at once) and starts the next input on every chip,
    without waiting: at 860 SPS a conversion takes about 1.2 ms, far less than the 10 ms
    tick between two scans. So a scan costs about two I2C transfers per chip, and each tap
    is refreshed every `inputs` scans (4 with four taps on a chip: 40 ms at a 10 ms tick).
    Before the first pipeline step, taps have no value (read as failed, ready() False);
    see blocking_first.

    taps[k].read_v() returns tap k's latest conversion, or raises OSError while its chip
    fails: a chip that does not answer marks all its taps failed at once, and each tap
    recovers with its own next good conversion. Nothing is allocated per scan.

    native_taps: the firmware's bms_native.taps, given by the caller when it has it:
    read_into then runs in C, with no float boxed per tap."""

    def __init__(self, adcs, ratios, native_taps=None):
        n = len(ratios)
        if n > 4 * len(adcs):
            raise ValueError("ADS1115 taps: %d taps need %d chips, %d given"
                             % (n, (n + 3) // 4, len(adcs)))
        self.adcs = list(adcs)
        self.native_taps = native_taps
        self.code = array("h", [0] * n)       # signed 16-bit conversion results
        self.failed = bytearray(b"\x01" * n)   # no conversion read yet
        self.taps = [BankTap(self, k, ratios[k]) for k in range(n)]
        self.inputs = min(n, 4)                 # inputs in use on the first chip
        self.ch = -1                            # input converting on every chip; -1: none
        self._unread = bytearray(b"\x01" * n)   # 1 until the tap's first conversion read
        self._ready = False
        self.started = bytearray(len(self.adcs))   # chip j's conversion of `ch` started
        self.t_start = 0                        # ticks_us() of the last start
        self.wait_us = max(a._wait_us for a in self.adcs) if self.adcs else 0
        self.scale = array("f", [t.scale for t in self.taps])   # volts per code
        # The pipeline's transfers go straight to the bus (one call each, the config words
        # made once) when every chip shares one bus with readfrom_mem_into.
        bus = self.adcs[0].i2c if self.adcs else None
        self._bus = bus if bus is not None and all(
            a.i2c is bus and a._into is not None for a in self.adcs) else None
        self._addrs = [a.addr for a in self.adcs]
        self._words = []                        # [chip][input]: config bytes
        for a in self.adcs:
            row = []
            for ch in range(4):
                w = a.config_word(ch)
                row.append(bytes((w >> 8, w & 0xFF)))
            self._words.append(row)
        self._buf = bytearray(2)
        # True: the first scan converts every tap and waits (the old blocking scan), so
        # the first sample is complete. A board whose sensors do not stamp a sample
        # before ready() (sensors.Board.tap_ready) sets it False: no tick ever waits.
        self.blocking_first = True

    def scan_all(self):
        """Blocking scan of every tap: input c started on every chip, then read, c=0..3
        (about 5 ms at 860 SPS). Leaves no conversion pending."""
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
                        self._unread[k] = 0
                    except OSError:
                        failed[k] = 1
        self.ch = -1

    def scan(self):
        """One pipeline step (see the class): read what the last step started, start the
        next input on every chip."""
        ch = self.ch
        if ch < 0:
            if self.blocking_first:
                self.scan_all()
            ch = self.inputs - 1          # so the pipeline starts at input 0
        else:
            if ticks_diff(ticks_us(), self.t_start) < self.wait_us:
                self._wait()              # called again within a conversion time
            self._collect(ch)
        ch += 1
        if ch >= self.inputs:
            ch = 0
        n = len(self.taps)
        adcs, started, bus = self.adcs, self.started, self._bus
        addrs, words = self._addrs, self._words
        for j in range(len(adcs)):
            started[j] = 0
            if 4 * j + ch < n:
                try:
                    if bus is not None:
                        bus.writeto_mem(addrs[j], REG_CONFIG, words[j][ch])
                    else:
                        adcs[j].start(ch)
                    started[j] = 1
                except OSError:
                    self._chip_failed(j)
        self.t_start = ticks_us()
        self.ch = ch

    def _collect(self, ch):
        n = len(self.taps)
        adcs, started, failed, code = self.adcs, self.started, self.failed, self.code
        bus, addrs, b, unread = self._bus, self._addrs, self._buf, self._unread
        into = bus.readfrom_mem_into if bus is not None else None
        for j in range(len(adcs)):
            k = 4 * j + ch
            if k < n and started[j]:
                try:
                    if into is not None:
                        into(addrs[j], REG_CONVERSION, b)
                        v = (b[0] << 8) | b[1]
                        code[k] = v - 0x10000 if v & 0x8000 else v
                    else:
                        code[k] = adcs[j].result()
                    failed[k] = 0
                    unread[k] = 0
                except OSError:
                    self._chip_failed(j)

    def read_into(self, tap_v, tap_st):
        """Every tap's latest voltage into tap_v and its status into tap_st (0 ok, 1 its
        chip failed: sensors.MISSING, voltage NaN) in one call: what taps[k].read_v()
        gives, without a call and an exception per tap."""
        code, failed, scale = self.code, self.failed, self.scale
        if self.native_taps is not None:
            self.native_taps(code, failed, scale, tap_v, tap_st)
            return
        for k in range(len(code)):
            if failed[k]:
                tap_v[k] = _NAN
                tap_st[k] = 1
            else:
                tap_v[k] = code[k] * scale[k]
                tap_st[k] = 0

    def ready(self):
        """True once every tap has been read or its chip has failed (at the end of the
        first `inputs` + 1 scans, or of the first blocking scan)."""
        if not self._ready:
            self._ready = not max(self._unread) if self._unread else True
        return self._ready

    def _chip_failed(self, j):
        failed, unread = self.failed, self._unread
        for k in range(4 * j, min(4 * j + 4, len(self.taps))):
            failed[k] = 1
            unread[k] = 0     # settled: it reads as failed (MISSING), not as "no data yet"

    def _wait(self):
        # Only when scans come closer than one conversion (a self-test right after a
        # tick): wait for every started chip's OS bit, as finish() does.
        for j in range(len(self.adcs)):
            if self.started[j]:
                try:
                    self.adcs[j].wait()
                except OSError:
                    self._chip_failed(j)
                    self.started[j] = 0


class BankTap:
    """Tap k of a TapBank: the voltage of its latest conversion."""

    def __init__(self, bank, k, ratio):
        self.bank = bank
        self.k = k
        self.adc = bank.adcs[k // 4]
        self.ch = k % 4
        self.ratio = ratio
        self.scale = self.adc.lsb_v * ratio
        self._code = bank.code
        self._failed = bank.failed

    def read_v(self):
        k = self.k
        if self._failed[k]:
            raise OSError(5)  # EIO: the chip did not answer
        return self._code[k] * self.scale
