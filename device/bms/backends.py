# The three filter-step backends behind one interface:
#   alloc(values) -> the array type the backend works on in place
#   step(x, P, p, cfg, u, out) -> status (0 = ok); the layouts of u, cfg and out are
#   ukf.py's (U_*, CFG_*, OUT_*), p is model.pack's and only read
# `python` is the reference; `ulab` and `native` must agree with it.
from bms import model, ukf

NAMES = ("native", "ulab", "python")


class PythonBackend:
    name = "python"

    def __init__(self):
        self.ws = ukf.Workspace()

    def alloc(self, values):
        return [float(v) for v in values]

    def step(self, x, P, p, cfg, u, out):
        return ukf.step(x, P, p, cfg, u, out, self.ws)


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


def _why(e):
    return "%s: %s" % (type(e).__name__, e) if not isinstance(e, ImportError) else str(e)


def available(name):
    """(True, '') or (False, reason)."""
    try:
        _load(name)
    except Exception as e:  # a broken build fails in many ways, not only on import
        return False, _why(e)
    return True, ""


def make(name=None):
    """The named backend, or the fastest one this firmware has when name is None."""
    if name is not None:
        try:
            return _load(name)
        except Exception as e:
            raise ValueError("filter backend %r is not available here: %s" % (name, _why(e)))
    return choose()[0]


def check(b, cal):
    """One filter step of a rested cell at half charge with the calibration's tables:
    raises when the backend cannot step (a firmware's module of another version, a
    function its ulab lacks), so that this shows at boot and not in the tick."""
    p = b.alloc(model.pack(cal))
    x = b.alloc([50.0, 0.0, 0.0, 25.0, 25.0, 0.0])
    P = b.alloc([(4.0 if r == c else 0.0) for r in range(ukf.NX) for c in range(ukf.NX)])
    cfg = b.alloc(ukf.default_cfg())
    out = b.alloc([0.0] * ukf.OUT_SIZE)
    tab = [0.0] * model.NTAB
    v = model.ocv(p, 0.5, 25.0, tab)
    u = b.alloc(ukf.make_u(1.0, 25.0, 1.0, v, 25.0, cal["cell"]["capacity_ah"] * 3600.0))
    st = b.step(x, P, p, cfg, u, out)
    if st != ukf.OK or not (-10.0 < x[ukf.SOC] < 110.0):
        raise ValueError("a test step returned status %d, SOC %r" % (st, x[ukf.SOC]))


def choose(preferred=None, cal=None, after=None):
    """(backend, note): the preferred backend, else the fastest one that loads and (with
    a calibration) passes check(); `after` skips that name and the faster ones (a
    backend that failed in service). Never raises: the python step is the last resort.
    note says in one sentence what was passed over and why (None when nothing was)."""
    order = list(NAMES)
    if after in order:
        order = order[order.index(after) + 1:] or ["python"]
    if preferred is not None and preferred in order:
        order.remove(preferred)
        order.insert(0, preferred)
    skipped = []
    for n in order:
        try:
            b = _load(n)
            if cal is not None:
                check(b, cal)
        except Exception as e:
            if preferred is None and isinstance(e, ImportError):
                continue  # simply not in this firmware: the usual case, not news
            skipped.append("%s: %s" % (n, _why(e)))
            continue
        return b, ("; ".join(skipped) if skipped else None)
    return PythonBackend(), "; ".join(skipped)
