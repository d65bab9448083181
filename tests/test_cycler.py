"""The cycler-export reader: the shared measured LG M50 folder as it is, and small synthetic
exports in other vendors' header styles, units, sign conventions and time-stamp habits."""
import json
import re

import numpy as np
import pytest

from bms_host import REPO, UserError, cycler

MEASURED = REPO.parent / "shared" / "data" / "lgm50_measured"
CAP = 5.0


# ------------------------------------------------------------------ a small cell

def _ocv(soc):
    return 3.3 + 0.75 * soc + 0.15 * np.tanh((soc - 0.05) * 20.0) - 0.1 * np.exp(-soc * 30)


def _run(segs, dt=1.0, soc0=1.0, temp0=25.0):
    """(t, i, v, temp) of a simple one-RC cell; i positive on discharge; segs are
    (duration_s, current_a)."""
    i = [0.0]
    for d, c in segs:
        i.extend([c] * max(1, int(round(d / dt))))
    i = np.array(i)
    t = np.arange(len(i)) * dt
    soc = soc0 - np.cumsum(i * dt) / (CAP * 3600.0)
    v1 = np.zeros(len(i))
    a = np.exp(-dt / 30.0)
    for k in range(1, len(i)):
        v1[k] = a * v1[k - 1] + 0.012 * (1.0 - a) * i[k]
    v = _ocv(soc) - 0.018 * i - v1
    temp = temp0 + 0.002 * np.cumsum(i * i * dt) / (1.0 + 0.01 * t)
    return t, i, v, temp


def profile(kind):
    if kind == "rate":   # rested full, 1C to empty, rest, C/3 charge, rest
        return _run([(60, 0.0), (3400, CAP), (1800, 0.0), (10000, -CAP / 3), (1800, 0.0)],
                    dt=2.0)
    if kind == "ocv_c20":
        return _run([(60, 0.0), (71000, CAP / 20), (3600, 0.0), (71000, -CAP / 20)], dt=60.0)
    if kind == "pulse":  # HPPC: discharge and charge pulse, then a 10 % step, 5 levels
        segs = []
        for _ in range(5):
            segs += [(10, CAP), (40, 0.0), (10, -0.75 * CAP), (40, 0.0), (360, CAP), (900, 0.0)]
        return _run([(300, 0.0)] + segs)
    if kind == "gitt":
        return _run([(60, 0.0)] + [(900, CAP / 10), (2700, 0.0)] * 8, dt=5.0)
    if kind == "dynamic":
        rng = np.random.default_rng(3)
        return _run([(int(d), c) for d, c in zip(rng.integers(5, 40, 120),
                                                 rng.uniform(-1.0, 2.0, 120) * CAP,
                                                 strict=True)], soc0=0.9)
    raise ValueError(kind)


def _write(path, header, rows, delim=",", pre=""):
    with open(path, "w", encoding="utf-8") as f:
        f.write(pre)
        f.write(delim.join(header) + "\n")
        for r in rows:
            f.write(delim.join(r) + "\n")


def arbin(path, t, i, v, temp, flip=True, dup=False):
    """Arbin-style: Test_Time(s), Current(A) negative on discharge, Aux temperature; with dup
    every current change is logged twice at one time stamp (end of the old step, start of
    the new), and a few rows are repeated outright."""
    rows = []
    s = -1.0 if flip else 1.0
    for k in range(len(t)):
        if dup and k > 0 and i[k] != i[k - 1]:
            rows.append([t[k - 1], i[k - 1], v[k - 1], temp[k - 1]])
            rows.append([t[k - 1], i[k], v[k], temp[k]])
        rows.append([t[k], i[k], v[k], temp[k]])
        if dup and k % 97 == 5:
            rows.append([t[k], i[k], v[k], temp[k]])
    _write(path, ["Data_Point", "Test_Time(s)", "Step_Time(s)", "Current(A)", "Voltage(V)",
                  "Aux_Temperature_1(C)"],
           [[str(n + 1), "%.3f" % a, "0", "%.5f" % (s * b), "%.5f" % c, "%.2f" % d]
            for n, (a, b, c, d) in enumerate(rows)])


def neware(path, t, i, v, temp):
    """Neware-style: hh:mm:ss total time, unsigned mA current with a status column, T1 in
    degrees Celsius written with its own symbol."""
    def hms(x):
        return "%02d:%02d:%06.3f" % (x // 3600, (x % 3600) // 60, x % 60)
    status = ["CC_DChg" if c > 0 else "CC_Chg" if c < 0 else "Rest" for c in i]
    _write(path, ["Record Index", "Status", "Total Time", "Current(mA)", "Voltage(V)",
                  "T1(\u2103)"],
           [[str(n), st, hms(a), "%.1f" % abs(1000 * b), "%.5f" % c, "%.2f" % d]
            for n, (st, a, b, c, d) in enumerate(zip(status, t, i, v, temp, strict=True))])


def biologic(path, t, i, v, temp):
    """EC-Lab text export: preamble, tab-separated, decimal commas, I/mA negative on
    discharge, Ewe/V."""
    def dc(x, f):
        return (f % x).replace(".", ",")
    pre = "EC-Lab ASCII FILE\nNb header lines : 5\n\nAcquisition started on : 01/02/2025\n"
    _write(path, ["mode", "ox/red", "time/s", "control/mA", "Ewe/V", "I/mA",
                  "Temperature/\u00b0C"],
           [["1", "0", dc(a, "%.4f"), "0", dc(c, "%.6f"), dc(-1000 * b, "%.3f"),
             dc(d, "%.2f")] for a, b, c, d in zip(t, i, v, temp, strict=True)],
           delim="\t", pre=pre)


def maccor(path, t, i, v, temp):
    """Maccor-style: Test Time (sec), unsigned Current (Amps), MD state D/C/R, bare
    'Voltage', 'Temp 1'."""
    md = ["D" if c > 0 else "C" if c < 0 else "R" for c in i]
    _write(path, ["Rec#", "Cyc#", "Step", "Test Time (sec)", "Step Time (sec)",
                  "Capacity (AHr)", "Current (Amps)", "Voltage", "MD", "Temp 1"],
           [[str(n), "1", "1", "%.2f" % a, "0", "0", "%.4f" % abs(b), "%.5f" % c, m,
             "%.2f" % d] for n, (a, b, c, d, m) in enumerate(zip(t, i, v, temp, md,
                                                                   strict=True))])


def milli(path, t, i, v, temp):
    """A logger in ms, mA, mV and kelvin with bracket units, semicolons, current positive
    on discharge."""
    _write(path, ["Time [ms]", "I [mA]", "U [mV]", "T [K]"],
           [["%d" % round(1000 * a), "%.1f" % (1000 * b), "%.2f" % (1000 * c),
             "%.2f" % (d + 273.15)] for a, b, c, d in zip(t, i, v, temp, strict=True)],
           delim=";")


WRITERS = {"arbin": arbin, "neware": neware, "biologic": biologic, "maccor": maccor,
           "milli": milli}


def _check(test, t, i, v, temp, kind, amb, i_tol=2e-3, t_tol=2e-3):
    assert test.kind == kind, (test.name, test.kind, test.notes)
    assert test.ambient_c == amb
    assert np.all(np.diff(test.t) > 0)
    assert test.t[0] == 0.0
    # same samples at the same times, in the project's units and sign
    k = np.searchsorted(test.t, t - t[0] - 1e-6)
    k = np.clip(k, 0, len(test.t) - 1)
    assert np.allclose(test.t[k], t - t[0], atol=t_tol)
    assert np.allclose(test.current[k], i, atol=i_tol, rtol=1e-3)
    assert np.allclose(test.voltage[k], v, atol=2e-5)
    assert np.allclose(test.temperature[k], temp, atol=0.011)
    # notes are single sentences
    assert all(isinstance(n, str) and ". " not in n and n for n in test.notes)


# ------------------------------------------------------------------ synthetic exports

@pytest.mark.parametrize("vendor", sorted(WRITERS))
@pytest.mark.parametrize("kind", ["rate", "pulse", "gitt", "ocv_c20", "dynamic"])
def test_vendor_styles(tmp_path, vendor, kind):
    t, i, v, temp = profile(kind)
    if vendor == "neware" and kind == "dynamic":
        pytest.skip("the Neware-style writer signs by status and has no mixed-sign step")
    name = {"arbin": "cellA_25C_%s.csv", "neware": "m10C_%s_neware.csv",
            "biologic": "%s_10degC.mpt", "maccor": "maccor_45C_%s.txt",
            "milli": "log_0C_%s.csv"}[vendor] % kind
    amb = {"arbin": 25.0, "neware": -10.0, "biologic": 10.0, "maccor": 45.0, "milli": 0.0}
    WRITERS[vendor](tmp_path / name, t, i, v, temp)
    test = cycler.read_file(tmp_path / name, capacity_ah=CAP)
    _check(test, t, i, v, temp, kind, amb[vendor], i_tol=2e-3 if vendor != "neware" else 0.06)
    if kind == "rate":
        assert test.rate_c == pytest.approx(1.0, abs=0.01)
        assert test.capacity_ah == pytest.approx(CAP * 0.944, rel=0.02)


def test_sign_either_way_and_duplicate_time_stamps(tmp_path):
    t, i, v, temp = profile("pulse")
    arbin(tmp_path / "a_25C.csv", t, i, v, temp, flip=True, dup=True)
    arbin(tmp_path / "b_25C.csv", t, i, v, temp, flip=False, dup=True)
    a = cycler.read_file(tmp_path / "a_25C.csv")
    b = cycler.read_file(tmp_path / "b_25C.csv")
    for x in (a, b):
        assert x.kind == "pulse"
        assert np.all(np.diff(x.t) > 0)
        # every step edge is kept as two samples 1 ms apart: the jump stays visible
        edges = np.nonzero(np.diff(x.current) != 0)[0]
        assert len(edges) == 6 * 5
        assert np.all(np.diff(x.t)[edges] <= 1e-3 + 1e-9)
        assert np.allclose(np.sort(np.unique(np.round(x.current, 3))),
                           [-0.75 * CAP, 0.0, CAP])
        assert any("1 ms later" in n for n in x.notes)
        assert any("repeated time stamp" in n for n in x.notes)
        # charge counted the same as the true current
        q = np.sum(x.current[1:] * np.diff(x.t))
        assert q == pytest.approx(np.sum(i[1:] * np.diff(t)), rel=1e-3)
    assert any("sign flipped" in n for n in a.notes)
    assert not any("sign flipped" in n for n in b.notes)


def test_step_time_only_and_restarting_axis(tmp_path):
    t, i, v, temp = profile("gitt")
    # step time restarts at every current change
    st = np.zeros(len(t))
    for k in range(1, len(t)):
        st[k] = 0.0 if i[k] != i[k - 1] else st[k - 1] + (t[k] - t[k - 1])
    _write(tmp_path / "g_25C.csv", ["Step Time(s)", "Current(A)", "Voltage(V)"],
           [["%.1f" % a, "%.4f" % -b, "%.5f" % c] for a, b, c in zip(st, i, v, strict=True)])
    x = cycler.read_file(tmp_path / "g_25C.csv")
    assert x.kind == "gitt" and x.temperature is None
    assert np.all(np.diff(x.t) > 0)
    assert x.t[-1] == pytest.approx(t[-1], rel=0.01)
    assert any("step time" in n for n in x.notes)


def test_ocv_table_and_ambient_from_data(tmp_path):
    soc = np.linspace(0, 100, 21)
    _write(tmp_path / "ocv_m5C.csv", ["SOC [%]", "OCV [V]", "hysteresis [mV]"],
           [["%.1f" % s, "%.4f" % _ocv(s / 100), "%.1f" % 12.0] for s in soc])
    x = cycler.read_file(tmp_path / "ocv_m5C.csv")
    assert x.kind == "ocv_table" and x.ambient_c == -5.0
    assert np.allclose(x.soc, soc / 100) and np.allclose(x.voltage, _ocv(soc / 100), atol=1e-4)
    assert np.allclose(x.hysteresis_v, 0.012)
    t, i, v, temp = profile("pulse")
    arbin(tmp_path / "hppc.csv", t, i, v, temp + 8.0)
    y = cycler.read_file(tmp_path / "hppc.csv")
    assert y.ambient_c == pytest.approx(33.0, abs=0.1)
    assert any("first temperature sample" in n for n in y.notes)


def test_rate_token_is_not_the_temperature(tmp_path):
    t, i, v, temp = profile("rate")
    arbin(tmp_path / "0C_1C.csv", t, i, v, temp - 24.6)  # starts at 0.4 degC: nearer 0 than 1
    arbin(tmp_path / "2C_10C.csv", t, 2 * i, v, temp - 15.0)
    f = cycler.read_folder(tmp_path, {"capacity_ah": CAP})
    by = {x.name: x for x in f}
    a, b = by["0C_1C.csv"], by["2C_10C.csv"]
    assert a.ambient_c == 0.0 and a.rate_c == pytest.approx(1.0, 0.01)
    assert b.ambient_c == 10.0 and b.rate_c == pytest.approx(2.0, 0.01)


def test_mapping_overrides_and_folder(tmp_path):
    t, i, v, temp = profile("pulse")
    (tmp_path / "sub").mkdir()
    arbin(tmp_path / "sub" / "p.csv", t, i, v, temp)
    t2, i2, v2, temp2 = profile("rate")
    arbin(tmp_path / "r_25C.csv", t2, i2, v2, temp2)
    (tmp_path / "notes.md").write_text("not data")
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    (tmp_path / cycler.MAPPING_NAME).write_text(json.dumps({
        "ambient_c": 20, "files": {"sub/*.csv": {"kind": "dynamic", "ambient_c": 35},
                                   "junk.csv": {"kind": "skip"}}}))
    f = cycler.read_folder(tmp_path)
    assert [x.name for x in f] == ["r_25C.csv", "sub/p.csv"]
    r, p = f
    assert p.kind == "dynamic" and p.ambient_c == 35.0
    assert any("set to dynamic by the mapping" in n for n in p.notes)
    assert r.kind == "rate" and r.ambient_c == 25.0
    assert f.capacity_ah == pytest.approx(r.capacity_ah)
    assert any("junk.csv skipped" in n for n in f.notes)
    # forcing the sign the other way is obeyed (and shows as charge-first current)
    g = cycler.read_file(tmp_path / "r_25C.csv", {"sign": "discharge_positive"})
    assert g.current[40] < 0


def test_bad_input_is_one_sentence(tmp_path):
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="no header naming a voltage column"):
        cycler.read_folder(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        cycler.read_folder(tmp_path / "nope")
    (tmp_path / "junk.csv").write_text("Test_Time(s),Current(A),Voltage(V)\n"
                                       + "x,1,3.7\n" * 10 + "1,1,3.7\n")
    with pytest.raises(UserError, match="rows have no number"):
        cycler.read_file(tmp_path / "junk.csv")
    (tmp_path / "junk.csv").write_text("Time(s),Current(kA),Voltage(V)\n1,1,3.7\n")
    with pytest.raises(UserError, match="(?i)unit 'kA'"):
        cycler.read_file(tmp_path / "junk.csv")
    (tmp_path / cycler.MAPPING_NAME).write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        cycler.read_folder(tmp_path)


# ------------------------------------------------------------------ the measured folder

@pytest.mark.skipif(not MEASURED.is_dir(), reason="../shared/data/lgm50_measured is absent")
def test_measured_folder():
    f = cycler.read_folder(MEASURED)
    assert f.capacity_ah == pytest.approx(4.9446, rel=0.002)
    kinds = {}
    for x in f:
        kinds[x.kind] = kinds.get(x.kind, 0) + 1
        assert np.all(np.diff(x.t) > 0) or x.kind == "ocv_table"
        m = re.search(r"(\d+)C[_.]", x.name)
        assert x.ambient_c == float(m.group(1)), x.name
        if x.kind == "ocv_table":
            assert x.soc[0] == 0.0 and x.soc[-1] == 1.0 and len(x.hysteresis_v) == 101
            continue
        assert x.name.split("/")[0] == {"pulse": "pulse", "rate": "rate"}[x.kind]
        assert x.temperature is not None
        assert any("sign flipped" in n for n in x.notes)
        first = next(s for s in x.steps if s.sign)
        assert first.sign == 1 and first.current_a > 0  # both start with a discharge
        if x.kind == "rate":
            want = float(re.search(r"_(\d+(?:p\d+)?)C\.csv", x.name).group(1).replace("p", "."))
            assert x.rate_c == pytest.approx(want, rel=0.03), x.name
    assert kinds == {"pulse": 81, "rate": 12, "ocv_table": 1}
    tr = next(x for x in f if x.name == "rate/25C_1C.csv").as_trace()
    assert set(tr) == {"time_s", "current_a", "voltage_v", "temperature_c", "ambient_c"}
    assert tr["current_a"].max() == pytest.approx(5.0, rel=0.01) and tr["ambient_c"][0] == 25


def test_unsigned_current_without_state_column(tmp_path):
    t, i, v, temp = profile("pulse")
    _write(tmp_path / "u_25C.csv", ["Test Time (sec)", "Current (Amps)", "Voltage"],
           [["%.2f" % a, "%.4f" % abs(b), "%.5f" % c] for a, b, c in zip(t, i, v, strict=True)])
    x = cycler.read_file(tmp_path / "u_25C.csv")
    assert x.kind == "pulse"
    assert np.allclose(x.current, i, atol=1e-3)
    assert any("never changes sign" in n for n in x.notes)
