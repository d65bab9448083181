# The three filter-step backends behind one interface:
#   alloc(values) -> the array type the backend works on in place
#   step(x, P, p, cfg, i_a, ta_c, dt_s, v_meas, ts_meas, out) -> status (0 = ok)
# `python` is the reference; `ulab` and `native` must agree with it.
from bms import ukf

NAMES = ("native", "ulab", "python")


class PythonBackend:
    name = "python"

    def __init__(self):
        self.ws = ukf.Workspace()

    def alloc(self, values):
        return [float(v) for v in values]

    def step(self, x, P, p, cfg, i_a, ta_c, dt_s, v_meas, ts_meas, out):
        return ukf.step(x, P, p, cfg, i_a, ta_c, dt_s, v_meas, ts_meas, out, self.ws)


def _load(name):
    if name == "python":
        return PythonBackend()
    if name == "ulab":
        from bms import ukf_ulab
        return ukf_ulab.Backend()
    if name == "native":
        from bms import ukf_native
        return ukf_native.Backend()
    raise ValueError("unknown filter backend %r: choose native, ulab or python" % (name,))


def available(name):
    """(True, '') or (False, reason)."""
    try:
        _load(name)
    except ImportError as e:
        return False, str(e)
    return True, ""


def make(name=None):
    """The named backend, or the fastest one this firmware has when name is None."""
    if name is not None:
        try:
            return _load(name)
        except ImportError as e:
            raise ValueError("filter backend %r is not available here: %s" % (name, e))
    for n in NAMES:
        try:
            return _load(n)
        except ImportError:
            pass
    return PythonBackend()
