# The `native` filter backend: the UKF step of ukf.py in C (module bms_native, built into
# the firmware next to ulab, or as a CPython extension on the host). The state, covariance,
# params, cfg, u and out buffers are array('f') (array('d') in a double build), updated in
# place by the C code: no allocation per step.
#
# A module built from other sources (an older firmware, a stale host build) may lay out
# u, cfg, out or the params header differently, and the C step would read the wrong
# slots. The module states its ABI number and sizes (ABI, LAYOUT); Backend refuses one
# that differs from ukf.py's, with one sentence saying how, and backends.choose then
# takes the next backend.
from array import array

from bms import ukf
from bms.compat import native as bms_native

if bms_native is None:
    raise ImportError("native filter module bms_native is not in this firmware")

LAYOUT_NAMES = ("NX", "U", "CFG", "OUT", "HEADER", "NTAB")


def mismatch(module):
    """None when module's ABI and layout are ukf.py's, else one sentence why not."""
    abi = getattr(module, "ABI", None)
    if abi is None:
        return ("bms_native has no ABI number (built from older sources than this "
                "software, ABI %d): rebuild the firmware" % ukf.ABI)
    if abi != ukf.ABI:
        return ("bms_native has ABI %s, this software needs ABI %d: rebuild the firmware"
                % (abi, ukf.ABI))
    layout = tuple(getattr(module, "LAYOUT", ()))
    if layout != ukf.LAYOUT:
        return ("bms_native (ABI %s) has sizes %s = %r where this software has %r: rebuild "
                "the firmware" % (abi, "/".join(LAYOUT_NAMES), layout, ukf.LAYOUT))
    return None


class Backend:
    name = "native"

    def __init__(self, module=None):
        # module: another build of the same binding (the host's bms_native_f64).
        self.mod = module if module is not None else bms_native
        why = mismatch(self.mod)
        if why is not None:
            raise ValueError(why)
        self.typecode = self.mod.TYPECODE
        self.step = self.mod.ukf_step   # step(x, P, p, cfg, u, out): the C call itself

    def alloc(self, values):
        return array(self.typecode, values)
