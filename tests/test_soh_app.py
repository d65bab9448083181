"""The application keeps each cell's state of health on flash: status() shows it with its
sigmas, a reboot restores it, a corrupt file is passed over with a note."""
import json

import pytest

from bms_host import use_device_code

use_device_code()
from bms import sohstore  # noqa: E402
from sim import board as simboard  # noqa: E402
from sim import runner  # noqa: E402
from sim import sample_cal  # noqa: E402


def _boot(cells=2):
    """The simulated board's runner with its App."""
    return runner.start(simboard.SimBoard(cells=cells), cal=sample_cal.calibration(),
                        faultlog_path="faults.json")


def test_soh_survives_a_reboot_and_shows_in_status(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sohstore, "SAVE_S", 2.0)
    sim = _boot()
    app = sim.app
    d = app.status(False)
    for key in ("soh", "soh_sigma", "capacity_ah", "capacity_sigma_ah", "r0_growth",
                "r0_growth_sigma"):
        assert key in d, key
    assert len(d["capacity_sigma_ah"]) == 2 and len(d["r0_growth_sigma"]) == 2
    # cell 1 has learnt a smaller capacity (four measurements of 4.4 Ah)
    c = app.cells[1].cap
    for _ in range(4):
        c.add(4.4, 0.05 ** 2)
    assert abs(c.capacity_ah - 4.4) < 0.1
    sim.run(3.0)
    doc = json.loads((tmp_path / "soh.json").read_text())
    assert doc["cal"] == app.store.checksum and len(doc["cells"]) == 2
    saved = doc["cells"][1]["cap_ah"]
    # bounded: 2 s of running may move it by 2/86400 of a day's 10 %
    assert 5.0 - saved <= 0.1 * 5.0 * 3.0 / 86400 + 1e-9, saved
    assert saved < 5.0
    # a reboot restores it and the filter uses it
    app2 = _boot().app
    assert abs(app2.cells[1].cap.capacity_ah - saved) < 1e-9
    assert abs(app2.cells[1].capacity_ah() - saved) < 1e-9
    assert app2.cells[1].cap.pairs == 4
    assert app2.status(False)["capacity_ah"][1] == pytest.approx(saved)


def test_a_corrupt_soh_file_is_passed_over(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "soh.json").write_text("{half a file")
    app = _boot().app
    assert app.cells[0].cap.capacity_ah == app.cells[0].nominal_ah
    assert "not valid JSON" in app.soh_store.note


def test_soc_survives_a_reboot_and_status_says_where_it_came_from(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    sim = _boot()
    sim.run(2.0)
    app = sim.app
    assert app.status(False)["soc_boot"] == ["ocv", "ocv"]     # no file yet
    assert app.save_state()
    doc = json.loads((tmp_path / "soh.json").read_text())
    assert doc["version"] == sohstore.VERSION
    socs = [c.soc() for c in app.cells]
    assert [e["soc"] for e in doc["cells"]] == pytest.approx(socs, abs=1e-9)
    sim2 = _boot()
    sim2.run(0.2)                          # the first estimator tick boots the cells
    d = sim2.app.status(False)
    assert d["soc_boot"] == ["flash", "flash"] and d["soh_note"] is None
    assert d["soc"] == pytest.approx(socs, abs=1e-3)   # plus one tick of filtering
    sim2.app.status()                      # the REPL table still prints
    assert "SOC" in capsys.readouterr().out


def test_a_corrupt_file_shows_its_note_in_status(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "soh.json").write_text('{"version": 2, "cal": "x", "cells": [{"cap_ah": 5')
    sim = _boot()
    sim.run(0.2)
    d = sim.app.status()
    out = capsys.readouterr().out
    assert "flash: soh.json is not valid JSON" in out, out
    assert d is not None and sim.app.status(False)["soc_boot"] == ["ocv", "ocv"]
