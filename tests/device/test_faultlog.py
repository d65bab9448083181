# Fault log ring buffer, atomic persistence and corrupt-file recovery.
import os

import scratch
from bms import faultlog


def _path(name):
    return scratch.path("faultlog_%s.json" % name)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def test_ring_keeps_the_newest_events():
    log = faultlog.FaultLog(capacity=4)
    for k in range(6):
        log.append("E%d" % k, k * 10, k)
    assert len(log) == 4 and log.total == 6
    assert [e[0] for e in log.events()] == ["E2", "E3", "E4", "E5"]
    assert log.last() == ("E5", 1, 50, 5)


def test_save_and_load_round_trip():
    p = _path("roundtrip")
    log = faultlog.FaultLog(p, capacity=8)
    assert len(log) == 0 and log.note is None
    log.append("OV_HARD", 1510, 4.3)
    log.append("CUR_MISSING", 2000, 0)
    log.append("SC", 2500, float("nan"))
    log.save()
    assert not log.dirty and _exists(p) and not _exists(p + ".tmp")
    again = faultlog.FaultLog(p, capacity=8)
    ev = again.events()
    assert log.boot == 1 and again.boot == 2      # a second load is a second boot
    assert ev[0] == ("OV_HARD", 1, 1510, 4.3) and ev[1][0] == "CUR_MISSING"
    assert ev[2][3] != ev[2][3]      # NaN survives as NaN
    assert again.total == 3 and again.note is None
    again.append("UV", 20, 2.9)
    again.save()
    third = faultlog.FaultLog(p, capacity=8)
    assert third.boot == 3 and [e[1] for e in third.events()] == [1, 1, 1, 2]


def test_load_into_smaller_capacity_keeps_newest():
    p = _path("smaller")
    log = faultlog.FaultLog(p, capacity=10)
    for k in range(10):
        log.append("E", k, k)
    log.save()
    small = faultlog.FaultLog(p, capacity=3)
    assert [e[2] for e in small.events()] == [7, 8, 9] and small.total == 10


def test_corrupt_file_starts_empty_with_a_note():
    for k, junk in enumerate((b'{"events": [["OV", 1', b"\xff\xfe\x00garbage",
                              b'{"events": 5}', b'{"events": [[1, 2, 3]]}', b"[1, 2]")):
        p = _path("corrupt%d" % k)
        with open(p, "wb") as f:
            f.write(junk)
        log = faultlog.FaultLog(p)
        assert len(log) == 0, junk
        assert log.note.startswith("fault log ") and "started an empty log" in log.note
        log.append("UV", 5, 2.9)
        log.save()                     # and the next save repairs the file
        assert faultlog.FaultLog(p).events() == [("UV", 1, 5, 2.9)]


def test_version_1_file_loads_as_boot_0():
    p = _path("v1")
    with open(p, "w") as f:
        f.write('{"version": 1, "total": 2, "events": [["OV", 100, 4.3], ["RESET", 900, 1]]}')
    log = faultlog.FaultLog(p)
    assert log.note is None and log.boot == 1
    assert log.events() == [("OV", 0, 100, 4.3), ("RESET", 0, 900, 1.0)]


def test_save_without_path_is_a_clear_error():
    try:
        faultlog.FaultLog().save()
        msg = ""
    except ValueError as e:
        msg = str(e)
    assert "no file path" in msg
