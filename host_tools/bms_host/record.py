"""bms-host record: store device telemetry (serial console or MQTT) in SQLite.

Each record is stored once per (device_id, boot, seq): `boot` is a random id a device draws
at power-up, because its sequence number restarts at every boot, so a key of (device_id,
seq) alone would throw away a rebooted device's records. Inserts are INSERT OR IGNORE, so
QoS 1 redeliveries and re-reading a console are harmless. MQTT messages are acknowledged
to the broker only after the row is committed, with a persistent session: with a broker
that keeps state (mosquitto `persistence true`) nothing is lost across a recorder or broker
restart."""
import hashlib
import json
import os
import queue
import signal
import sqlite3
import sys
import time

from . import UserError

HELP = "record telemetry from a serial port or an MQTT broker into SQLite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    device_id TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t_ms INTEGER,
    rx_time REAL,
    json TEXT NOT NULL,
    PRIMARY KEY (device_id, boot, seq)
);
"""


def configure(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of a device (e.g. /dev/ttyACM0 or /dev/pts/N)")
    src.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker to subscribe to")
    p.add_argument("--db", required=True, help="SQLite file (created when missing)")
    p.add_argument("--user", help="MQTT username")
    p.add_argument("--password", help="MQTT password (or set BMS_MQTT_PASSWORD)")
    p.add_argument("--tls", action="store_true", help="connect to the broker with TLS")
    p.add_argument("--cafile", help="CA certificate for --tls (default: the system's)")
    p.add_argument("--topic-prefix", default="bms", help="topic prefix (default bms)")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate")
    p.add_argument("--duration", type=float, help="stop after this many seconds")


# ---- the database

def open_db(path):
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError("cannot create the database %s: folder %s does not exist"
                        % (path, folder))
    try:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.commit()
    except sqlite3.Error as e:
        raise UserError("cannot write the database %s (%s): choose a writable file"
                        % (path, e)) from None
    return conn


def insert(conn, rec, rx_time=None):
    """Store one record; True when it was new."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO records (device_id, boot, seq, t_ms, rx_time, json) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (str(rec["device_id"]), int(rec.get("boot", 0)), int(rec["seq"]),
         rec.get("t_ms"), rx_time if rx_time is not None else time.time(),
         json.dumps(rec, separators=(",", ":"))))
    return cur.rowcount == 1


def parse(payload):
    """A record dict from an MQTT payload, or None."""
    try:
        rec = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("seq"), int) \
            or not isinstance(rec.get("device_id"), str):
        return None
    return rec


def gaps(conn):
    """Per device and boot: (device_id, boot, count, first_seq, last_seq, missing ranges)."""
    out = []
    rows = conn.execute("SELECT device_id, boot, COUNT(*), MIN(seq), MAX(seq), MIN(rx_time) "
                        "FROM records GROUP BY device_id, boot ORDER BY device_id, 6").fetchall()
    for dev, boot, n, lo, hi, _ in rows:
        missing = []
        if hi - lo + 1 != n:
            prev = None
            for (s,) in conn.execute("SELECT seq FROM records WHERE device_id=? AND boot=? "
                                     "ORDER BY seq", (dev, boot)):
                if prev is not None and s > prev + 1:
                    missing.append((prev + 1, s - 1))
                prev = s
        out.append((dev, boot, n, lo, hi, missing))
    return out


def gap_report(conn):
    lines = []
    per_dev = {}
    for dev, boot, n, lo, hi, missing in gaps(conn):
        per_dev.setdefault(dev, []).append((boot, n, lo, hi, missing))
    for dev, boots in per_dev.items():
        total = sum(b[1] for b in boots)
        lost = sum(e - s + 1 for b in boots for s, e in b[4])
        lines.append("%s: %d records, %d boot(s), %d missing" % (dev, total, len(boots), lost))
        for boot, _n, lo, hi, missing in boots:
            if missing:
                shown = ", ".join("%d-%d" % r if r[0] != r[1] else "%d" % r[0]
                                  for r in missing[:8])
                more = " ..." if len(missing) > 8 else ""
                lines.append("  boot %d: seq %d..%d, gaps at %s%s" % (boot, lo, hi, shown, more))
    return lines


# ---- sources

class MqttSource:
    """paho-mqtt subscriber; messages are queued for the main thread, acknowledged after
    the database commit (manual ack), and paho reconnects on its own after a broker
    restart."""

    def __init__(self, host, port, user=None, password=None, tls=False, cafile=None,
                 prefix="bms", client_id=None):
        import paho.mqtt.client as mqtt

        self.q = queue.Queue()
        self.error = None
        self.connected = False
        self.connects = 0
        self.topic = "%s/+/telemetry" % prefix
        self.host, self.port = host, port
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False)
        self.c.manual_ack_set(True)
        self.c.reconnect_delay_set(min_delay=1, max_delay=4)
        if user:
            self.c.username_pw_set(user, password)
        if tls:
            self.c.tls_set(ca_certs=cafile)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, props):
        if reason.is_failure:
            self.error = "the broker at %s:%d refused the connection (%s)" % (
                self.host, self.port, reason)
            return
        self.connected = True
        self.connects += 1
        client.subscribe(self.topic, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason, props):
        self.connected = False

    def _on_message(self, client, userdata, msg):
        self.q.put((msg.payload, time.time(), msg.mid, msg.qos))

    def start(self, timeout=5.0):
        try:
            self.c.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise UserError("cannot reach the MQTT broker at %s:%d (%s): is it running and is "
                            "the address right?" % (self.host, self.port,
                                                    getattr(e, "strerror", None) or e)) from None
        self.c.loop_start()
        deadline = time.time() + timeout
        while not self.connected and self.error is None and time.time() < deadline:
            time.sleep(0.02)
        if self.error:
            self.stop()
            raise UserError(self.error + ": check --user/--password")
        if not self.connected:
            self.stop()
            raise UserError("the MQTT broker at %s:%d did not answer within %g s"
                            % (self.host, self.port, timeout))

    def get(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def ack(self, item):
        if item[3] > 0:
            self.c.ack(item[2], item[3])

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


class SerialSource:
    """Lines from a device's console; reopens the port when the device goes away."""

    def __init__(self, port, baud=115200):
        self.port, self.baud = port, baud
        self.s = None
        self.buf = b""
        self._open(first=True)

    def _open(self, first=False):
        import serial

        try:
            self.s = serial.Serial(self.port, self.baud, timeout=0.1)
        except (serial.SerialException, OSError) as e:
            if first:
                raise UserError("cannot open serial port %s (%s): check the port name "
                                "(bms-host sim prints it) and that nothing else holds it"
                                % (self.port, e)) from None
            self.s = None

    def get(self, timeout):
        import serial

        if self.s is None:
            time.sleep(min(timeout, 1.0))
            self._open()
            return None
        try:
            chunk = self.s.read(4096)
        except (serial.SerialException, OSError):
            self.s.close()
            self.s = None
            return None
        self.buf += chunk
        if b"\n" not in self.buf:
            if len(self.buf) > 1 << 16:  # chatter without newlines
                self.buf = b""
            return None
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode("utf-8", "replace").strip("\r")
        i = text.find("TEL ")
        if i < 0:
            return None
        return (text[i + 4:].encode(), time.time(), None, 0)

    def ack(self, item):
        pass

    def stop(self):
        if self.s is not None:
            self.s.close()


def host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError("--mqtt must be HOST:PORT, e.g. localhost:1883, got %r" % text)
    return host, int(port)


class Recorder:
    """Pull from a source, store, commit in small batches, then acknowledge."""

    def __init__(self, conn, source):
        self.conn, self.source = conn, source
        self.new = 0
        self.repeats = 0
        self.bad = 0
        self.stop_flag = False

    def run(self, duration=None):
        end = time.time() + duration if duration else None
        pending = []
        while not self.stop_flag and (end is None or time.time() < end):
            item = self.source.get(0.05)
            if item is not None:
                rec = parse(item[0])
                if rec is None:
                    self.bad += 1
                elif insert(self.conn, rec, item[1]):
                    self.new += 1
                else:
                    self.repeats += 1
                pending.append(item)
            if pending and (item is None or len(pending) >= 200):
                self.flush(pending)
                pending = []
        self.flush(pending)

    def flush(self, pending):
        self.conn.commit()
        for item in pending:
            self.source.ack(item)


def run(args):
    conn = open_db(args.db)
    if args.mqtt:
        host, port = host_port(args.mqtt)
        password = args.password or os.environ.get("BMS_MQTT_PASSWORD")
        cid = "bms-record-" + hashlib.sha256(os.path.abspath(args.db).encode()).hexdigest()[:10]
        source = MqttSource(host, port, args.user, password, args.tls, args.cafile,
                            args.topic_prefix, cid)
        source.start()
        where = "mqtt://%s:%d/%s" % (host, port, source.topic)
    else:
        source = SerialSource(args.port, args.baud)
        where = args.port
    rec = Recorder(conn, source)

    def _stop(signum, frame):
        rec.stop_flag = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print("recording %s into %s (Ctrl-C to stop)" % (where, args.db), file=sys.stderr, flush=True)
    try:
        rec.run(args.duration)
    finally:
        source.stop()
        conn.commit()
    print("stored %d new records (%d repeats ignored, %d unreadable)"
          % (rec.new, rec.repeats, rec.bad))
    for line in gap_report(conn):
        print(line)
    conn.close()
    return 0
