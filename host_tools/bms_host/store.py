"""Telemetry stores: one interface, two engines.

`open_store(target)` gives a SQLite store for a file path (the default: one maker, a few
packs) or a PostgreSQL store for a `postgresql://` URL (a fleet: several recorder workers
writing at once, on a server people already operate). Both hold the same table

    records(device_id, boot, seq, t_ms, rx_time, json)  PRIMARY KEY (device_id, boot, seq)

and both insert idempotently (a QoS 1 redelivery or a second worker's copy of a record is
ignored), in batches: SQLite with executemany of INSERT OR IGNORE, PostgreSQL with COPY
into a per-session staging table followed by INSERT ... SELECT ... ON CONFLICT DO NOTHING.
A batch becomes visible only at commit(); the recorder acknowledges MQTT after that.

The fleet queries (gaps, daily aggregates per device) are SQL run by the engine; only the
JSON accessors differ between the two dialects."""
import json
import math
import os
import sqlite3

from . import UserError

COLUMNS = ("device_id", "boot", "seq", "t_ms", "rx_time", "json")

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t_ms INTEGER,
    rx_time REAL,
    json TEXT NOT NULL,
    PRIMARY KEY (device_id, boot, seq)
);
CREATE INDEX IF NOT EXISTS records_device_time ON records (device_id, rx_time);
"""

# the same table; boot is a 30-bit random id and seq/t_ms can outgrow 32 bits: BIGINT
PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    device_id TEXT NOT NULL,
    boot BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    t_ms BIGINT,
    rx_time DOUBLE PRECISION,
    json TEXT NOT NULL,
    PRIMARY KEY (device_id, boot, seq)
);
CREATE INDEX IF NOT EXISTS records_device_time ON records (device_id, rx_time);
CREATE INDEX IF NOT EXISTS records_time ON records (rx_time);
"""

# runs of consecutive sequence numbers that are missing, per device and boot
GAPS_SQL = """
SELECT device_id, boot, prev + 1, seq - 1 FROM (
    SELECT device_id, boot, seq,
           LAG(seq) OVER (PARTITION BY device_id, boot ORDER BY seq) AS prev
    FROM records) AS s
WHERE seq > prev + 1 ORDER BY device_id, boot, prev
"""

BOOTS_SQL = ("SELECT device_id, boot, COUNT(*), MIN(seq), MAX(seq), MIN(rx_time) "
             "FROM records GROUP BY device_id, boot ORDER BY device_id, 6")


def is_url(target):
    return str(target).startswith(("postgresql://", "postgres://"))


def open_store(target, create=True):
    """The store for a SQLite path or a postgresql:// URL."""
    if is_url(target):
        return PgStore(str(target), create=create)
    return SqliteStore(str(target), create=create)


def display(target):
    """The target without a password, for messages."""
    target = str(target)
    if not is_url(target):
        return target
    scheme, _, rest = target.partition("://")
    cred, at, host = rest.rpartition("@")
    if at and ":" in cred:
        cred = cred.split(":", 1)[0] + ":***"
    return "%s://%s%s%s" % (scheme, cred, at, host)


def row_of(rec, rx_time, text):
    t = rec.get("t_ms")
    # the device's clock: an integer count of ms; anything else is not kept in the column
    t = int(t) if isinstance(t, (int, float)) and not isinstance(t, bool) \
        and math.isfinite(t) and abs(t) < 1 << 62 else None
    return (str(rec["device_id"]), int(rec.get("boot", 0)), int(rec["seq"]), t, rx_time,
            text)


def clean_row(row):
    """A stored row as every engine takes it: an integer t_ms, JSON without NaN/Infinity
    (which PostgreSQL's jsonb refuses; older files may hold them)."""
    dev, boot, seq, t, rx, text = row
    if "NaN" in text or "Infinity" in text:
        try:
            text = json.dumps(json.loads(text, parse_constant=lambda name: None),
                              separators=(",", ":"))
        except ValueError:
            pass
    t = int(t) if isinstance(t, (int, float)) and math.isfinite(t) and abs(t) < 1 << 62 \
        else None
    return (dev, int(boot), int(seq), t, rx, text)


class Store:
    """What the recorder, the report and the fleet queries need from an engine."""

    kind = None

    def insert_many(self, rows):
        """Stage rows (tuples in COLUMNS order); returns how many were new. Visible after
        commit()."""
        raise NotImplementedError

    def commit(self):
        self.conn.commit()

    def rollback(self):
        self.conn.rollback()

    def close(self):
        self.conn.close()

    def query(self, sql, params=()):
        cur = self.conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall()

    def count(self):
        return self.query("SELECT COUNT(*) FROM records")[0][0]

    def keys(self):
        return self.query("SELECT device_id, boot, seq FROM records")

    def devices(self):
        return [r[0] for r in self.query("SELECT DISTINCT device_id FROM records "
                                         "ORDER BY device_id")]

    def records(self, device_id=None, since=None):
        """(device_id, boot, seq, rx_time, json text) ordered by device and arrival."""
        where, params = [], []
        if device_id is not None:
            where.append("device_id = %s" % self.ph)
            params.append(device_id)
        if since is not None:
            where.append("rx_time >= %s" % self.ph)
            params.append(since)
        sql = ("SELECT device_id, boot, seq, rx_time, json FROM records%s "
               "ORDER BY device_id, rx_time" % (" WHERE " + " AND ".join(where) if where else ""))
        return self.query(sql, params)

    def iter_rows(self, chunk=5000):
        """Every row in COLUMNS order, in chunks (for migration)."""
        cur = self.conn.cursor()
        cur.execute("SELECT device_id, boot, seq, t_ms, rx_time, json FROM records "
                    "ORDER BY device_id, boot, seq")
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            yield rows

    def gaps(self):
        """Per device and boot: (device_id, boot, count, first_seq, last_seq, missing ranges)."""
        missing = {}
        for dev, boot, lo, hi in self.query(GAPS_SQL):
            missing.setdefault((dev, boot), []).append((int(lo), int(hi)))
        return [(dev, boot, n, lo, hi, missing.get((dev, boot), []))
                for dev, boot, n, lo, hi, _ in self.query(BOOTS_SQL)]

    # ---- fleet aggregation: one row per device and day

    def daily(self, device_id=None):
        """(device_id, day, first_rx, records, soh, soh_sigma, r0_ohm, capacity_ah, temp_max,
        fault_records, amp_seconds) per device and UTC day; amp_seconds integrates |i_a|
        over consecutive records of a boot that are at most 60 s apart (the charge moved,
        for equivalent full cycles)."""
        j = self.jnum
        where = "WHERE device_id = %s" % self.ph if device_id is not None else ""
        sql = """
        SELECT device_id, day, MIN(rx_time), COUNT(*), AVG(soh), AVG(soh_sigma), AVG(r0),
               AVG(cap), MAX(tmax), SUM(CASE WHEN nfault > 0 THEN 1 ELSE 0 END),
               SUM(CASE WHEN dt > 0 AND dt <= 60 THEN ABS(i_a) * dt ELSE 0 END)
        FROM (
            SELECT device_id, rx_time, {day} AS day, {soh} AS soh, {soh_sigma} AS soh_sigma,
                   {r0} AS r0, {cap} AS cap, {tmax} AS tmax, {nfault} AS nfault,
                   {i_a} AS i_a,
                   (t_ms - LAG(t_ms) OVER (PARTITION BY device_id, boot ORDER BY seq))
                       / 1000.0 AS dt
            FROM records {where}) AS r
        GROUP BY device_id, day ORDER BY device_id, day
        """.format(day=self.day_expr, soh=j("soh"), soh_sigma=j("soh_sigma"),
                   r0=self.jarr_avg("r0_ohm"), cap=self.jarr_avg("capacity_ah"),
                   tmax=self.jarr_max("temp_c"), nfault=self.jlen("faults"), i_a=j("i_a"),
                   where=where)
        return self.query(sql, [device_id] if device_id is not None else [])


class SqliteStore(Store):
    kind = "sqlite"
    ph = "?"
    day_expr = "CAST(rx_time / 86400 AS INTEGER)"

    def __init__(self, path, create=True, conn=None):
        self.target = path
        if conn is not None:  # wrap an open connection
            self.conn = conn
            return
        if not create and not os.path.isfile(path):
            raise UserError("telemetry database %s does not exist: record one with "
                            "bms-host record" % path)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UserError("cannot create the database %s: folder %s does not exist"
                            % (path, folder))
        try:
            if create:
                self.conn = sqlite3.connect(path)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.executescript(SQLITE_SCHEMA)
                self.conn.commit()
            else:
                self.conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
                self.conn.execute("SELECT COUNT(*) FROM records").fetchone()
        except sqlite3.Error as e:
            raise UserError("cannot use %s as a telemetry database (%s): choose a writable "
                            "SQLite file" % (path, e)) from None

    def insert_many(self, rows):
        before = self.conn.total_changes
        self.conn.executemany("INSERT OR IGNORE INTO records (device_id, boot, seq, t_ms, "
                              "rx_time, json) VALUES (?, ?, ?, ?, ?, ?)", rows)
        return self.conn.total_changes - before

    # numbers only: a field of another type counts as missing
    @staticmethod
    def jnum(key):
        return ("CASE WHEN json_type(json, '$.{0}') IN ('real', 'integer') "
                "THEN json_extract(json, '$.{0}') END".format(key))

    @staticmethod
    def jarr_avg(key):
        return ("(SELECT {0}(value) FROM json_each(records.json, '$.{1}') "
                "WHERE type IN ('real', 'integer') "
                "AND json_type(records.json, '$.{1}') = 'array')".format("AVG", key))

    @staticmethod
    def jarr_max(key):
        return ("(SELECT {0}(value) FROM json_each(records.json, '$.{1}') "
                "WHERE type IN ('real', 'integer') "
                "AND json_type(records.json, '$.{1}') = 'array')".format("MAX", key))

    @staticmethod
    def jlen(key):
        return "COALESCE(json_array_length(json, '$.%s'), 0)" % key


class PgStore(Store):
    kind = "postgresql"
    ph = "%s"
    day_expr = "FLOOR(rx_time / 86400)::bigint"

    def __init__(self, url, create=True):
        try:
            import psycopg
        except ImportError:
            raise UserError("PostgreSQL needs the psycopg package: pip install -e . "
                            "(it is one of bms-host's dependencies)") from None
        self.psycopg = psycopg
        self.target = url
        try:
            self.conn = psycopg.connect(url, connect_timeout=10)
            if create:
                with self.conn.cursor() as cur:
                    # several workers may start at once: one creates, the others wait
                    cur.execute("SELECT pg_advisory_xact_lock(7264001)")
                    cur.execute(PG_SCHEMA)
                self.conn.commit()
            with self.conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM records WHERE false")
            self.conn.commit()
        except psycopg.Error as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError("cannot use the PostgreSQL database %s (%s): is the server running "
                            "and the URL right?" % (display(url), msg)) from None
        self.staging = False

    def insert_many(self, rows):
        if not rows:
            return 0
        with self.conn.cursor() as cur:
            if not self.staging:
                # per session, emptied by every commit
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS records_in "
                            "(LIKE records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                self.staging = True
            else:
                cur.execute("DELETE FROM records_in")
            with cur.copy("COPY records_in (device_id, boot, seq, t_ms, rx_time, json) "
                          "FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            cur.execute("INSERT INTO records SELECT * FROM records_in "
                        "ON CONFLICT DO NOTHING")
            return cur.rowcount

    def rollback(self):
        self.conn.rollback()
        self.staging = False  # created in the transaction just rolled back, perhaps

    # numbers only: a field of another type counts as missing
    @staticmethod
    def jnum(key):
        return ("CASE WHEN jsonb_typeof(json::jsonb -> '{0}') = 'number' "
                "THEN (json::jsonb ->> '{0}')::float8 END".format(key))

    @staticmethod
    def _jarr(fn, key):
        return ("(SELECT {0}((x #>> '{{}}')::float8) FROM jsonb_array_elements("
                "CASE WHEN jsonb_typeof(json::jsonb -> '{1}') = 'array' "
                "THEN json::jsonb -> '{1}' ELSE '[]'::jsonb END) AS x "
                "WHERE jsonb_typeof(x) = 'number')".format(fn, key))

    @classmethod
    def jarr_avg(cls, key):
        return cls._jarr("AVG", key)

    @classmethod
    def jarr_max(cls, key):
        return cls._jarr("MAX", key)

    @staticmethod
    def jlen(key):
        return ("CASE WHEN jsonb_typeof(json::jsonb -> '%s') = 'array' "
                "THEN jsonb_array_length(json::jsonb -> '%s') ELSE 0 END" % (key, key))


def migrate(src, dst, echo=print, chunk=5000):
    """Copy every record of the store at src into the store at dst, in one transaction
    (all or nothing; records already there are kept, so it can be run again). Returns
    (read, new)."""
    if is_url(src):
        a = PgStore(src, create=False)
    else:
        a = SqliteStore(src, create=False)
    try:
        b = open_store(dst)
    except UserError:
        a.close()
        raise
    read = new = 0
    try:
        for rows in a.iter_rows(chunk):
            new += b.insert_many([clean_row(r) for r in rows])
            read += len(rows)
        b.commit()
    except BaseException:
        b.rollback()
        raise
    finally:
        a.close()
    total = b.count()
    b.close()
    echo("migrated %s -> %s: %d records read, %d new, %d in the target"
         % (display(src), display(dst), read, new, total))
    return read, new
