# The simulated board's plant: an aged cell (bms-host sim --age), a CC-CV charger
# (--charger-cv) and fast virtual time (bms.run(seconds, step)).
from sim import board as simboard
from sim import runner
from sim import sample_cal


def test_an_aged_plant_holds_less_charge_and_drops_more_under_load():
    cal = sample_cal.calibration()
    fresh = simboard.SimBoard(1, None, cal, 0.9)
    old = simboard.SimBoard(1, None, cal, 0.9, simboard.parse_age("0.8"))
    rest_f, rest_o = fresh.plant.v[0], old.plant.v[0]
    assert abs(rest_f - rest_o) < 1e-6          # same OCV at the same SOC
    for sb in (fresh, old):
        sb.plant.advance(10.0, 5.0, 25.0)       # a 10 s pulse
    drop_f, drop_o = rest_f - fresh.plant.v[0], rest_o - old.plant.v[0]
    g = simboard.growth_for(0.8)
    assert 1.35 < g < 1.4 and drop_f > 0.0
    assert abs(drop_o / drop_f - g) < 0.1 * g, (drop_o / drop_f, g)
    for sb in (fresh, old):
        sb.plant.advance(3600.0, 1.0, 25.0)
    dsoc_f = 0.9 - fresh.plant.cells[0].soc
    dsoc_o = 0.9 - old.plant.cells[0].soc
    assert abs(dsoc_f / dsoc_o - 0.8) < 0.01, (dsoc_f, dsoc_o)


def test_age_arguments_are_checked():
    assert simboard.parse_age("0.87") == (0.87, None)
    assert simboard.parse_age("0.87:1.5") == (0.87, 1.5)
    assert simboard.parse_age("") is None
    for bad in ("x", "0.1", "0.9:0.5", "0.9:1:2"):
        try:
            simboard.parse_age(bad)
        except ValueError as e:
            assert "sim:" in str(e), bad
        else:
            raise AssertionError(bad)


def test_a_cc_cv_charger_holds_the_voltage_and_tapers():
    cal = sample_cal.calibration()
    v_max = cal["limits"]["v_max"]
    sb = simboard.SimBoard(2, None, cal, 0.85, None, v_max - 0.05)
    p = sb.plant
    cv = (v_max - 0.05) * 2
    last = None
    for _ in range(400):                       # 1C offered for 4000 s
        p.advance(10.0, -cal["cell"]["capacity_ah"], 25.0)
        assert sum(p.v) < cv + 0.002, p.v
        if last is not None:
            assert p.current_a >= last - 1e-9  # the charge current only tapers
        last = p.current_a
    assert -0.2 * cal["cell"]["capacity_ah"] < p.current_a < 0.0, p.current_a
    assert abs(sum(p.v) - cv) < 0.005


def test_fast_run_counts_the_same_charge_as_the_board_ticks():
    sims = []
    for _ in range(2):
        sim = runner.start(simboard.SimBoard(1, None, sample_cal.calibration(), 0.8),
                           cal=sample_cal.calibration(), faultlog_path=None)
        sim.run(1)
        sims.append(sim)
    # 1 A for 10 minutes, played by the board's ticks and by fast steps
    for k in range(2):
        sims[k].board.trace = _ConstTrace(1.0)
        if k == 0:
            sims[k].run(600)
        else:
            sims[k].run(600, 30)
    sa, sb_ = sims[0].board, sims[1].board
    a, b = sims[0].app, sims[1].app
    assert a.now_ms == b.now_ms
    assert abs(a.charge_mas - b.charge_mas) < 0.02 * a.charge_mas, (a.charge_mas, b.charge_mas)
    # the ticking plant adds 60,000 steps of 5.6e-7 to its SOC: in float32 each rounds by
    # up to ~5 %, so the two plants agree to a few 1e-3 there (1e-12 in double)
    assert abs(sa.plant.cells[0].soc - sb_.plant.cells[0].soc) < 3e-3
    # the flash store's clock (its hourly save, its bounded change per day) runs on
    assert abs(a.soh_store.run_s - b.soh_store.run_s) < 1.0, (a.soh_store.run_s,
                                                              b.soh_store.run_s)
    for bad in (-1, float("nan"), "ten"):
        try:
            sims[1].run(bad, 30)
        except ValueError as e:
            assert "run(seconds, step)" in str(e)
        else:
            raise AssertionError(bad)


class _ConstTrace:
    """A trace of one current for ever, sampled every second."""
    playback = False

    def __init__(self, i_a):
        self.i_a = i_a
        self.t = [0.0, 1e9]

    def row(self, t_s):
        return 1

    def at(self, t_s):
        return self.i_a, 25.0


class _PulseTrace(_ConstTrace):
    """Rest and a discharge pulse in turn, each `period` seconds long."""

    def __init__(self, i_a, period, n):
        self.i_a = i_a
        self.t = [period * k for k in range(n)]

    def row(self, t_s):
        t = self.t
        k = int(t_s / (t[1] - t[0]))
        return k + 1 if k + 1 < len(t) else len(t) - 1

    def at(self, t_s):
        return (self.i_a if self.row(t_s) % 2 else 0.0), 25.0


def test_fast_steps_pair_each_current_with_its_own_voltage():
    # on the calibrated cell itself the resistance learnt from current steps stays at
    # the calibration's: a voltage read a step late would make it nonsense
    sim = runner.start(simboard.SimBoard(3, None, sample_cal.calibration(), 0.7),
                       cal=sample_cal.calibration(), faultlog_path=None)
    app = sim.app
    sim.run(1)
    sim.board.trace = _PulseTrace(2.0, 2.0, 200)    # the RLS takes steps up to 2 s apart
    sim.run(398, 30)
    for c in app.cells:
        assert c.rls.updates > 50 and 0.9 < c.rls.scale < 1.1, (c.rls.updates, c.rls.scale)
        assert 0.95 < c.r0_growth() < 1.05, c.r0_growth()


def test_board_ticks_pair_each_voltage_with_the_current_read_with_it():
    # By the board's 10 ms ticks a current step falls inside an estimator tick: the
    # tick's mean current has moved in part, the voltage in full. Learnt from that mean,
    # the calibrated cell's own resistance read as growth (the demo's fresh LG M50:
    # x2.46 after an hour).
    sim = runner.start(simboard.SimBoard(1, None, sample_cal.calibration(), 0.7),
                       cal=sample_cal.calibration(), faultlog_path=None)
    app = sim.app
    sim.run(1)
    sim.board.trace = _PulseTrace(8.0, 2.0, 200)
    sim.run(30)
    c = app.cells[0]
    assert c.rls.updates >= 5 and 0.9 < c.rls.scale < 1.1, (c.rls.updates, c.rls.scale)
