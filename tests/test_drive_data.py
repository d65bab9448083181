"""The drive cycles (bms-host synth --profiles urban,aggressive,highway): the profiles as
data, and the committed traces in data/<cell>_drive that bms-host bench accuracy reads."""
import csv
import hashlib
import json
from pathlib import Path

import pytest

from bms_host import synth_profiles as sp

DATA = Path(__file__).resolve().parents[1] / "data"
DRIVE_DIRS = [c for c in ("lgm50", "lfp") if (DATA / (c + "_drive") / "manifest.json").exists()]


def _segs(prof):
    return [s for b in prof["blocks"] for s in b["segs"]]


@pytest.mark.parametrize("kind", sp.DRIVE_NAMES)
def test_drive_profiles_are_seeded_whole_seconds_and_validation(kind):
    a, b = sp.drive_cycle(5.0, kind), sp.drive_cycle(5.0, kind)
    assert a == b                                   # seeded: the same every time
    assert a["name"] == kind
    assert a["init_soc"] == (sp.MID_SOC if kind in sp.DRIVE_MID else 1.0)
    assert a["role"] == "validation" and a["dt"] == 1.0
    segs = _segs(a)
    assert all(isinstance(d, int) and d >= 1 for d, _ in segs)
    assert all(blk["on_max"] == "mute" and blk["on_min"] == "stop" for blk in a["blocks"])
    # long enough to empty the cell at its mean current
    total = sum(d for d, _ in segs)
    assert sum(d * v for d, v in segs) / 3600.0 > 1.2 * 5.0, kind
    assert total >= 8 * 3600


def test_drive_kinds_have_their_characters():
    c = 5.0
    prof = {k: _segs(sp.drive_cycle(c, k)) for k in sp.DRIVE_NAMES}

    def stops_per_hour(segs):
        total = sum(d for d, _ in segs)
        return sum(1 for _, v in segs if v == 0.0) / (total / 3600.0)

    def peak(segs, sign):
        return max(sign * v for _, v in segs) / c

    def mean_c(segs):
        return sum(d * v for d, v in segs) / sum(d for d, _ in segs) / c

    # urban: a stop every minute or two, moderate peaks
    assert stops_per_hour(prof["urban"]) > 30
    assert peak(prof["urban"], 1) <= 1.5 and mean_c(prof["urban"]) < 0.3
    # aggressive: pull-aways up to ~3C, regen above 1C
    assert 2.8 <= peak(prof["aggressive"], 1) <= 3.0
    assert peak(prof["aggressive"], -1) > 1.0
    assert mean_c(prof["aggressive"]) > 1.5 * mean_c(prof["urban"])
    # highway: few stops, long cruises
    assert stops_per_hour(prof["highway"]) < 5
    assert max(d for d, v in prof["highway"] if v > 0) >= 60


@pytest.mark.parametrize("cell", DRIVE_DIRS)
def test_committed_drive_traces(cell):
    folder = DATA / (cell + "_drive")
    man = json.loads((folder / "manifest.json").read_text())
    files = {f["file"]: f for f in man["files"]}
    kinds = tuple(sp.DRIVE_KINDS) + (tuple(sp.DRIVE_MID) if cell == "lfp" else ())
    want = {"%s_%dC.csv" % (k, a) for k in kinds for a in sp.DRIVE_AMBIENTS}
    assert set(files) == want
    assert {p.name for p in folder.glob("*.csv")} == want
    total = 0
    h = hashlib.sha256()
    vmin = man["voltage_limits_v"][0]
    for name in sorted(files):
        f = files[name]
        data = (folder / name).read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == f["sha256"], name
        h.update(name.encode() + b"\0" + f["sha256"].encode() + b"\n")
        assert f["role"] == "validation"
        assert f["end_reason"].startswith("lower cut-off"), (name, f["end_reason"])
        rows = list(csv.reader(data.decode().splitlines()))
        soc0, soc1 = float(rows[1][6]), float(rows[-1][6])
        start = sp.MID_SOC if f["profile"] in sp.DRIVE_MID else 1.0
        assert abs(soc0 - start) < 0.05 and soc1 < 0.2, (name, soc0, soc1)   # to (near) empty
        assert min(float(r[2]) for r in rows[1:]) >= vmin - 0.002
    assert h.hexdigest() == man["dataset_sha256"]
    assert total < 8e6, "%s_drive is %.1f MB" % (cell, total / 1e6)
