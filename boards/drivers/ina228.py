# TI INA228 85 V, 20-bit shunt monitor (datasheet SBOS860). Big-endian registers of 16, 24
# or 40 bits; VSHUNT, VBUS and CURRENT hold a 20-bit two's complement value in bits 23..4.
REG_CONFIG = 0x00      # bit 4 ADCRANGE: 0 = +-163.84 mV, 1 = +-40.96 mV
REG_ADC_CONFIG = 0x01  # MODE 15..12, VBUSCT 11..9, VSHCT 8..6, VTCT 5..3, AVG 2..0
REG_SHUNT_CAL = 0x02   # 15 bits: 13107.2e6 * CURRENT_LSB * R_shunt (x4 when ADCRANGE=1)
REG_VSHUNT = 0x04      # 312.5 nV/LSB (ADCRANGE=0), 78.125 nV/LSB (ADCRANGE=1)
REG_VBUS = 0x05        # 195.3125 uV/LSB
REG_DIETEMP = 0x06     # 7.8125 m degC/LSB, 16 bits signed
REG_CURRENT = 0x07     # CURRENT_LSB A/LSB, CURRENT_LSB = max current / 2**19
REG_MFG_ID = 0x3E
REG_DEVICE_ID = 0x3F
MFG_TI = 0x5449
DIE_ID = 0x228         # bits 15..4 of REG_DEVICE_ID
BUS_LSB_V = 195.3125e-6
TEMP_LSB_C = 7.8125e-3
SHUNT_LSB_V = (312.5e-9, 78.125e-9)
SHUNT_FS_V = (0.16384, 0.04096)
# continuous shunt+bus+temperature, 1052 us conversions, 16 averages
ADC_CONFIG_DEFAULT = (0xF << 12) | (5 << 9) | (5 << 6) | (5 << 3) | 2


def _s20(b):
    v = ((b[0] << 16) | (b[1] << 8) | b[2]) >> 4
    return v - 0x100000 if v & 0x80000 else v


class INA228:
    """Pack current (positive on discharge), bus voltage and die temperature from an INA228.

    adc_range=1 selects the +-40.96 mV shunt range (4x finer, for small shunt voltages).
    """

    def __init__(self, i2c, addr=0x40, shunt_ohm=0.002, max_current_a=None, adc_range=0,
                 invert=False, adc_config=ADC_CONFIG_DEFAULT):
        if not shunt_ohm > 0:
            raise ValueError("INA228: shunt_ohm must be a positive resistance in ohms")
        if adc_range not in (0, 1):
            raise ValueError("INA228: adc_range must be 0 (+-163.84 mV) or 1 (+-40.96 mV)")
        self.i2c = i2c
        self.addr = addr
        self.shunt_ohm = shunt_ohm
        self.adc_range = adc_range
        self.sign = -1 if invert else 1
        self._b2 = bytearray(2)
        self._b3 = bytearray(3)
        self._w = bytearray(2)
        self._into = getattr(i2c, "readfrom_mem_into", None)
        self.probe()
        if max_current_a is None:
            max_current_a = SHUNT_FS_V[adc_range] / shunt_ohm
        k = 4 if adc_range else 1
        cal = int(13107.2e6 * (max_current_a / 524288) * shunt_ohm * k + 0.5)
        if cal < 1 or cal > 0x7FFF:
            raise ValueError("INA228: shunt %g ohm with max current %g A gives SHUNT_CAL "
                             "outside 1..32767; choose another max_current_a"
                             % (shunt_ohm, max_current_a))
        self.shunt_cal = cal
        # The LSB the device really uses once SHUNT_CAL is rounded to an integer.
        self.current_lsb_a = cal / (13107.2e6 * shunt_ohm * k)
        self.write_reg(REG_CONFIG, 0x8000)
        self.write_reg(REG_CONFIG, adc_range << 4)
        self.write_reg(REG_ADC_CONFIG, adc_config)
        self.write_reg(REG_SHUNT_CAL, cal)

    def probe(self):
        name = "INA228 at I2C address 0x%02x" % self.addr
        try:
            mfg = self.read_reg(REG_MFG_ID)
            dev = self.read_reg(REG_DEVICE_ID)
        except OSError:
            raise OSError("%s does not answer (check wiring, power and the address pins)"
                          % name)
        if mfg != MFG_TI or (dev >> 4) != DIE_ID:
            raise OSError("%s is another device (manufacturer id 0x%04x, device id 0x%04x; "
                          "expected 0x5449, 0x228x): check the address and the part"
                          % (name, mfg, dev))

    def _read(self, reg, b):
        if self._into is not None:
            self._into(self.addr, reg, b)
        else:
            b[:] = self.i2c.readfrom_mem(self.addr, reg, len(b))
        return b

    def read_reg(self, reg):
        b = self._read(reg, self._b2)
        return (b[0] << 8) | b[1]

    def write_reg(self, reg, value):
        w = self._w
        w[0] = (value >> 8) & 0xFF
        w[1] = value & 0xFF
        self.i2c.writeto_mem(self.addr, reg, w)

    def read_current_a(self):
        return self.sign * _s20(self._read(REG_CURRENT, self._b3)) * self.current_lsb_a

    def read_shunt_v(self):
        return self.sign * _s20(self._read(REG_VSHUNT, self._b3)) * SHUNT_LSB_V[self.adc_range]

    def read_bus_v(self):
        return _s20(self._read(REG_VBUS, self._b3)) * BUS_LSB_V

    def read_die_c(self):
        v = self.read_reg(REG_DIETEMP)
        return (v - 0x10000 if v & 0x8000 else v) * TEMP_LSB_C
