# Simulated I2C bus with INA226, INA228 and ADS1115 register maps that follow their
# datasheets: a test or a plant model sets physical values, drivers read registers.
ENODEV = 19


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


def _round(x):
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


class _Noise:
    """Deterministic +-n LSB dither (an LCG), so a simulated plant looks like real ADCs:
    set dev.noise_lsb > 0. Real converters never repeat a flowing value bit for bit."""

    def __init__(self, seed=12345):
        self.x = seed

    def lsb(self, n):
        if not n:
            return 0
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % (2 * n + 1) - n


class SimI2C:
    """machine.I2C look-alike. unplug(addr) makes every access raise OSError(19)."""

    def __init__(self):
        self.devices = {}
        self.unplugged = set()

    def add(self, dev):
        self.devices[dev.addr] = dev
        return dev

    def unplug(self, addr):
        self.unplugged.add(addr)

    def plug(self, addr):
        self.unplugged.discard(addr)

    def _dev(self, addr):
        dev = self.devices.get(addr)
        if dev is None or addr in self.unplugged:
            raise OSError(ENODEV)
        return dev

    def scan(self):
        return sorted(a for a in self.devices if a not in self.unplugged)

    def readfrom_mem(self, addr, reg, n, addrsize=8):
        return bytes(self._dev(addr).read(reg, n))

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        data = self._dev(addr).read(reg, len(buf))
        for k in range(len(buf)):
            buf[k] = data[k]

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self._dev(addr).write(reg, bytes(buf))


class _Dev:
    WIDTH = {}   # register -> bytes; 2 when absent

    def __init__(self, addr):
        self.addr = addr
        self.noise_lsb = 0
        self._noise = _Noise(addr)
        self.regs = {}
        self.writes = 0
        self.reset()

    def reset(self):
        self.regs = dict(self.RESET)

    def value(self, reg):
        return self.regs.get(reg, 0)

    def read(self, reg, n):
        w = self.WIDTH.get(reg, 2)
        v = self.value(reg) & ((1 << (8 * w)) - 1)
        out = bytearray(n)
        for k in range(min(n, w)):
            out[k] = (v >> (8 * (w - 1 - k))) & 0xFF
        return out

    def write(self, reg, data):
        v = 0
        for b in data:
            v = (v << 8) | b
        self.writes += 1
        self.on_write(reg, v)

    def on_write(self, reg, v):
        self.regs[reg] = v


class _Monitor(_Dev):
    """A current/voltage monitor: set current_a (positive IN+ to IN-) and bus_v."""

    def __init__(self, addr=0x40, shunt_ohm=0.002):
        self.shunt_ohm = shunt_ohm
        self.current_a = 0.0
        self.bus_v = 0.0
        _Dev.__init__(self, addr)

    def set_current_a(self, i):
        self.current_a = i

    def set_bus_v(self, v):
        self.bus_v = v


class SimINA226(_Monitor):
    """Registers follow SBOS547."""
    RESET = {0x00: 0x4127, 0x05: 0, 0x06: 0, 0x07: 0, 0xFE: 0x5449, 0xFF: 0x2260}

    def on_write(self, reg, v):
        if reg == 0x00 and v & 0x8000:
            self.reset()
        elif reg in (0x00, 0x06, 0x07):
            self.regs[reg] = v
        elif reg == 0x05:
            self.regs[reg] = v & 0x7FFF

    def _shunt_raw(self):
        raw = _round(self.current_a * self.shunt_ohm / 2.5e-6) + self._noise.lsb(self.noise_lsb)
        return _clamp(raw, -32768, 32767)

    def _current_raw(self):
        # Current = ShuntVoltage * CAL / 2048; reads 0 until CAL is programmed.
        return _clamp(_round(self._shunt_raw() * self.regs[0x05] / 2048), -32768, 32767)

    def value(self, reg):
        if reg == 0x01:
            return self._shunt_raw()
        if reg == 0x02:
            return _clamp(_round(self.bus_v / 1.25e-3), 0, 0x7FFF)
        if reg == 0x04:
            return self._current_raw()
        if reg == 0x03:
            return abs(self._current_raw()) * _round(self.bus_v / 1.25e-3) // 20000
        return self.regs.get(reg, 0)


class SimINA228(_Monitor):
    """Also set die_c; registers follow SBOS860 (20-bit results)."""
    RESET = {0x00: 0, 0x01: 0xFB68, 0x02: 0x1000, 0x03: 0, 0x0B: 0x0001,
             0x3E: 0x5449, 0x3F: 0x2281}
    WIDTH = {0x04: 3, 0x05: 3, 0x07: 3, 0x08: 3, 0x09: 5, 0x0A: 5}

    def __init__(self, addr=0x40, shunt_ohm=0.002):
        self.die_c = 25.0
        _Monitor.__init__(self, addr, shunt_ohm)

    def on_write(self, reg, v):
        if reg == 0x00 and v & 0x8000:
            self.reset()
        elif reg == 0x02:
            self.regs[reg] = v & 0x7FFF
        elif reg in (0x00, 0x01, 0x03) or 0x0B <= reg <= 0x11:
            self.regs[reg] = v

    def _shunt_raw(self):
        lsb = 78.125e-9 if self.regs[0x00] & 0x10 else 312.5e-9
        raw = _round(self.current_a * self.shunt_ohm / lsb) + self._noise.lsb(self.noise_lsb)
        return _clamp(raw, -524288, 524287)

    def value(self, reg):
        if reg == 0x04:
            return self._shunt_raw() << 4
        if reg == 0x05:
            return _clamp(_round(self.bus_v / 195.3125e-6), 0, 524287) << 4
        if reg == 0x06:
            return _round(self.die_c / 7.8125e-3) & 0xFFFF
        if reg == 0x07:
            # From SHUNT_CAL = 13107.2e6 * LSB * R (x4 in the fine range): I/LSB = V*4096/CAL
            cal = self.regs[0x02]
            if cal == 0:
                return 0
            return _clamp(_round(self._shunt_raw() * 4096 / cal), -524288, 524287) << 4
        return self.regs.get(reg, 0)


class SimADS1115(_Dev):
    """Set input_v[ch] (volts at AINx); a single-shot conversion happens on the OS write."""
    RESET = {0x00: 0, 0x01: 0x8583, 0x02: 0x8000, 0x03: 0x7FFF}
    FSR_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)

    def __init__(self, addr=0x48):
        self.input_v = [0.0, 0.0, 0.0, 0.0]
        self.conversions = 0
        _Dev.__init__(self, addr)

    def set_input_v(self, ch, v):
        self.input_v[ch] = v

    def on_write(self, reg, v):
        if reg == 0x01:
            self.regs[0x01] = v | 0x8000  # conversion finishes at once: OS reads back 1
            if v & 0x8000:
                self._convert(v)
        elif reg in (0x02, 0x03):
            self.regs[reg] = v

    def _convert(self, cfg):
        mux = (cfg >> 12) & 7
        fsr = self.FSR_V[(cfg >> 9) & 7]
        if mux >= 4:
            vin = self.input_v[mux - 4]
        else:  # differential pairs: 0:0-1 1:0-3 2:1-3 3:2-3
            p, n = ((0, 1), (0, 3), (1, 3), (2, 3))[mux]
            vin = self.input_v[p] - self.input_v[n]
        raw = _round(vin / fsr * 32768) + self._noise.lsb(self.noise_lsb)
        self.regs[0x00] = _clamp(raw, -32768, 32767) & 0xFFFF
        self.conversions += 1
