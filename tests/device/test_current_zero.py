# The current sensor's zero while both FETs are open (bms/currentzero.py): the window
# and its mean, the filter's offset state taking the reading, and the App on the
# simulated board learning a sensor's offset when a fault opens its FETs. Plain test_*
# functions: they run under CPython (pytest) and MicroPython (mpy_runner).
from bms import backends, currentzero, estimator, ukf
from sim import board as simboard
from sim import runner
from sim import sample_cal

OFFSET_A = 0.030


def _feed(z, shut, i_a, t0_ms, seconds, mas0=0):
    """Feed z every 100 ms for seconds of a constant current; (readings, counter, t). The
    counter is the App's: an integer of mA*s."""
    got = []
    mas = mas0
    t = t0_ms
    step = int(i_a * 100.0 + 0.5)     # mA*s per 100 ms of i_a amperes
    for _ in range(int(seconds * 10)):
        t += 100
        mas += step
        r = z.update(shut, mas, t)
        if r is not None:
            got.append(r)
    return got, mas, t


def test_one_reading_per_opening_after_the_settle_and_the_window():
    z = currentzero.CurrentZero()
    got, mas, t = _feed(z, False, 0.5, 0, 30)      # FETs closed: a load, no reading
    assert got == [] and z.last_ma is None
    wait = (currentzero.SETTLE_MS + currentzero.WINDOW_MS) / 1000.0
    got, mas, t = _feed(z, True, OFFSET_A, t, wait - 0.5, mas)
    assert got == [], got                           # not before settle + window
    got, mas, t = _feed(z, True, OFFSET_A, t, 60, mas)
    assert len(got) == 1 and abs(got[0] - 30.0) < 1e-3, got   # once per opening
    got, mas, t = _feed(z, False, 1.0, t, 1, mas)   # closed again: the next opening reads
    got, mas, t = _feed(z, True, 0.020, t, wait + 0.5, mas)
    assert len(got) == 1 and abs(got[0] - 20.0) < 1e-3 and z.last_ma == got[0], got


def test_a_closing_within_the_window_gives_no_reading():
    z = currentzero.CurrentZero()
    got, mas, t = _feed(z, True, OFFSET_A, 0, 8)
    got, mas, t = _feed(z, False, 2.0, t, 0.2, mas)   # a FET closed: load current flows
    got2, mas, t = _feed(z, True, OFFSET_A, t, 8, mas)
    assert got == [] and got2 == [], (got, got2)


def test_the_offset_state_takes_the_reading_and_the_soc_its_share():
    est = estimator.CellEstimator(sample_cal.calibration(5.0), backends.PythonBackend())
    est.init(0.5, 25.0, 0.05)
    n = ukf.NX
    x, P = est.x, est.P
    b = ukf.BIAS
    P[b * n] = P[b] = 2.0                # SOC-offset covariance (% * mA)
    pbb, p00, soc0 = P[b * n + b], P[0], x[ukf.SOC]
    est.current_zero(30.0, 1.0)
    k = pbb / (pbb + 1.0)
    tol = 1e-5                           # relative: the boards compute in float32
    assert abs(x[b] - k * 30.0) < tol * 30.0, x[b]
    assert abs(x[ukf.SOC] - (soc0 + 2.0 / (pbb + 1.0) * 30.0)) < tol * soc0
    assert abs(P[b * n + b] - pbb * 1.0 / (pbb + 1.0)) < tol * pbb
    assert abs(P[0] - (p00 - 4.0 / (pbb + 1.0))) < tol * p00
    for i in range(n):
        for j in range(n):
            assert P[i * n + j] == P[j * n + i]
    held = x[b]
    est.current_zero(float("nan"), 1.0)  # a broken reading changes nothing
    assert x[b] == held


def _app(offset_a):
    board = simboard.SimBoard(cells=2)
    board.current_offset_a = offset_a
    r = runner.start(board, cal=sample_cal.calibration(), faultlog_path=None)
    r.run(2.0)                           # boot: FETs closed, every cell's filter started
    return r, r.app


def test_a_fault_that_opens_both_fets_zeroes_the_current_sensor():
    r, app = _app(OFFSET_A)
    assert app.protection.charge_fet_on and app.protection.discharge_fet_on
    before = app.status(False)["i_bias_ma"]
    r.inject("temp_open", 0)             # a sensor fault holds both FETs open
    r.run(13.0)
    assert not app.protection.charge_fet_on and not app.protection.discharge_fet_on
    st = app.status(False)
    assert st["i_zero_ma"] is not None and abs(st["i_zero_ma"] - 30.0) < 2.0, st["i_zero_ma"]
    for k in range(2):
        assert abs(before[k]) < 5.0, before
        assert abs(st["i_bias_ma"][k] - 30.0) < 3.0, st["i_bias_ma"]


def test_without_fets_to_open_nothing_is_read():
    r, app = _app(OFFSET_A)
    app.hw.charge_fet = None             # a monitor-only board: current may still flow
    r.inject("temp_open", 0)
    r.run(13.0)
    assert app.status(False)["i_zero_ma"] is None


def test_a_makers_request_opens_both_fets_reads_the_zero_and_closes_them():
    r, app = _app(OFFSET_A)
    assert app.fet_chg and app.fet_dsg and app.zero.last_ma is None
    said = app.zero_current()
    assert "both FETs open" in said, said
    r.run(1.0)
    st = app.status(False)
    assert st["zeroing"] and not st["fet_chg"] and not st["fet_dsg"], st
    assert app.protection.charge_fet_on and app.protection.discharge_fet_on  # no fault
    r.run(12.0)
    st = app.status(False)
    assert st["i_zero_ma"] is not None and abs(st["i_zero_ma"] - 30.0) < 2.0, st["i_zero_ma"]
    assert not st["zeroing"] and st["fet_chg"] and st["fet_dsg"], st   # closed again
    for k in range(2):
        assert abs(st["i_bias_ma"][k] - 30.0) < 3.0, st["i_bias_ma"]


def test_a_request_does_not_close_fets_that_a_fault_holds_open():
    r, app = _app(OFFSET_A)
    r.inject("temp_open", 0)
    app.zero_current()
    r.run(15.0)
    assert not app.fet_chg and not app.fet_dsg and not app.status(False)["zeroing"]


def test_a_request_without_both_fets_says_why_and_opens_nothing():
    r, app = _app(OFFSET_A)
    app.hw.discharge_fet = None           # a charge-only switch: discharge may still flow
    said = app.zero_current()
    assert "cannot" in said and app.zero_since is None, said
    r.run(13.0)
    assert app.fet_chg and app.status(False)["i_zero_ma"] is None


def test_a_request_is_read_in_the_simulators_fast_steps_too():
    r, app = _app(OFFSET_A)
    app.zero_current()
    r.run(60.0, 30.0)                     # bms.run(60, 30): steps of 1 s while it reads
    st = app.status(False)
    assert st["i_zero_ma"] is not None and abs(st["i_zero_ma"] - 30.0) < 2.0, st["i_zero_ma"]
    assert st["fet_chg"] and st["fet_dsg"] and not st["zeroing"], st
