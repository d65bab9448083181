"""bms-host record: store device telemetry (serial console or MQTT) in SQLite or PostgreSQL.

Each record is stored once per (device_id, boot, seq): `boot` is a random id a device draws
at power-up, because its sequence number restarts at every boot, so a key of (device_id,
seq) alone would throw away a rebooted device's records. Inserts ignore a key already
stored, so QoS 1 redeliveries, a second worker's copy and re-reading a console are
harmless. Records are written in batches and MQTT messages are acknowledged to the broker
only after their batch is committed, with a persistent MQTT 5 session: with a broker that
keeps state (mosquitto `persistence true`) nothing is lost across a recorder or broker
restart. Several recorders can share one stream through a shared subscription
(`--share GROUP`): the broker hands each message to one of them, and the messages of a
worker that was killed wait in its session until it comes back with the same client id.
The engines are in store.py."""
import hashlib
import json
import os
import queue
import signal
import socket
import sys
import time

from . import UserError
from .store import SqliteStore, display, open_store, row_of

HELP = "record telemetry from a serial port or an MQTT broker into SQLite or PostgreSQL"

# how long a broker keeps a recorder's session (its subscription and queued messages)
# while the recorder is away
SESSION_EXPIRY_S = 7 * 24 * 3600


def configure(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of a device (e.g. /dev/ttyACM0 or /dev/pts/N)")
    src.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker to subscribe to")
    p.add_argument("--db", required=True,
                   help="SQLite file (created when missing) or postgresql://user@host/dbname")
    p.add_argument("--user", help="MQTT username")
    p.add_argument("--password", help="MQTT password (or set BMS_MQTT_PASSWORD)")
    p.add_argument("--tls", action="store_true", help="connect to the broker with TLS")
    p.add_argument("--cafile", help="CA certificate for --tls (default: the system's)")
    p.add_argument("--topic-prefix", default="bms", help="topic prefix (default bms)")
    p.add_argument("--share", metavar="GROUP",
                   help="join the MQTT 5 shared subscription $share/GROUP/...: recorders "
                        "with the same GROUP split the stream between them")
    p.add_argument("--worker", default="0",
                   help="this recorder's name within --share (default 0); keep it the same "
                        "across restarts so its session and queued messages are resumed")
    p.add_argument("--client-id", help="MQTT client id (default: derived from --db, "
                                       "--share and --worker)")
    p.add_argument("--no-standby", action="store_true",
                   help="with --share: no standby session (for a broker that keeps shared "
                        "subscriptions across its restarts)")
    p.add_argument("--batch", type=int, default=500,
                   help="records per database transaction at most (default 500)")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate")
    p.add_argument("--duration", type=float, help="stop after this many seconds")


# ---- the database (SQLite connection helpers kept for scripts and tests)

def open_db(path):
    return SqliteStore(str(path)).conn


def insert(conn, rec, rx_time=None):
    """Store one record in a SQLite connection; True when it was new."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO records (device_id, boot, seq, t_ms, rx_time, json) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        row_of(rec, rx_time if rx_time is not None else time.time(),
               json.dumps(rec, separators=(",", ":"))))
    return cur.rowcount == 1


BIG = 1 << 63  # BIGINT


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < BIG


def parse(payload):
    """A record dict from an MQTT payload, or None. Anything an engine could refuse is
    refused here (one bad message must not stall a batch): NaN/Infinity become null, the
    key fields must be in range and the device id printable text."""
    try:
        rec = json.loads(payload, parse_constant=lambda name: None)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(rec, dict) or not _count(rec.get("seq")) \
            or not _count(rec.get("boot", 0)):
        return None
    dev = rec.get("device_id")
    if not isinstance(dev, str) or not 0 < len(dev) <= 128 or not dev.isprintable():
        return None
    return rec


def _store(conn):
    return conn if hasattr(conn, "gaps") else SqliteStore(None, conn=conn)


def gaps(conn):
    """Per device and boot: (device_id, boot, count, first_seq, last_seq, missing ranges)."""
    return _store(conn).gaps()


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
    """paho-mqtt subscriber (MQTT 5, persistent session); messages are queued for the main
    thread, acknowledged after the database commit (manual ack), and paho reconnects on
    its own after a broker restart.

    With a shared subscription it also keeps a standby session: mosquitto (2.0) keeps a
    session's plain subscriptions across its own restart but not its shared ones, so the
    records published between the broker coming back and the workers subscribing again
    would reach no recorder. The standby session holds a plain subscription to the whole
    stream; its messages are acknowledged at once without being stored, except while it
    guards: from each of its (re)connects until it has caught up with the shared stream,
    i.e. it has been handed CAUGHT_UP messages that the shared subscription delivered
    fresh after it was acknowledged again (the broker delivers a session's messages in
    order, so everything published before them is in hand) and GUARD_S seconds have
    passed. What it stores twice the database ignores."""

    GUARD_S = 2.0
    GUARD_MAX_S = 600.0
    CAUGHT_UP = 20

    def __init__(self, host, port, user=None, password=None, tls=False, cafile=None,
                 prefix="bms", client_id=None, share=None, standby=True):
        self.q = queue.Queue()
        self.error = None
        self.connected = False
        self.connects = 0
        self.topic = "%s/+/telemetry" % prefix
        plain = self.topic
        if share:
            self.topic = "$share/%s/%s" % (share, self.topic)
        self.host, self.port = host, port
        self.sub_acked = None  # when the broker last acknowledged our subscription
        self.c = self._client(client_id, user, password, tls, cafile)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.sb = None
        self.guard_from = None
        self.guarded = 0
        self.fresh = set()  # hashes of payloads the shared subscription delivered, guarding
        self.caught = 0
        self.guard_open = False
        if share and standby:
            self.sb_topic = plain
            self.sb = self._client((client_id or "bms-record") + "-standby", user, password,
                                   tls, cafile)
            self.sb.on_connect = self._sb_on_connect
            self.sb.on_message = self._sb_on_message

    def _client(self, client_id, user, password, tls, cafile):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv5)
        c._bms_props = Properties(PacketTypes.CONNECT)
        c._bms_props.SessionExpiryInterval = SESSION_EXPIRY_S
        # messages in flight to us before PUBACK: a whole batch (mosquitto also caps it
        # with max_inflight_messages)
        c._bms_props.ReceiveMaximum = 5000
        c.manual_ack_set(True)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        if user:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set(ca_certs=cafile)
        return c

    def _on_connect(self, client, userdata, flags, reason, props):
        if reason.is_failure:
            self.error = "the broker at %s:%d refused the connection (%s)" % (
                self.host, self.port, reason)
            return
        self.connected = True
        self.connects += 1
        self.sub_acked = None
        self.fresh = set()
        self.caught = 0
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        if reasons and not reasons[0].is_failure:
            self.sub_acked = time.time()

    def _on_disconnect(self, client, userdata, flags, reason, props):
        self.connected = False

    def _on_message(self, client, userdata, msg):
        if self.guard_open and self.sub_acked is not None and not msg.dup:
            self.fresh.add(hash(msg.payload))
        self.q.put((msg.payload, time.time(), msg.mid, msg.qos, client))

    def _sb_on_connect(self, client, userdata, flags, reason, props):
        if not reason.is_failure:
            self.guard_from = time.time()
            self.caught = 0
            self.guard_open = True
            client.subscribe(self.sb_topic, qos=1)

    def guarding(self):
        if self.guard_from is None:
            return True
        acked = self.sub_acked
        if acked is None:
            return True
        since = time.time() - max(acked, self.guard_from)
        if since > self.GUARD_MAX_S:
            return False
        return self.caught < self.CAUGHT_UP or since < self.GUARD_S

    def _sb_on_message(self, client, userdata, msg):
        if self.guard_open and self.guarding():
            if hash(msg.payload) in self.fresh:
                self.caught += 1
            self.guarded += 1
            self.q.put((msg.payload, time.time(), msg.mid, msg.qos, client))
            return
        if self.guard_open:
            self.guard_open = False
            self.fresh = set()
            print("standby session caught up: %d records taken from it"
                  % self.guarded, file=sys.stderr, flush=True)
        if msg.qos:
            client.ack(msg.mid, msg.qos)

    def _connect(self, c):
        c.connect(self.host, self.port, keepalive=30, clean_start=False,
                  properties=c._bms_props)
        c.loop_start()

    def start(self, timeout=5.0):
        try:
            if self.sb is not None:
                self._connect(self.sb)
            self._connect(self.c)
        except (OSError, ValueError) as e:
            if self.sb is not None:
                self.sb.loop_stop()
            raise UserError("cannot reach the MQTT broker at %s:%d (%s): is it running and is "
                            "the address right?" % (self.host, self.port,
                                                    getattr(e, "strerror", None) or e)) from None
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
            if timeout <= 0:
                return self.q.get_nowait()
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def ack(self, item):
        if item[3] > 0:
            item[4].ack(item[2], item[3])

    def stop(self):
        for c in (self.c, self.sb):
            if c is not None:
                c.disconnect()
                c.loop_stop()


class SerialSource:
    """Records from a device's console. The port is shared (bms_host.serialshare): records
    are lifted out of the byte stream and the rest goes to a pseudo-terminal, through which
    `bms-host exec|push --port <the same port>` and mpremote reach the REPL meanwhile.
    Reopens the port when the device goes away (`gone` says it has)."""

    def __init__(self, port, baud=115200, share=True, log=None):
        from collections import deque

        from . import serialshare

        self.port, self.baud = port, baud
        self.s = None
        self.gone = False
        self.q = deque()
        self.split = serialshare.TelSplitter()
        self._open(first=True)
        self.share = serialshare.SharedConsole(port) if share else None
        if self.share is not None and log is not False:
            print("sharing %s: `bms-host exec --port %s ...` works meanwhile (mpremote: "
                  "connect %s)" % (port, port, self.share.path), file=log or sys.stderr,
                  flush=True)

    def _open(self, first=False):
        import serial

        from . import serialshare

        try:
            # exclusive: a second program reading the same line would steal bytes
            self.s = serial.Serial(self.port, self.baud, timeout=0, exclusive=True)
            self.gone = False
        except (serial.SerialException, OSError, ValueError) as e:
            if first:
                raise serialshare.open_error(self.port, e) from None
            self.s = None

    def _lost(self):
        try:
            self.s.close()
        except Exception:  # noqa: BLE001 - the device is already gone
            pass
        self.s = None
        self.gone = True

    def get(self, timeout):
        import serial

        from . import serialshare

        if self.q:
            return self.q.popleft()
        if self.s is None:
            time.sleep(min(timeout, 1.0))
            self._open()
            return None
        fd = self.s.fileno()
        ready = serialshare.wait_readable(
            [fd, self.share.master if self.share else None], min(timeout, 0.05))
        try:
            if self.share is not None and self.share.master in ready:
                data = self.share.from_client()
                if data:
                    self.s.write(data)
            if fd in ready:
                chunk = self.s.read(max(1, self.s.in_waiting))
                if not chunk:
                    raise serial.SerialException("end of input")
                passed, recs = self.split.feed(chunk)
                if passed and self.share is not None:
                    self.share.to_client(passed)
                now = time.time()
                for r in recs:
                    self.q.append((r, now, None, 0))
        except (serial.SerialException, OSError):
            self._lost()
        return self.q.popleft() if self.q else None

    def ack(self, item):
        pass

    def stop(self):
        if self.share is not None:
            self.share.close()
            self.share = None
        if self.s is not None:
            self.s.close()
            self.s = None


def host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError("--mqtt must be HOST:PORT, e.g. localhost:1883, got %r" % text)
    return host, int(port)


class Recorder:
    """Pull from a source, store a batch, commit, then acknowledge the batch. A database
    error leaves the batch unacknowledged and is retried (reconnecting when the store
    offers it), so a database restart loses nothing either."""

    def __init__(self, store, source, batch=500, max_wait=0.25, reopen=None, log=None):
        self.store, self.source = _store(store), source
        self.batch, self.max_wait = max(1, batch), max_wait
        self.reopen = reopen
        self.log = log or (lambda m: print(m, file=sys.stderr, flush=True))
        self.new = 0
        self.repeats = 0
        self.bad = 0
        self.commits = 0
        self.stop_flag = False

    def run(self, duration=None):
        end = time.time() + duration if duration else None
        while not self.stop_flag and (end is None or time.time() < end):
            item = self.source.get(0.05)
            if item is None:
                continue
            pending = [item]
            first = time.monotonic()
            while len(pending) < self.batch and time.monotonic() - first < self.max_wait:
                nxt = self.source.get(0 if len(pending) > 1 else 0.01)
                if nxt is None:
                    break
                pending.append(nxt)
            self.flush(pending)

    def flush(self, pending):
        rows = []
        for item in pending:
            rec = parse(item[0])
            if rec is None:
                self.bad += 1
            else:
                rows.append(row_of(rec, item[1], json.dumps(rec, separators=(",", ":"))))
        delay = 0.5
        while True:
            try:
                n = self.store.insert_many(rows)
                self.store.commit()
                break
            except Exception as e:  # any engine error: keep the batch unacknowledged, retry
                if self.stop_flag:
                    raise
                self.log("database error (%s): retrying in %.1f s"
                         % (str(e).strip().splitlines()[0] if str(e).strip() else
                            type(e).__name__, delay))
                try:
                    self.store.rollback()
                except Exception:  # the connection itself is gone
                    if self.reopen is not None:
                        try:
                            self.store = self.reopen()
                        except UserError:
                            pass
                time.sleep(delay)
                delay = min(5.0, delay * 2)
        self.commits += 1
        self.new += n
        self.repeats += len(rows) - n
        for item in pending:
            self.source.ack(item)


def client_id_for(args):
    if args.client_id:
        return args.client_id
    target = args.db if "://" in str(args.db) else os.path.abspath(args.db)
    h = hashlib.sha256(target.encode()).hexdigest()[:10]
    if args.share:
        return "bms-record-%s-%s-%s-%s" % (h, args.share, socket.gethostname(), args.worker)
    return "bms-record-" + h


def run(args):
    store = open_store(args.db)
    if args.mqtt:
        host, port = host_port(args.mqtt)
        password = args.password or os.environ.get("BMS_MQTT_PASSWORD")
        source = MqttSource(host, port, args.user, password, args.tls, args.cafile,
                            args.topic_prefix, client_id_for(args), args.share,
                            not args.no_standby)
        try:
            source.start()
        except UserError:
            store.close()
            raise
        where = "mqtt://%s:%d/%s" % (host, port, source.topic)
    else:
        source = SerialSource(args.port, args.baud)
        where = args.port
    rec = Recorder(store, source, batch=args.batch, reopen=lambda: open_store(args.db))

    def _stop(signum, frame):
        rec.stop_flag = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print("recording %s into %s (Ctrl-C to stop)" % (where, display(args.db)),
          file=sys.stderr, flush=True)
    try:
        rec.run(args.duration)
    finally:
        source.stop()
    extra = ""
    if getattr(source, "sb", None) is not None:
        extra = ", %d taken from the standby session" % source.guarded
    print("stored %d new records (%d repeats ignored, %d unreadable%s)"
          % (rec.new, rec.repeats, rec.bad, extra), flush=True)
    if not args.share:  # a worker sees only its part of the stream
        for line in gap_report(rec.store):
            print(line)
    rec.store.close()
    return 0


def main(argv=None):
    """`python -m bms_host.record ...`: the same as `bms-host record ...`."""
    import argparse

    p = argparse.ArgumentParser(prog="bms-host record", description=HELP)
    configure(p)
    try:
        return run(p.parse_args(argv))
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
