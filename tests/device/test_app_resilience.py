# A broken filter backend cannot take the BMS down: choosing one falls back with a
# reason, and an estimator tick that raises is counted and logged while protection and
# the FETs go on working.
from bms import application, backends, ukf
from sim import board as simboard
from sim import runner
from sim import sample_cal


class RaisingBackend(backends.PythonBackend):
    name = "raising"

    def step(self, x, P, p, cfg, u, out):
        raise RuntimeError("injected failure")


class SliceBackend(backends.PythonBackend):
    name = "ulab"

    def __init__(self):
        # what the ulab backend did under real MicroPython: fail while being made
        raise TypeError("can't create 'slice' instances")


def make_app(cells=2):
    """(the simulated board's runner, the App on its hardware)"""
    r = runner.start(simboard.SimBoard(cells=cells), cal=sample_cal.calibration(),
                     faultlog_path=None)
    return r, r.app


def codes(app):
    return [e[0] for e in app.log.events()]


def test_choose_passes_over_a_backend_that_cannot_step():
    cal = sample_cal.calibration()
    load = backends._load

    def broken(name):
        if name == "native":
            return RaisingBackend()
        if name == "ulab":
            return SliceBackend()
        return load(name)

    backends._load = broken
    try:
        b, note = backends.choose(None, cal)
        named, note2 = backends.choose("ulab", cal)
    finally:
        backends._load = load
    assert b.name == "python", b.name
    assert "native: RuntimeError: injected failure" in note, note
    assert "ulab: TypeError: can't create 'slice' instances" in note, note
    assert named.name == "python" and note2.startswith("ulab: TypeError"), note2


def test_every_real_backend_passes_its_check_or_says_why():
    cal = sample_cal.calibration()
    for name in backends.NAMES:
        ok, why = backends.available(name)
        if ok:
            backends.check(backends.make(name), cal)   # raises if it cannot step
        else:
            assert why, name


def test_a_raising_estimator_never_stops_protection():
    sim, app = make_app()
    for c in app.cells:
        c.backend = RaisingBackend()
    sim.run(0.5)    # boot: the first step of each cell only reads the OCV
    assert app.est_errors > 0 and app.est_error == "RuntimeError: injected failure"
    assert "EST_ERROR" in codes(app)
    assert app.checkins is not None and app.fast_stats.count >= 49
    st = app.status(False)
    assert st["est_errors"] == app.est_errors and not st["faults"], st["faults"]
    assert app.protection.charge_fet_on and app.protection.discharge_fet_on
    # over-voltage on cell 1 while the estimator keeps raising: protection trips
    for c in app.cells:
        c.backend = RaisingBackend()
    sim.inject("overvoltage", 1, 4.4)
    sim.run(2.0)     # past the trip's debounce
    assert app.est_errors >= 10
    active = app.status(False)["faults"]
    assert "OV" in active, active
    assert not app.protection.charge_fet_on
    assert not app.hw.charge_fet.is_on


def test_a_backend_that_keeps_failing_is_replaced_and_soc_kept():
    sim, app = make_app()
    sim.run(1.0)
    soc = [c.soc() for c in app.cells]
    for c in app.cells:
        c.backend = RaisingBackend()
    sim.run(application.EST_FAIL_SWITCH * application.EST_MS / 1000.0 + 0.2)
    names = [c.backend.name for c in app.cells]
    assert "raising" not in names and len(set(names)) == 1, names
    assert app.backend_note.startswith("raising failed in service"), app.backend_note
    assert "EST_BACKEND" in codes(app)
    n = app.est_errors
    sim.run(2.0)
    assert app.est_errors == n      # the new backend works
    for k in range(len(soc)):
        assert abs(app.cells[k].soc() - soc[k]) < 0.02, (soc, app.cells[k].soc())
        assert app.cells[k].status == ukf.OK


def test_without_native_the_app_runs_on_ulab_and_protects():
    if not backends.available("ulab")[0]:
        return  # this runtime has neither ulab nor numpy: nothing to check
    load = backends._load

    def no_native(name):
        if name == "native":
            raise ImportError("native filter module bms_native is not in this firmware")
        return load(name)

    backends._load = no_native
    try:
        sim, app = make_app()
        sim.run(1.0)
    finally:
        backends._load = load
    st = app.status(False)
    assert st["backend"] == "ulab" and st["backend_note"] is None, st["backend"]
    assert app.est_errors == 0 and st["soc"][0] == st["soc"][0]
    sim.inject("overvoltage", 0, 4.4)
    sim.run(2.0)     # past the trip's debounce
    assert not app.protection.charge_fet_on


def test_after_a_collection_the_heap_holes_are_plugged():
    # MicroPython only (CPython's allocator is another matter): a sieve of one-block holes
    # (every other float of a list dropped), a collection, then _plug_holes: the next
    # allocations come out contiguous instead of one hole at a time.
    import gc
    import sys
    if sys.implementation.name != "micropython":
        return
    x = 0.25
    sieve = [x * k for k in range(400)]
    for k in range(0, 400, 2):
        sieve[k] = None
    gc.collect()
    n = application._plug_holes()
    assert 16 * application.PLUG_RUN <= n <= application.PLUG_MAX + 16, n
    a = [id(x * 1.5) for _ in range(8)]
    steps = [a[k + 1] - a[k] for k in range(7)]
    # the list [id...] itself may take a block between two floats, never a hole each
    assert steps.count(application._BLOCK) >= 5, steps
    del sieve
