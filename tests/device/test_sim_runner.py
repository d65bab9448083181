# Virtual time on the simulated board (boards/sim/runner.py): the BMS is the App a Pico
# runs, on the simulated board's hardware; the runner moves plant and App, records the
# pack's course from outside, and the plant follows the board's pins and sensors.
import bms
from sim import board as simboard
from sim import runner
from sim import sample_cal


def _start(cells=2, soc=0.8):
    # a fixed number of cells per estimator tick: the same steps in every run
    return runner.start(simboard.SimBoard(cells, None, sample_cal.calibration(), soc),
                        cal=sample_cal.calibration(), faultlog_path=None, cells_per_tick=cells)


def test_the_app_runs_on_the_simulated_boards_hardware():
    sim = _start()
    assert sim.app.hw is sim.board.board
    assert sim.run(2) == 2000 and sim.app.now_ms == 2000
    # 10 ms fast ticks, a 100 ms estimator tick, the watchdog fed as on a board
    assert sim.app.fast_stats.count == 200 and sim.app.est_stats.count == 20
    assert sim.board.board.wdt.feeds == 20
    st = sim.app.status(False)
    assert st["fet_chg"] and st["fet_dsg"] and not st["faults"], st["faults"]


def test_the_history_is_read_from_outside_once_a_second():
    sim = _start()
    assert sim.take_history() == []       # nothing recorded until asked
    sim.run(1)
    sim.record_history()
    sim.run(2.5)
    rows = sim.take_history()
    # estimator ticks at 10, 110, ... ms: the first after recording starts, then one a
    # second of virtual time
    assert [round(r[0], 3) for r in rows] == [1.01, 2.01, 3.01], rows
    # what the App shows at those times (the same run, stopped there)
    ref = _start()
    ref.run(1.01)
    for t, soc, sigma, tc in rows:
        assert abs(ref.app.now_ms / 1000.0 - t) < 1e-9
        c = ref.app.cells[0]
        assert (soc, sigma, tc) == (ref.app.pack_soc(), c.soc_sigma(), c.temp_core_c())
        ref.run(1)
    assert sim.take_history() == []       # taken: a new list starts
    sim.run(1, 0.5)                       # fast steps are read too
    assert [round(r[0], 3) for r in sim.take_history()] == [4.5]


def test_the_plant_bleeds_a_cell_whose_bleeder_pin_is_on():
    sb = simboard.SimBoard(2, None, sample_cal.calibration(), 0.8)
    socs = [c.soc for c in sb.plant.cells]
    sb.board.bleeders.set_mask(0b10)      # the driver drives cell 1's pin
    for _ in range(100):
        sb.advance(1.0)
    drop = [socs[k] - sb.plant.cells[k].soc for k in range(2)]
    cap_as = sb.plant.cells[1].cap_as
    assert abs(drop[0]) < 1e-6, drop      # no current, no bleeder
    assert abs(drop[1] - 0.05 * 100 / cap_as) < 0.05 * drop[1], drop   # 50 mA for 100 s
    sb.board.bleeders.set_mask(0)
    sb.advance(1.0)
    assert sb.plant.bleed == [False, False]


def test_the_ambient_comes_from_the_board_as_from_an_ambient_sensor():
    sim = _start(1)
    sim.run(0.2)
    sim.board.plant.ambient_c = 31.5
    assert sim.board.board.ambient_c() == 31.5
    assert sim.app.ambient_c(sim.app.sensors.sample) == 31.5


def test_bms_run_moves_the_simulated_board_only():
    old_app, old_sim = bms.app, bms.sim
    try:
        sim = _start(1)
        bms.app, bms.sim = sim.app, None
        try:
            bms.run(1)
        except RuntimeError as e:
            assert "simulated board only" in str(e)
        else:
            raise AssertionError("bms.run ran without a simulated board")
        bms.sim = sim
        assert bms.run(1) == 1000 and bms.run(2, 1) == 3000
        for bad in (-1, float("nan"), "ten", True):
            try:
                bms.run(bad)
            except ValueError as e:
                assert "run(seconds)" in str(e)
            else:
                raise AssertionError(bad)
        assert sim.app.now_ms == 3000      # a refused run moved nothing
    finally:
        bms.app, bms.sim = old_app, old_sim
