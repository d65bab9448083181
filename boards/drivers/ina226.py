# TI INA226 shunt and bus voltage monitor (datasheet SBOS547). 16-bit big-endian registers.
REG_CONFIG = 0x00
REG_SHUNT = 0x01     # signed, 2.5 uV/LSB
REG_BUS = 0x02       # unsigned, 1.25 mV/LSB
REG_POWER = 0x03     # 25 * CURRENT_LSB W/LSB
REG_CURRENT = 0x04   # signed, CURRENT_LSB A/LSB
REG_CAL = 0x05       # CAL = 0.00512 / (CURRENT_LSB * R_shunt)
REG_MASK = 0x06
REG_ALERT = 0x07
REG_MFG_ID = 0xFE
REG_DIE_ID = 0xFF
MFG_TI = 0x5449
DIE_ID = 0x226       # bits 15..4 of REG_DIE_ID
SHUNT_LSB_V = 2.5e-6
BUS_LSB_V = 1.25e-3
SHUNT_FS_V = 0.08192
CONFIG_RESET = 0x4127
# AVG=16 (0b010), VBUSCT=VSHCT=1.1 ms (0b100), MODE=shunt+bus continuous (0b111)
CONFIG_DEFAULT = 0x4000 | (2 << 9) | (4 << 6) | (4 << 3) | 7


def _s16(hi, lo):
    v = (hi << 8) | lo
    return v - 0x10000 if v & 0x8000 else v


class INA226:
    """Pack current (positive on discharge) and bus voltage from an INA226.

    invert=True when the shunt is wired so that discharge current flows IN- to IN+.
    """

    def __init__(self, i2c, addr=0x40, shunt_ohm=0.002, max_current_a=None, invert=False,
                 config=CONFIG_DEFAULT):
        if not shunt_ohm > 0:
            raise ValueError("INA226: shunt_ohm must be a positive resistance in ohms")
        self.i2c = i2c
        self.addr = addr
        self.shunt_ohm = shunt_ohm
        self.sign = -1 if invert else 1
        self._buf = bytearray(2)
        self._w = bytearray(2)
        self._into = getattr(i2c, "readfrom_mem_into", None)  # no allocation when present
        self.probe()
        if max_current_a is None:
            max_current_a = SHUNT_FS_V / shunt_ohm
        cal = int(0.00512 * 32768 / (max_current_a * shunt_ohm))
        if cal < 1 or cal > 0x7FFF:
            raise ValueError("INA226: shunt %g ohm with max current %g A gives a calibration "
                             "outside 1..32767; choose another max_current_a"
                             % (shunt_ohm, max_current_a))
        self.cal = cal
        # The LSB the device really uses once CAL is rounded to an integer.
        self.current_lsb_a = 0.00512 / (cal * shunt_ohm)
        self.write_reg(REG_CONFIG, 0x8000)  # reset, then configure
        self.write_reg(REG_CONFIG, config)
        self.write_reg(REG_CAL, cal)

    def probe(self):
        name = "INA226 at I2C address 0x%02x" % self.addr
        try:
            mfg = self.read_reg(REG_MFG_ID)
            die = self.read_reg(REG_DIE_ID)
        except OSError:
            raise OSError("%s does not answer (check wiring, power and the address pins)"
                          % name)
        if mfg != MFG_TI or (die >> 4) != DIE_ID:
            raise OSError("%s is another device (manufacturer id 0x%04x, die id 0x%04x; "
                          "expected 0x5449, 0x2260): check the address and the part"
                          % (name, mfg, die))

    def read_reg(self, reg):
        b = self._buf
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

    def _read_s16(self, reg):
        v = self.read_reg(reg)
        return _s16(v >> 8, v & 0xFF)

    def read_current_a(self):
        return self.sign * self._read_s16(REG_CURRENT) * self.current_lsb_a

    def read_shunt_v(self):
        return self.sign * self._read_s16(REG_SHUNT) * SHUNT_LSB_V

    def read_bus_v(self):
        return self.read_reg(REG_BUS) * BUS_LSB_V
