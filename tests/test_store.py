"""The telemetry stores against real engines: SQLite files and a throwaway PostgreSQL
server (initdb + pg_ctl in a temporary folder, unix socket only)."""
import json
import os

import pytest

from bms_host import UserError, cli, pgcluster, record, store
from bms_host.bench_telemetry import free_port

needs_pg = pytest.mark.skipif(not pgcluster.available(),
                              reason="the PostgreSQL server is not installed (make apt)")


@pytest.fixture(scope="module")
def pg():
    if not pgcluster.available():
        pytest.skip("the PostgreSQL server is not installed (make apt)")
    with pgcluster.Cluster(port=free_port(), settings=pgcluster.THROWAWAY) as c:
        yield c


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "t.sqlite")
    c = request.getfixturevalue("pg")
    return c.create_db("t_%s" % os.urandom(4).hex())


def rows(dev, boot, seqs, **extra):
    out = []
    for s in seqs:
        rec = dict({"device_id": dev, "boot": boot, "seq": s, "t_ms": 1000 * s,
                    "soh": 0.9, "r0_ohm": [0.010, 0.012], "temp_c": [25.0, 31.5],
                    "i_a": -2.0, "faults": ["OT"] if s == 2 else []}, **extra)
        out.append(store.row_of(rec, 1.7e9 + s, json.dumps(rec)))
    return out


def test_idempotent_batches_gaps_and_daily_aggregates(target):
    st = store.open_store(target)
    assert st.insert_many(rows("d1", 5, [0, 1, 2, 5, 6])) == 5
    # a redelivered batch, a record repeated inside one batch, a reboot (seq restarts)
    assert st.insert_many(rows("d1", 5, [1, 2]) + rows("d1", 6, [0, 0, 1])) == 2
    st.commit()
    assert st.count() == 7
    assert sorted(st.keys())[:2] == [("d1", 5, 0), ("d1", 5, 1)]
    lines = record.gap_report(st)
    assert lines[0] == "d1: 7 records, 2 boot(s), 2 missing" and "gaps at 3-4" in lines[1]
    (day,) = [r for r in st.daily() if r[0] == "d1"]
    assert day[3] == 7 and abs(day[4] - 0.9) < 1e-9 and abs(day[6] - 0.011) < 1e-9
    assert day[8] == 31.5 and day[9] == 1
    # |i_a| x dt over consecutive records: boot 5 seq 0-1-2, 2-5 (3 s), 5-6; boot 6 0-1
    assert abs(day[10] - 2.0 * (1 + 1 + 3 + 1 + 1)) < 1e-9
    st.close()


def test_uncommitted_batch_is_not_stored(target):
    st = store.open_store(target)
    st.insert_many(rows("d2", 1, range(10)))
    st.rollback()
    assert st.count() == 0
    st.close()


@needs_pg
def test_postgres_schema_has_the_key_and_time_indexes(pg):
    url = pg.create_db("schema")
    st = store.open_store(url)
    idx = dict(st.query("SELECT indexname, indexdef FROM pg_indexes WHERE tablename='records'"))
    st.close()
    assert "(device_id, boot, seq)" in idx["records_pkey"]
    assert "(device_id, rx_time)" in idx["records_device_time"]


@needs_pg
def test_migrate_sqlite_to_postgres_with_one_command(pg, tmp_path, capsys):
    db = str(tmp_path / "old.sqlite")
    conn = record.open_db(db)
    for dev in ("a", "b"):
        for s in range(1200):
            record.insert(conn, {"device_id": dev, "boot": 3, "seq": s, "t_ms": s * 1000,
                                 "soh": 0.95}, 1.7e9 + s)
    conn.commit()
    conn.close()
    url = pg.create_db("migrated")
    assert cli.main(["db", "migrate", db, url]) == 0
    assert "2400 records read, 2400 new, 2400 in the target" in capsys.readouterr().out
    assert cli.main(["db", "migrate", db, url]) == 0  # again: nothing doubled
    assert "2400 records read, 0 new, 2400 in the target" in capsys.readouterr().out
    st = store.open_store(url)
    src = store.open_store(db)
    assert sorted(st.records()) == sorted(src.records())
    st.close()
    src.close()
    assert cli.main(["db", "info", url]) == 0
    assert "2400 records from 2 device(s)" in capsys.readouterr().out
    # the per-device report reads PostgreSQL as it reads SQLite
    assert cli.main(["report", "--db", url, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "## a" in md and "## b" in md and "| records | 1200 over 20.0 min" in md


@needs_pg
def test_bad_postgres_url_is_one_sentence(pg, capsys):
    url = "postgresql://nobody@/nosuchdb?host=%s&port=%d" % (pg.dir, pg.port)
    rc = cli.main(["db", "info", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot use the PostgreSQL database" in err[0], err


def test_missing_sqlite_source_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        store.migrate(str(tmp_path / "none.sqlite"), str(tmp_path / "new.sqlite"))
    assert not (tmp_path / "new.sqlite").exists()


@needs_pg
def test_record_into_a_missing_postgres_database_is_one_sentence(pg, capsys):
    url = "postgresql://%s@/nosuchdb?host=%s&port=%d" % (pg.user, pg.dir, pg.port)
    rc = cli.main(["record", "--mqtt", "127.0.0.1:%d" % free_port(), "--db", url,
                   "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nosuchdb" in err[0], err


def test_worker_client_ids_are_stable_and_distinct():
    from types import SimpleNamespace as NS

    a = NS(client_id=None, db="postgresql://u@h/bms", share="fleet", worker="1")
    b = NS(client_id=None, db="postgresql://u@h/bms", share="fleet", worker="2")
    assert record.client_id_for(a) == record.client_id_for(NS(**vars(a)))
    assert record.client_id_for(a) != record.client_id_for(b)
    assert record.client_id_for(NS(**dict(vars(a), client_id="mine"))) == "mine"


def test_odd_fields_count_as_missing_in_the_aggregates(target):
    st = store.open_store(target)
    rec = {"device_id": "odd", "boot": 1, "seq": 0, "t_ms": 12.5, "soh": "bad",
           "temp_c": ["x", 40.0, None], "r0_ohm": 0.01, "faults": "OT", "i_a": [1]}
    st.insert_many([store.row_of(rec, 1.7e9, json.dumps(rec))])
    st.commit()
    (day,) = st.daily("odd")
    assert day[4] is None and day[6] is None and day[8] == 40.0 and day[9] == 0
    assert st.query("SELECT t_ms FROM records")[0][0] == 12
    st.close()


def test_parse_refuses_what_an_engine_would(tmp_path):
    ok = {"device_id": "d", "boot": 1, "seq": 2}
    assert record.parse(json.dumps(ok).encode()) == ok
    for bad in (dict(ok, seq=1 << 63), dict(ok, seq=-1), dict(ok, seq=True),
                dict(ok, boot=1.5), dict(ok, device_id="a\x00b"), dict(ok, device_id=""),
                dict(ok, device_id="x" * 200)):
        assert record.parse(json.dumps(bad).encode()) is None, bad
    assert record.parse(b'{"device_id": "d", "seq": 1, "soh": NaN}')["soh"] is None


@needs_pg
def test_migrating_an_old_file_with_nan_into_postgres(pg, tmp_path):
    db = str(tmp_path / "old.sqlite")
    conn = record.open_db(db)
    conn.execute("INSERT INTO records VALUES ('n', 1, 0, 1000.0, 1.7e9, "
                 "'{\"device_id\":\"n\",\"seq\":0,\"soh\":NaN,\"temp_c\":[Infinity, 30]}')")
    conn.commit()
    conn.close()
    url = pg.create_db("nan")
    store.migrate(db, url, echo=lambda m: None)
    st = store.open_store(url)
    (day,) = st.daily()
    assert day[3] == 1 and day[4] is None and day[8] == 30.0
    assert st.query("SELECT t_ms FROM records")[0][0] == 1000
    st.close()


def test_refit_reads_the_same_segments_from_either_engine(target):
    from bms_host import refit_records

    st = store.open_store(target)
    recs = []
    for s in range(1, 121):   # two minutes of 1 s records, a current step at 60 s
        rec = {"device_id": "d1", "boot": 1, "seq": s, "t_ms": 1000 * s,
               "v": [3.70 - (0.02 if s > 60 else 0.0)], "temp_c": [25.0],
               "i_a": 5.0 if s > 60 else 0.0, "soc": [0.5]}
        recs.append(store.row_of(rec, 1.7e9 + s, json.dumps(rec)))
    st.insert_many(recs)
    st.commit()
    st.close()
    segs = refit_records.load_segments(target, "d1")
    assert list(segs) == [0] and len(segs[0]) == 1
    seg = segs[0][0]
    assert len(seg.t) == 120 and seg.i[-1] == 5.0 and abs(seg.v[0] - 3.70) < 1e-9
    with pytest.raises(UserError, match="no records for device 'd2'"):
        refit_records.load_segments(target, "d2")
