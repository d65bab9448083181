# The `native` filter backend: the UKF step of ukf.py in C (module bms_native, built into
# the firmware next to ulab, or as a CPython extension on the host). The state, covariance,
# params, cfg and out buffers are array('f') (array('d') in a double build), updated in
# place by the C code: no allocation per step.
from array import array

from bms.compat import native as bms_native

if bms_native is None:
    raise ImportError("native filter module bms_native is not in this firmware")


class Backend:
    name = "native"

    def __init__(self, module=None):
        # module: another build of the same binding (the host's bms_native_f64).
        self.mod = module if module is not None else bms_native
        self.typecode = self.mod.TYPECODE
        self.u = array(self.typecode, [0.0] * 5)

    def alloc(self, values):
        return array(self.typecode, values)

    def step(self, x, P, p, cfg, i_a, ta_c, dt_s, v_meas, ts_meas, out):
        u = self.u
        u[0] = i_a
        u[1] = ta_c
        u[2] = dt_s
        u[3] = v_meas
        u[4] = ts_meas
        return self.mod.ukf_step(x, P, p, cfg, u, out)
