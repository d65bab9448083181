# The BMS at the REPL:  import bms; bms.status()
# The running application lives in bms.app (see bms.app module); these functions are
# the maker's window into it. status(), faults() and selftest() print a table and return
# None, so the REPL does not echo a dict of float32 digits after it; with show=False they
# print nothing and return the data (a dict or a list) for code to use.
__version__ = "0.1.0"

app = None
# A board that runs in virtual time (the simulator: boards/sim/runner.Runner) sets this at
# boot; run() advances it. None on a real board, whose time passes by itself.
sim = None


def start(board, default_calibration=None):
    """Build and start the BMS on a board (called by the board's boot)."""
    global app
    from bms import application

    app = application.App(board, default_calibration)
    return app


def _need_app():
    if app is None:
        raise RuntimeError("the BMS is not running: start it with bms.start(board)")
    return app


def status(show=True):
    d = _need_app().status(show)
    if show:
        print(health_line(d))
    return None if show else d


def _pick(d, key, sig_key, worst):
    """(value, sigma) of the cell that worst (min or max) picks from d[key]."""
    vals = d.get(key) or []
    sigs = d.get(sig_key) or []
    best = None
    for k in range(len(vals)):
        v = vals[k]
        if v is not None and v == v and (best is None or worst(v, vals[best]) == v):
            best = k
    if best is None:
        return None, None
    return vals[best], sigs[best] if best < len(sigs) else None


def _f(x, fmt):
    return "-" if x is None or x != x else fmt % x


def health_line(d):
    """State of health with its uncertainty, as bms.status() prints it: the pack's SOH
    (its weakest cell), that cell's capacity, and the largest resistance growth."""
    soh, sig = d.get("soh"), d.get("soh_sigma")
    cap, cap_sig = _pick(d, "capacity_ah", "capacity_sigma_ah", min)
    g, g_sig = _pick(d, "r0_growth", "r0_growth_sigma", max)
    return "health: SOH %s +- %s %%  capacity %s +- %s Ah  R0 growth x%s +- %s" % (
        _f(soh if soh is None else soh * 100, "%.1f"),
        _f(sig if sig is None else sig * 100, "%.1f"), _f(cap, "%.3f"), _f(cap_sig, "%.3f"),
        _f(g, "%.2f"), _f(g_sig, "%.2f"))


def faults(show=True):
    a = _need_app()
    if not show:
        return a.log.events()
    if not a.faults():
        print("no faults logged")
    return None


def cal_info():
    return _need_app().cal_info()


def selftest(show=True):
    r = _need_app().selftest(show)
    return None if show else r


def save():
    """Write the cells' SOC to flash now (before unplugging the BMS); the running BMS
    saves it by itself when it moves."""
    return _need_app().save_state()


def reset_faults():
    return _need_app().reset_faults()


def zero_current():
    """Read the current sensor's zero now: both FETs open for about 12 s (the load and
    the charger are cut), then protection drives them again. Prints what happens."""
    print(_need_app().zero_current())


def run(seconds, step=None):
    """Advance the simulated board by `seconds` of virtual time (sim board only). With
    step (seconds, e.g. 30) it runs fast: one sensor read and estimator step per trace
    row, at most `step` apart, instead of the board's 10 ms ticks."""
    _need_app()
    if sim is None:
        raise RuntimeError("run() advances virtual time on the simulated board only")
    return sim.run(seconds, step)
