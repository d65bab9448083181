# State of health: capacity from charge counted between anchored SOC points (long rests
# on a steep OCV, the end of a CV charge), its sigma, the resistance factor's sigma, and
# the store on flash (round trip, bounded change, atomic write, bad files).
# Plain test_* functions: they run under CPython (pytest) and MicroPython (mpy_runner).
import json
import math
import os

import scratch
from bms import model, rls, soh, sohstore, ukf
from sim import sample_cal

CAP = 5.0
DT = 10.0


class _Est:
    """What the capacity estimator reads from a cell estimator, fed with the plant's own
    states (a perfect filter): the estimator's logic alone is under test."""

    def __init__(self, plant, nominal):
        self.plant = plant
        self.p = model.pack(sample_cal.calibration(nominal))
        self.tab = [0.0] * model.NTAB
        self.x = [0.0] * ukf.NX
        self.P = [0.0] * (ukf.NX * ukf.NX)
        self.P[ukf.BIAS * (ukf.NX + 1)] = 4.0
        self.rls = rls.R0Estimator()
        self.r0_slow = 1.0
        self.nominal_ah = nominal
        self.cap = soh.CapacityEstimator(nominal, 4.2)

    def step(self, i_a, dt_s, offset_a=0.0):
        pl = self.plant
        v = pl.step(i_a, 25.0, dt_s)
        self.x[ukf.V1] = pl.v1 * 1000.0
        self.x[ukf.V2] = pl.v2 * 1000.0
        self.x[ukf.TC] = pl.tc
        self.x[ukf.BIAS] = offset_a * 1000.0   # the filter knows the offset
        self.cap.update(self, i_a + offset_a, v, dt_s)
        return v


def _plant(soc, cap_ah):
    return model.Simulator(model.pack(sample_cal.calibration(cap_ah)), soc, 25.0)


def _rest(e, s):
    for _ in range(int(s / DT)):
        e.step(0.0, DT)


def _move(e, i_a, to_soc):
    n = 0
    while (e.plant.soc > to_soc) if i_a > 0 else (e.plant.soc < to_soc):
        e.step(i_a, DT, 0.03)
        n += 1
        assert n < 10000


def test_partial_cycles_with_rests_learn_the_capacity():
    true_ah = 0.85 * CAP
    e = _Est(_plant(0.8, true_ah), CAP)
    c = e.cap
    assert abs(c.soh() - 1.0) < 1e-9 and abs(c.soh_sigma() - soh.PRIOR_SIGMA) < 1e-9
    for _ in range(3):
        _rest(e, 2400)
        _move(e, 0.5 * CAP, 0.3)
        _rest(e, 2400)
        _move(e, -0.4 * CAP, 0.8)
    _rest(e, 2400)
    e.step(1.0, DT)        # the last rest ends: its anchor closes
    assert c.pairs >= 5, c.pairs
    assert abs(c.capacity_ah - true_ah) < 0.02 * CAP, (c.capacity_ah, true_ah)
    assert abs(c.capacity_ah - true_ah) < 3.0 * c.sigma_ah, (c.capacity_ah, c.sigma_ah)
    assert c.sigma_ah < 0.03 * CAP, c.sigma_ah
    assert abs(c.soh() - 0.85) < 0.02


def test_short_rests_and_small_swings_teach_nothing():
    e = _Est(_plant(0.7, 0.8 * CAP), CAP)
    for _ in range(4):
        _rest(e, 600)                 # shorter than REST_MIN_S
        _move(e, 0.5 * CAP, 0.35)
        _rest(e, 600)
        _move(e, -0.5 * CAP, 0.7)
    for _ in range(3):
        _rest(e, 2400)                # long rests, but only 10 points apart
        _move(e, 0.5 * CAP, 0.6)
        _rest(e, 2400)
        _move(e, -0.5 * CAP, 0.7)
    assert e.cap.pairs == 0
    assert e.cap.capacity_ah == CAP


def test_end_of_cv_charge_anchors_full():
    true_ah = 0.9 * CAP
    e = _Est(_plant(0.45, true_ah), CAP)
    _rest(e, 2400)
    # CC to 4.2 V, then hold 4.2 V (a proportional controller on the current) to C/20
    i = -0.5 * CAP
    v = e.step(i, DT)
    while v < 4.2:
        v = e.step(i, DT)
    n = 0
    while -i > CAP / 20.0:
        i = min(-0.02, i + 8.0 * (v - 4.2))
        v = e.step(i, DT)
        n += 1
        assert n < 5000
    assert e.plant.soc > 0.97
    _rest(e, 600)
    _move(e, 0.5 * CAP, 0.45)
    _rest(e, 2400)
    e.step(1.0, DT)
    c = e.cap
    assert c.pairs == 2, c.pairs        # rest -> full, full -> rest
    assert abs(c.last_pair_ah - true_ah) < 0.04 * CAP, c.last_pair_ah


def test_disagreeing_measurements_widen_the_sigma():
    a = soh.CapacityEstimator(CAP)
    b = soh.CapacityEstimator(CAP)
    for k in range(6):
        a.add(4.5, 0.05 ** 2)
        b.add(4.5 + (0.4 if k % 2 else -0.4), 0.05 ** 2)
    assert abs(a.capacity_ah - 4.5) < 0.05 and abs(b.capacity_ah - 4.5) < 0.1
    assert b.sigma_ah > 4.0 * a.sigma_ah, (a.sigma_ah, b.sigma_ah)
    assert b.sigma_ah > 0.1


def test_fading_memory_follows_a_cell_that_ages():
    c = soh.CapacityEstimator(CAP)
    for _ in range(10):
        c.add(4.8, 0.1 ** 2)
    for _ in range(25):
        c.add(4.2, 0.1 ** 2)
    assert abs(c.capacity_ah - 4.2) < 0.05, c.capacity_ah


class _Cell:
    def __init__(self, cap_ah, sigma_ah, r0):
        self.nominal_ah = CAP
        self.cap = soh.CapacityEstimator(CAP)
        self.cap.reset(cap_ah, sigma_ah)
        self.cap.pairs = 7
        self.r0_slow = r0
        self.rls = rls.R0Estimator()
        self.stored = None

    def soc_state(self):
        return None               # not stepped yet: the store keeps the SOH alone

    def restore(self, soc, sigma, h=None, h_sigma=None):
        self.stored = (soc, sigma, h, h_sigma)


def _store(name):
    p = scratch.path("soh_%s.json" % name)
    return sohstore.SohStore(p), p


def test_store_round_trip_and_bounded_change_per_day():
    st, p = _store("roundtrip")
    cells = [_Cell(4.9, 0.05, 1.05), _Cell(4.0, 0.05, 1.4)]
    st.run_s = 86400.0        # one day of running: at most 10 % of nominal
    st.save(cells, "cal1")
    with open(p) as f:
        doc = json.loads(f.read())
    assert doc["cal"] == "cal1" and len(doc["cells"]) == 2
    assert abs(doc["cells"][0]["cap_ah"] - 4.9) < 1e-9
    assert abs(doc["cells"][1]["cap_ah"] - (CAP - 0.1 * CAP)) < 1e-9   # held back
    assert doc["cells"][1]["cap_sigma_ah"] >= 0.5 - 1e-9   # covers the distance
    assert abs(doc["cells"][1]["r0"] - 1.2) < 1e-9         # 0.2 per day
    # a new boot reads it back
    fresh = [_Cell(CAP, 0.5, 1.0), _Cell(CAP, 0.5, 1.0)]
    st2 = sohstore.SohStore(p)
    assert st2.restore(fresh, "cal1") == 2
    assert abs(fresh[0].cap.capacity_ah - 4.9) < 1e-9 and fresh[0].cap.pairs == 7
    assert abs(fresh[0].r0_slow - 1.05) < 1e-9
    # another calibration: the capacity holds, the resistance factor does not
    other = [_Cell(CAP, 0.5, 1.0)]
    assert sohstore.SohStore(p).restore(other, "cal2") == 1
    assert abs(other[0].cap.capacity_ah - 4.9) < 1e-9 and other[0].r0_slow == 1.0
    # an hour later the held-back cell may move by 1/24 of a day's bound
    st2.run_s = 0.0
    assert not st2.tick(fresh, 1800.0, "cal1")
    fresh[1].cap.reset(4.0, 0.05)
    assert st2.tick(fresh, 1800.0, "cal1")
    with open(p) as f:
        doc = json.loads(f.read())
    assert abs(doc["cells"][1]["cap_ah"] - (4.5 - 0.1 * CAP / 24.0)) < 1e-6
    _exists_not(p + ".tmp")


def _exists_not(p):
    try:
        os.stat(p)
        raise AssertionError("%s left behind" % p)
    except OSError:
        pass


def test_store_survives_a_cut_between_remove_and_rename_and_refuses_bad_files():
    st, p = _store("cut")
    cells = [_Cell(4.6, 0.05, 1.1)]
    st.run_s = 86400.0
    st.save(cells, "c")
    os.rename(p, p + ".tmp")        # as if power failed after remove, before rename
    back = [_Cell(CAP, 0.5, 1.0)]
    assert sohstore.SohStore(p).restore(back, "c") == 1
    assert abs(back[0].cap.capacity_ah - 4.6) < 1e-9
    for k, text in enumerate(("{not json", '{"version": 9, "cells": []}',
                              '{"version": 1, "cells": [{"cap_ah": 99, "cap_sigma_ah": 1, '
                              '"r0": 1}]}')):
        st, p = _store("bad%d" % k)
        with open(p, "w") as f:
            f.write(text)
        cell = [_Cell(CAP, 0.5, 1.0)]
        assert st.restore(cell, "c") == 0
        assert cell[0].cap.capacity_ah == CAP
        if k < 2:
            assert st.note and "calibration" in st.note, st.note
    assert sohstore.SohStore(scratch.path("soh_none.json")).restore([_Cell(CAP, 0.5, 1.0)],
                                                                    "c") == 0


def test_resistance_sigma_follows_the_rls_scatter():
    e = _Est(_plant(0.6, CAP), CAP)
    quiet = e.cap.r_sigma(e)
    assert abs(quiet - soh.R_SYS) < 1e-9
    for k in range(200):
        e.rls.scale = 1.0 + (0.3 if k % 2 else -0.3)
        e.rls.updates += 1
        e.cap.update(e, 0.0, float("nan"), 1.0)
    assert e.cap.r_sigma(e) > 2.0 * quiet
    assert math.isfinite(e.cap.r_sigma(e))


def test_rls_takes_the_kinetic_drop_as_known_not_as_r0():
    # a cell whose pulse resistance falls with current (Butler-Volmer, i0 = 5 A): the
    # factor on R0 stays ~1 when the kinetic term is subtracted, and is inflated without
    cal = sample_cal.calibration(CAP)
    tabs = cal["tables"]
    tabs["i0_a"] = [[5.0] * len(tabs["soc"]) for _ in tabs["temp_c"]]
    p = model.pack(cal)
    plant = model.Simulator(list(p), 0.7, 25.0)
    e = _Est(plant, CAP)
    e.p = p
    with_k = rls.R0Estimator(forget=0.85, p0=100.0)
    without = rls.R0Estimator(forget=0.85, p0=100.0)
    tab = [0.0] * model.NTAB
    for k in range(600):
        i = sample_cal.drive_current(k, CAP)
        v = plant.step(i, 25.0, 1.0)
        e.x[ukf.SOC] = plant.soc * 100.0
        e.x[ukf.TC] = plant.tc
        model.lookup(p, plant.soc, plant.tc, tab)
        r0 = tab[model.R0] if i >= 0 else tab[model.R0C]
        with_k.update(i, v, plant.v1 + plant.v2, r0, 1.0, e)
        without.update(i, v, plant.v1 + plant.v2, r0, 1.0)
    assert with_k.updates > 20
    assert abs(with_k.scale - 1.0) < 0.05, with_k.scale
    assert without.scale > 1.15, without.scale
    # a long sample teaches nothing (the RC pairs move as much as R0 in it)
    n = with_k.updates
    with_k.update(5.0, 3.6, 0.0, 0.02, 10.0, e)
    with_k.update(-5.0, 3.9, 0.0, 0.02, 10.0, e)
    assert with_k.updates == n


def test_rls_skips_a_step_the_voltage_has_not_reached_yet():
    # a row logged at the instant the current changes still holds the loaded voltage (a
    # cycler's event row; a monitor reading voltage and current in turn): it would read as
    # no resistance at all and drive the factor to its floor
    r = rls.R0Estimator(forget=0.85, p0=100.0)
    r.update(10.0, 2.500, 0.0, 0.02, 1.0)
    assert not r.update(0.0, 2.498, 0.0, 0.02, 0.05)   # the old voltage, 50 ms later
    assert r.scale == 1.0 and r.updates == 0
    assert r.update(10.0, 2.300, 0.0, 0.02, 1.0)       # a real step is learnt
    assert abs(r.scale - 1.0) < 0.01, r.scale
