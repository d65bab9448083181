# Virtual time on the simulated board. The BMS is the same application.App as on a Pico,
# built on the simulated board's hardware (board.SimBoard.board); it is not told that it
# runs in a simulator. The runner moves the plant and hands the App virtual timestamps,
# the way a board's main loop hands it ticks_ms(), and a History reads the App from
# outside after its estimator ticks.
import select
import sys

from bms.application import FAST_MS
from bms.compat import ticks_diff


class History:
    """The pack's course as the demo plots it: (t_s, pack SOC, cell 0's SOC sigma, its
    core temperature degC), read after an estimator tick at most once a second."""

    def __init__(self):
        self.rows = []
        self._t_ms = None     # time of the last row
        self._ticks = None    # the App's estimator ticks counted at the last look

    def observe(self, app):
        n = app.est_stats.count
        if n == self._ticks:
            return            # no estimator tick since the last look: nothing new
        self._ticks = n
        t = app.now_ms
        if not app.cells or (self._t_ms is not None and ticks_diff(t, self._t_ms) < 1000):
            return
        self._t_ms = t
        c = app.cells[0]
        self.rows.append((t / 1000.0, app.pack_soc(), c.soc_sigma(), c.temp_core_c()))

    def take(self):
        """The rows so far; the next ones start a new list."""
        rows = self.rows
        self.rows = []
        return rows


class Runner:
    """Plant (a board.SimBoard) and BMS (an App on its hardware) in virtual time: run()
    by the board's 10 ms ticks, or fast in steps. bms.sim at the simulator's REPL."""

    def __init__(self, board, app):
        self.board = board
        self.app = app
        self.history = None   # a History while record_history() is on
        self._stdin_poll = None

    # -- the maker's view ----------------------------------------------------------
    def run(self, seconds, step=None):
        """Advance plant and BMS by `seconds` of virtual time: by the board's 10 ms ticks,
        or with step (seconds, e.g. 30) fast, one sensor read and estimator step per trace
        row at most `step` apart. Returns the App's time (ms)."""
        if step is None:
            return self.run_ticks(seconds)
        return self.run_fast(seconds, step)

    def inject(self, kind, channel=0, value=None):
        """A fault on the simulated board: see board.SimBoard.inject."""
        self.board.inject(kind, channel, value)

    def record_history(self):
        """Start recording the pack's course (History) from the next estimator tick."""
        self.history = History()

    def take_history(self):
        """The history recorded since the last call (empty when not recording)."""
        return self.history.take() if self.history is not None else []

    # -- virtual time -----------------------------------------------------------------
    def interrupted(self):
        """True when Ctrl-C arrived on the console: the simulator's console is a raw pty,
        which sends the byte, not SIGINT (other bytes typed meanwhile are dropped)."""
        if self._stdin_poll is None:
            try:
                self._stdin_poll = select.poll()
                self._stdin_poll.register(sys.stdin, select.POLLIN)
            except Exception:   # no pollable console (CPython under pytest): never
                self._stdin_poll = False
        while self._stdin_poll and self._stdin_poll.poll(0):
            c = sys.stdin.read(1)
            if c in ("\x03", b"\x03"):
                return True
            if not c:
                self._stdin_poll = False   # end of input: nobody can type any more
        return False

    def _service(self, t_ms):
        self.app.service(t_ms)
        if self.history is not None:
            self.history.observe(self.app)

    def run_ticks(self, seconds):
        """Plant and BMS by the board's fast ticks (FAST_MS), as a board runs. Ctrl-C
        stops it between two ticks (the BMS stays consistent)."""
        ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        if not ok or not 0 <= seconds <= 1e7:   # also refuses NaN
            raise ValueError("run(seconds) takes a number of seconds from 0 to 1e7, e.g. "
                             "bms.run(60); got %r" % (seconds,))
        app = self.app
        steps = int(seconds * 1000 / FAST_MS + 0.5)
        for k in range(steps):
            if k % 10 == 0 and self.interrupted():
                raise KeyboardInterrupt
            self.board.advance(FAST_MS / 1000.0)
            self._service(app.now_ms + FAST_MS)
        return app.now_ms

    def run_fast(self, seconds, max_step_s=30.0):
        """Advance plant and BMS by `seconds` of virtual time in steps of up to max_step_s,
        each ending where the trace's current changes: one sensor read and one estimator
        step per step (a board reads every 10 ms and estimates every 100 ms; with a trace
        sampled at 1 s on the move and 30 s at rest this runs days in minutes and counts
        the same charge). Ctrl-C stops it between two steps."""
        for x, what in ((seconds, "seconds"), (max_step_s, "step")):
            if not isinstance(x, (int, float)) or isinstance(x, bool) or not x == x:
                raise ValueError("run(seconds, step) takes numbers of seconds, e.g. "
                                 "bms.run(86400, 30); got %s=%r" % (what, x))
        if not 0 <= seconds <= 1e7 or not FAST_MS / 1000.0 <= max_step_s <= 600:
            raise ValueError("run(seconds, step): seconds from 0 to 1e7 and a step from "
                             "%g to 600 s; got %r, %r" % (FAST_MS / 1000.0, seconds, max_step_s))
        sb, app = self.board, self.app
        # The taps are read as a pipeline over fast ticks (each scan reads what the last
        # one started, one input per ADC: drivers/ads1115.TapBank), and the NTCs in turn:
        # these ticks at the end of a step refresh every reading before the estimator
        # sees them, or it would pair a step's current with the last step's voltage.
        pre = (4 if sb.cells > 4 else sb.cells) + sb.n_ntc
        left = int(seconds * 1000 + 0.5)
        n = 0
        while left > 0:
            if n % 10 == 0 and self.interrupted():
                raise KeyboardInterrupt
            n += 1
            # a zero_current() request reads the sensor over seconds: steps of 1 s at most
            # until it is done, or a 30 s step would end the hold before the window
            step_s = max_step_s if app.zero_since is None or max_step_s < 1.0 else 1.0
            dt = int(sb.next_step_s(step_s) * 1000 + 0.5)
            dt = left if dt > left else (FAST_MS if dt < FAST_MS else dt)
            left -= dt
            sb.advance(dt / 1000.0)
            t = app.now_ms + dt
            if dt > (pre + 1) * FAST_MS:
                for j in range(pre, 0, -1):
                    app.fast_tick(t - j * FAST_MS)
            st = app.soh_store
            before = st.run_s
            self._service(t)
            # The state-of-health store counts running time (for its hourly save and its
            # bounded change per day) by estimator ticks; a step is one tick: the rest of
            # its time is counted here (nothing when the store counted it all, or saved).
            missing = dt / 1000.0 - (st.run_s - before)
            if st.run_s > before and missing > 0.0:
                st.tick(app.cells, missing, app.store.checksum)
        return app.now_ms


def start(board, default_calibration=None, **app_options):
    """An App on the simulated board's hardware, as a Pico's boot builds one, and its
    Runner. app_options: those of application.App (cal, backend, faultlog_path, ...)."""
    from bms import application

    app = application.App(board.board, default_calibration, **app_options)
    return Runner(board, app)
