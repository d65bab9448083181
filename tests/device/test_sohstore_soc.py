# Device-side tests of the SOC part of the flash store (bms/sohstore.py, version 2) and of
# the boot's SOC sigma (estimator.init_from_measurement). Plain test_* functions with bare
# asserts: CPython (pytest) and MicroPython. The calibrations are the repository's.
import json
import math

import scratch
from bms import backends, estimator, hysteresis, model, rls, soh, sohstore

CS = "checksum-of-the-calibration"
# paths from the repository's root (the qemu runner sends the files these name)
LFP = "calibration/lfp.json"
LGM50 = "calibration/lgm50.json"


def _cal(path):
    with open(path) as f:
        return json.loads(f.read())


def _est(cal):
    return estimator.CellEstimator(cal, backends.PythonBackend())


def _own_sigma(e):
    return math.sqrt(e.P[0]) * 0.01      # the filter's own SOC sigma (fraction)


def _rest_v(cal, soc, h):
    """A rested LFP cell's voltage at soc on branch h (the plant: OCV + M*h)."""
    p = model.pack(cal)
    hy = hysteresis.Hysteresis(cal)
    hy.reset(h, 0.0)
    return model.ocv(p, soc, 25.0, [0.0] * model.NTAB) + hy.volts(soc, 25.0)[0]


def _discharged_lfp(cal):
    """An LFP estimator after 10 % of its charge at C/2 (on the discharge branch) and a
    minute's rest, from a plant at 80 %."""
    p = model.pack(cal)
    plant = model.Simulator(p, 0.8, 25.0)
    hy = hysteresis.Hysteresis(cal)
    hy.reset(1.0, 0.0)
    e = _est(cal)
    e.init(0.8, 25.0, 0.02)
    i = 0.5 * e.nominal_ah
    dt = 10.0
    for k in range(78):
        c = i if k < 72 else 0.0
        v = plant.step(c, 25.0, dt)
        hy.advance(c, dt, p[model.CAP_AS])
        e.step(c, v + hy.volts(plant.soc, 25.0)[0], plant.ts, 25.0, dt)
    return e, plant


def test_soc_and_branch_survive_a_reboot():
    cal = _cal(LFP)
    e, plant = _discharged_lfp(cal)
    soc, sig, h, hs = e.soc_state()
    assert h < -0.9 and hs < 0.1, (h, hs)     # on its discharge branch, and knows it
    path = scratch.path("soc_roundtrip.json")
    st = sohstore.SohStore(path)
    st.save_soc([e], CS)
    with open(path) as f:
        doc = json.loads(f.read())
    assert doc["version"] == sohstore.VERSION and "h" in doc["cells"][0], doc
    # reboot: a fresh estimator, the store read back, then the first (rested) sample
    b = _est(cal)
    st2 = sohstore.SohStore(path)
    assert st2.restore([b], CS) == 1 and st2.soc_restored == 1 and st2.note is None
    b.step(0.0, _rest_v(cal, plant.soc, h), 25.0, 25.0, 0.0)
    assert b.boot_from == "flash", b.boot_from
    assert abs(b.soc() - soc) < 1e-6, (b.soc(), soc)              # float32 ports: 1e-6
    assert abs(b.hyst.h - h) < 1e-6, (b.hyst.h, h)
    grown = math.sqrt(sig * sig + sohstore.BOOT_OFF ** 2 + sohstore.SOC_DELTA ** 2)
    assert abs(_own_sigma(b) - grown) < 1e-5, (_own_sigma(b), grown)
    assert abs(b.hyst.sigma - math.sqrt(hs * hs + sohstore.H_DELTA ** 2)) < 1e-6
    # the SOH part rode along
    assert abs(b.cap.capacity_ah - e.cap.capacity_ah) < 1e-6


def test_lfp_boot_mid_plateau_without_a_store_has_an_honest_sigma():
    cal = _cal(LFP)
    p = model.pack(cal)
    tab = [0.0] * model.NTAB
    truth = 0.55
    for h in (1.0, -1.0):                  # rested after a charge, after a discharge
        v = _rest_v(cal, truth, h)
        # the plain OCV lookup is far off: more than 2 sigmas of the old 5 % band
        look = model.soc_from_ocv(p, v, 25.0, tab)
        assert abs(look - truth) > 2.0 * estimator.SIGMA_SOC_REST / 100.0, (h, look)
        e = _est(cal)
        e.step(0.0, v, 25.0, 25.0, 0.0)
        assert e.boot_from == "ocv"
        err = abs(e.soc() - truth)
        assert err < 2.0 * _own_sigma(e), (h, e.soc(), _own_sigma(e))
        assert _own_sigma(e) < 0.2, _own_sigma(e)       # wide, not "anywhere"


def test_steep_nmc_boot_sigma_stays_about_five_percent():
    cal = _cal(LGM50)
    p = model.pack(cal)
    for truth in (0.3, 0.5, 0.8):
        e = _est(cal)
        e.step(0.0, model.ocv(p, truth, 25.0, [0.0] * model.NTAB), 25.0, 25.0, 0.0)
        s = _own_sigma(e)
        assert 0.0499 < s < 0.052, (truth, s)
        assert abs(e.soc() - truth) < 0.005, (truth, e.soc())


def test_a_stored_soc_the_voltage_contradicts_is_dropped():
    cal = _cal(LGM50)
    p = model.pack(cal)
    e = _est(cal)
    e.restore(0.8, 0.03)                   # the pack was discharged while the BMS was off
    e.step(0.0, model.ocv(p, 0.3, 25.0, [0.0] * model.NTAB), 25.0, 25.0, 0.0)
    assert e.boot_from == "ocv" and abs(e.soc() - 0.3) < 0.005, e.soc()
    # on the LFP plateau the voltage cannot tell 62 % from 55 %: the stored SOC stands
    lfp = _cal(LFP)
    e = _est(lfp)
    e.restore(0.62, 0.03, -1.0, 0.1)
    e.step(0.0, _rest_v(lfp, 0.55, -1.0), 25.0, 25.0, 0.0)
    assert e.boot_from == "flash" and abs(e.soc() - 0.62) < 1e-6, e.soc()
    assert e.hyst.h == -1.0


class _Cell:
    """What the store reads of a cell estimator: the SOH parts and soc_state()."""

    def __init__(self, nominal=2.0):
        self.nominal_ah = nominal
        self.cap = soh.CapacityEstimator(nominal)
        self.r0_slow = 1.0
        self.rls = rls.R0Estimator()
        self.state = [0.5, 0.01, -1.0, 0.05]
        self.stored = None

    def soc_state(self):
        return tuple(self.state)

    def restore(self, soc, sigma, h=None, h_sigma=None):
        self.stored = (soc, sigma, h, h_sigma)


def test_an_old_file_restores_the_soh_alone():
    path = scratch.path("soc_v1.json")
    with open(path, "w") as f:
        f.write(json.dumps({"version": 1, "cal": CS, "cells": [
            {"cap_ah": 1.8, "cap_sigma_ah": 0.04, "r0": 1.2, "pairs": 3}]}))
    c = _Cell()
    st = sohstore.SohStore(path)
    assert st.restore([c], CS) == 1 and st.note is None
    assert abs(c.cap.capacity_ah - 1.8) < 1e-9 and c.cap.pairs == 3 and c.r0_slow == 1.2
    assert c.stored is None and st.soc_restored == 0
    # a real cell then boots from its voltage
    cal = _cal(LFP)
    e = _est(cal)
    assert sohstore.SohStore(path).restore([e], CS) == 1
    e.step(0.0, _rest_v(cal, 0.55, 1.0), 25.0, 25.0, 0.0)
    assert e.boot_from == "ocv"


def test_a_corrupt_or_partial_file_is_noted_and_nothing_applied():
    path = scratch.path("soc_good.json")
    cells = [_Cell(), _Cell()]
    cells[0].cap.reset(1.7, 0.03)
    st = sohstore.SohStore(path)
    st.run_s = 2 * 86400.0    # two days of running: the capacity may move 0.4 Ah
    st.save(cells, CS)
    with open(path) as f:
        text = f.read()
    doc = json.loads(text)
    bad = []
    bad.append(("not valid JSON", text[:len(text) // 2]))          # a write cut short
    d = json.loads(text)
    d["cells"][1]["soc"] = "x"
    bad.append(("cell 1's entry is malformed", json.dumps(d)))
    d = json.loads(text)
    del d["cells"][1]["soc_sigma"]
    bad.append(("cell 1's entry is malformed", json.dumps(d)))
    d = json.loads(text)
    d["cells"][1]["soc"] = 1.7
    bad.append(("cell 1's stored SOC", json.dumps(d)))
    d = json.loads(text)
    d["cells"][0]["h"] = 3.0
    bad.append(("cell 0's stored hysteresis", json.dumps(d)))
    for k, (words, body) in enumerate(bad):
        p = scratch.path("soc_bad%d.json" % k)
        with open(p, "w") as f:
            f.write(body)
        fresh = [_Cell(), _Cell()]
        st = sohstore.SohStore(p)
        assert st.restore(fresh, CS) == 0, words
        assert st.note and words in st.note, (words, st.note)
        for c in fresh:                   # nothing half-applied: not even cell 0's SOH
            assert c.cap.capacity_ah == 2.0 and c.stored is None, words
    # the good file restores both parts of both cells
    fresh = [_Cell(), _Cell()]
    assert sohstore.SohStore(path).restore(fresh, CS) == 2
    assert abs(fresh[0].cap.capacity_ah - 1.7) < 1e-9 and fresh[1].stored is not None
    assert abs(fresh[1].stored[0] - doc["cells"][1]["soc"]) < 1e-9
    # another calibration: the SOH part only
    fresh = [_Cell(), _Cell()]
    assert sohstore.SohStore(path).restore(fresh, "another") == 2
    assert fresh[0].stored is None and abs(fresh[0].cap.capacity_ah - 1.7) < 1e-9


def _writes(st, cells, seconds, dt=1.0, move=None):
    """Ticks of dt for seconds (move(cells) before each); returns the writes they made."""
    w = st.writes
    for _ in range(int(seconds / dt)):
        if move is not None:
            move(cells)
        st.tick(cells, dt, CS)
    return st.writes - w


def test_soc_saves_follow_movement_not_ticks():
    st = sohstore.SohStore(scratch.path("soc_sched.json"))
    cells = [_Cell(), _Cell()]
    # the first save once SOC_MIN_S has run, then nothing while the pack rests
    assert _writes(st, cells, sohstore.SOC_MIN_S - 1.0) == 0
    assert _writes(st, cells, 2.0 * sohstore.SOC_CHECK_S) == 1
    assert _writes(st, cells, 2000.0) == 0
    # a small move waits for the periodic save (overdue after that rest), a large one
    # for SOC_MIN_S at most
    cells[1].state[0] += 0.01
    assert _writes(st, cells, sohstore.SOC_CHECK_S) == 1
    cells[1].state[0] += 0.01
    assert _writes(st, cells, sohstore.SOC_SAVE_S - 20.0) == 0
    assert _writes(st, cells, 20.0 + sohstore.SOC_CHECK_S) == 1
    cells[0].state[0] -= 0.03
    assert _writes(st, cells, sohstore.SOC_MIN_S + sohstore.SOC_CHECK_S) == 1
    cells[0].state[2] = 0.0                # the branch moved half-way back
    assert _writes(st, cells, sohstore.SOC_MIN_S + sohstore.SOC_CHECK_S) == 1
    # the hourly SOH save still comes (run_s: the running time since the last one)
    st.run_s = sohstore.SAVE_S - 1.0
    assert _writes(st, cells, 2.0) == 1 and st.run_s < 2.0

    # 10 minutes at 2C in the 100 ms estimator tick: 33 points, one save per SOC_MIN_S
    def discharge(cs):
        for c in cs:
            c.state[0] -= 2.0 * 0.1 / 3600.0
    n = _writes(st, cells, 600.0, 0.1, discharge)
    assert 600.0 / sohstore.SOC_MIN_S - 1 <= n <= 600.0 / sohstore.SOC_MIN_S, n
    with open(st.path) as f:
        doc = json.loads(f.read())
    assert abs(doc["cells"][0]["soc"] - cells[0].state[0]) < 0.04, doc


def test_a_nan_soc_is_not_written():
    # MicroPython's json writes NaN as nan, which it cannot read back: the whole file
    # (the SOH too) would be lost at the next boot
    path = scratch.path("soc_nan.json")
    st = sohstore.SohStore(path)
    cells = [_Cell(), _Cell()]
    st.save_soc(cells, CS)
    cells[1].state[0] = float("nan")
    st.save_soc(cells, CS)
    with open(path) as f:
        doc = json.loads(f.read())
    assert doc["cells"][1]["soc"] == 0.5, doc       # the last good one kept
    fresh = [_Cell(), _Cell()]
    assert sohstore.SohStore(path).restore(fresh, CS) == 2
