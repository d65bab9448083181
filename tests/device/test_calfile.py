# Device-side tests of the calibration validator (run under CPython and MicroPython).
import json

from bms import calfile


def sample():
    soc = [0.0, 0.5, 1.0]
    temp = [0.0, 25.0]
    row = [0.01, 0.01, 0.01]
    return {
        "schema": 1,
        "cell": {"id": "test", "chemistry": "nmc", "capacity_ah": 5.0},
        "limits": {"v_min": 2.5, "v_max": 4.2, "i_discharge_max_a": 10.0,
                   "i_charge_max_a": 5.0, "t_charge_min_c": 0.0, "t_charge_max_c": 45.0,
                   "t_discharge_min_c": -20.0, "t_discharge_max_c": 60.0,
                   "t_core_max_c": 60.0},
        "tables": {"soc": soc, "temp_c": temp, "ocv_v": [[3.0, 3.7, 4.2], [3.0, 3.7, 4.2]],
                   "r0_ohm": [row, row], "r1_ohm": [row, row], "tau1_s": [[10.0] * 3] * 2,
                   "r2_ohm": [row, row], "tau2_s": [[100.0] * 3] * 2},
        "thermal": {"c_core_j_per_k": 70.0, "c_surf_j_per_k": 5.0,
                    "r_core_surf_k_per_w": 2.35, "r_surf_amb_k_per_w": 12.0},
    }


def encode(cal):
    # MicroPython's json has no sort_keys; the device never writes calibrations, but the
    # test needs a body: a fixed key order is canonical enough for the checksum.
    return calfile.encode(json.dumps(cal))


def expect_error(text, fragment, **kw):
    try:
        calfile.loads(text, **kw)
    except calfile.CalibrationError as e:
        assert fragment in str(e), str(e)
        return str(e)
    raise AssertionError("accepted a bad calibration: " + fragment)


def test_roundtrip():
    cal, checksum = calfile.loads(encode(sample()))
    assert cal["cell"]["id"] == "test"
    assert len(checksum) == 64


def test_truncated_and_edited():
    text = encode(sample())
    expect_error(text[: len(text) // 2], "checksum")
    expect_error(text.replace("4.2", "4.3"), "checksum mismatch")
    expect_error("hello", "does not start")


def test_cut_short_is_told_apart_from_edited():
    text = encode(sample())
    assert "cut short" in expect_error(text[: len(text) - 40], "checksum")
    assert "cut short" not in expect_error(text.replace("4.2", "4.3"), "checksum mismatch")


def test_size_limit_fits_a_calibration_and_a_board():
    # the largest real calibration (LG M50, about 19 KB) fits with room; a board's 32 KB
    # MQTT buffer takes any file within the limit
    assert 24 * 1024 <= calfile.MAX_BYTES <= 32768


def test_names_the_field():
    cal = sample()
    del cal["thermal"]["c_core_j_per_k"]
    expect_error(encode(cal), "thermal.c_core_j_per_k")
    cal = sample()
    cal["tables"]["r0_ohm"][1] = [0.01, 0.01]
    expect_error(encode(cal), "tables.r0_ohm")
    cal = sample()
    cal["tables"]["soc"] = [0.0, 0.5, 0.4]
    expect_error(encode(cal), "increasing")
    cal = sample()
    cal["tables"]["ocv_v"][1] = [3.0, 3.7, 3.6]   # an OCV that falls at the top
    msg = expect_error(encode(cal), "tables.ocv_v")
    assert "row 1" in msg and "SOC 1" in msg, msg


def test_limits_cannot_exceed_maxima():
    cal = sample()
    cal["limits"]["v_max"] = 4.4
    expect_error(encode(cal), "maxima")
    cal = sample()
    cal["limits"]["t_charge_min_c"] = -5.0
    expect_error(encode(cal), "charge window")


def test_cell_count():
    cal = sample()
    cal["pack"] = {"series_cells": 4}
    expect_error(encode(cal), "series_cells", series_cells=3)
    assert calfile.loads(encode(cal), series_cells=4)[0]["pack"]["series_cells"] == 4


def test_optional_r2c_table_and_heat_v2_fraction():
    cal = sample()
    cal["tables"]["r2c_ohm"] = [[0.02] * 3, [0.02] * 3]
    cal["thermal"]["heat_v2_fraction"] = 0.5
    assert calfile.loads(encode(cal))[0]["thermal"]["heat_v2_fraction"] == 0.5
    cal["thermal"]["heat_v2_fraction"] = 0
    calfile.loads(encode(cal))
    for bad in (1.5, -0.1, "half"):
        cal["thermal"]["heat_v2_fraction"] = bad
        expect_error(encode(cal), "thermal.heat_v2_fraction")
    cal = sample()
    cal["tables"]["r2c_ohm"] = [[0.02] * 3]
    expect_error(encode(cal), "tables.r2c_ohm")


def test_optional_heat_table_and_heat_v1_fraction():
    cal = sample()
    cal["tables"]["rh_ohm"] = [[0.01] * 3, [0.02] * 3]
    cal["thermal"]["heat_v1_fraction"] = 0.4
    got = calfile.loads(encode(cal))[0]
    assert got["tables"]["rh_ohm"][1] == [0.02] * 3 and got["thermal"]["heat_v1_fraction"] == 0.4
    cal["thermal"]["heat_v1_fraction"] = 2
    expect_error(encode(cal), "thermal.heat_v1_fraction")
    cal = sample()
    cal["tables"]["rh_ohm"] = [[0.01] * 3, [0.02, 0.0, 0.02]]
    expect_error(encode(cal), "tables.rh_ohm")


def test_optional_diffusion_names_the_field():
    cal = sample()
    cal["diffusion"] = {"shift_per_a": 0.002, "tau_s": 100.0, "activation_k": 3600.0}
    assert calfile.loads(encode(cal))[0]["diffusion"]["tau_s"] == 100.0
    cal["diffusion"]["shift_per_a_chg"] = 0.0005     # optional: the gain on charge
    assert calfile.loads(encode(cal))[0]["diffusion"]["shift_per_a_chg"] == 0.0005
    for key, bad in (("shift_per_a", -0.001), ("tau_s", 0.0), ("activation_k", "hot"),
                     ("shift_per_a", 0.6), ("shift_per_a_chg", -0.001),
                     ("shift_per_a_chg", "fast")):
        c = sample()
        c["diffusion"] = {"shift_per_a": 0.002, "tau_s": 100.0, "activation_k": 3600.0}
        c["diffusion"][key] = bad
        expect_error(encode(c), "diffusion." + key)
    c = sample()
    c["diffusion"] = {"shift_per_a": 0.002, "tau_s": 100.0}
    expect_error(encode(c), "diffusion.activation_k")


def test_compact_keeps_the_model_and_drops_provenance():
    from bms import model

    cal = sample()
    cal["provenance"] = {"fit": "host-only detail"}
    before = model.pack(cal)
    calfile.compact(cal)
    assert "provenance" not in cal
    assert not isinstance(cal["tables"]["soc"], list)
    assert not isinstance(cal["tables"]["ocv_v"][0], list)
    after = model.pack(cal)
    assert len(after) == len(before)
    for k in range(len(before)):
        a, b = after[k], before[k]
        assert abs(a - b) <= 1e-6 * abs(b) + 1e-30, (a, b)   # float32 rounding only
