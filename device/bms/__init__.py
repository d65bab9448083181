# The BMS at the REPL:  import bms; bms.status()
# The running application lives in bms.app (see bms.app module); these functions are
# the maker's window into it.
__version__ = "0.1.0"

app = None


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
    return _need_app().status(show)


def faults():
    return _need_app().faults()


def cal_info():
    return _need_app().cal_info()


def selftest():
    return _need_app().selftest()


def reset_faults():
    return _need_app().reset_faults()


def run(seconds):
    """Advance the simulated board by `seconds` of virtual time (sim board only)."""
    return _need_app().run_virtual(seconds)
