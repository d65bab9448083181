# Telemetry: one record every period, as a JSON line on the serial console ("TEL " prefix,
# so a host can tell records from REPL chatter) and published over MQTT (QoS 1).
#
# MQTT client: chumicro-mqtt (PyPI, MIT). Chosen because it is non-blocking by design
# (non-blocking connect, one bounded slice of socket work per handle(), self-healing
# reconnect with backoff), does QoS 1, username/password and TLS, and the same files run on
# MicroPython, CircuitPython and CPython. aiomqttc needs an asyncio loop, which the BMS's
# tick scheduler does not run. It is not part of this repository: on the host
# `bms_host.mpylib` copies it from the installed wheel into build/mpylib (put on
# MICROPYPATH); on a board: `mpremote mip install github:ChuMicro/ChuMicro-Bundle/chumicro_mqtt`.
#
# Delivery: a record stays in a bounded buffer until the broker acknowledges it (PUBACK);
# after a reconnect the unacknowledged ones are published again, so a record may arrive
# twice but is never lost while it is buffered. The recorder stores (device_id, boot, seq)
# once. When the buffer is full the oldest record is dropped and counted.
#
# Security: a calibration pushed to <prefix>/<id>/calibration is applied only when its
# HMAC-SHA256 (device key) verifies and it passes calfile validation (which keeps limits
# inside the chemistry's maxima). The HMAC covers an issue number with the text, and a push
# whose number is not above the last applied one is refused, so a recorded old push cannot
# be replayed (the number survives reboots in issued_path). Nothing else received over MQTT
# changes the device. The key is never printed, published or returned by stats().
import json
import sys

from bms import calfile, hmac_sha256

SCHEMA = 1
MARK = "TEL "
WINDOW = 8  # QoS 1 publishes awaiting PUBACK at once
PER_TICK = 4  # new publishes per tick, and handle() calls: bounded work per control tick

# status keys copied into the record, in this order (absent keys are left out)
FIELDS = ("cells", "v", "temp_c", "i_a", "soc", "soc_sigma", "soc_pack", "soh", "soh_sigma",
          "sop_dis_a", "sop_chg_a", "fet_chg", "fet_dsg", "faults", "r0_ohm", "capacity_ah",
          "backend", "cal_checksum")


def _round(x):
    # 6 decimals: 1 uV, 1 uA, 1 micro-ohm; keeps the JSON short and the same on float32
    if isinstance(x, float):
        # NaN/inf (a missing sensor, a cell not read yet) is not JSON: null
        return round(x, 6) if -1e30 < x < 1e30 else None
    if isinstance(x, list) or isinstance(x, tuple):
        return [_round(v) for v in x]
    return x


def make_record(status, device_id, boot, seq):
    """The record for one status dict: a plain dict, JSON-ready."""
    rec = {"schema": SCHEMA, "device_id": device_id, "boot": boot, "seq": seq,
           "t_ms": status.get("t_ms", 0)}
    for k in FIELDS:
        if k in status:
            rec[k] = _round(status[k])
    return rec


def parse_line(line):
    """Record dict from a console line, or None when the line is not a record."""
    if not line.startswith(MARK):
        return None
    try:
        rec = json.loads(line[len(MARK):])
    except ValueError:
        return None
    if not isinstance(rec, dict) or "seq" not in rec or "device_id" not in rec:
        return None
    return rec


def boot_id():
    """A random 30-bit number per power-up: sequence numbers restart at each boot."""
    try:
        import os
        b = os.urandom(4)
        return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) & 0x3FFFFFFF
    except (ImportError, AttributeError, OSError, NotImplementedError):
        import random
        return random.getrandbits(30)


def _signed_body(issued, text):
    return "%d\n%s" % (issued, text)


def sign(key, text, issued=None):
    """The push message for a calibration file text (host side and tests). issued: a
    number above every earlier push to the device (default: the time in milliseconds)."""
    if issued is None:
        import time
        if not hasattr(time, "time_ns"):   # e.g. the qemu port: no clock at all
            raise ValueError("telemetry.sign: this runtime has no clock; pass issued= "
                             "(a number above every earlier push)")
        issued = time.time_ns() // 1000000   # integer ms: a float32 time() is 128 s coarse
    return json.dumps({"calibration": text, "issued": issued,
                       "hmac": hmac_sha256.hexdigest(key, _signed_body(issued, text))})


def _read_int(path):
    """The number stored at path; 0 when there is none (or it is unreadable)."""
    if not path:
        return 0
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


class Telemetry:
    def __init__(self, device_id, period_s=5, mqtt=None, serial=True, buffer_max=200,
                 key=None, on_calibration=None, out=None, boot=None, client=None,
                 issued_path=None):
        if not isinstance(device_id, str) or not device_id or "/" in device_id \
                or "+" in device_id or "#" in device_id:
            raise ValueError("telemetry: device id must be a non-empty string without / + #")
        self.device_id = device_id
        self.period_ms = int(period_s * 1000)
        self.serial = serial
        self.out = out if out is not None else sys.stdout
        self.buffer_max = buffer_max
        self._key = key.encode() if isinstance(key, str) else key
        self.on_calibration = on_calibration
        self.issued_path = issued_path
        self.last_issued = _read_int(issued_path)   # of the last applied push
        self.boot = boot if boot is not None else boot_id()
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self.last_error = None
        self._next_ms = None
        self._buf = []  # [seq, payload bytes], oldest first, until the broker acks
        self._inflight = {}  # seq -> True: published, PUBACK pending
        self._cells = None
        self._cal_checksum = None
        self._client = None
        self._ticks = None
        self._topics((mqtt or {}).get("topic_prefix") or "bms")
        if client is not None:  # an MQTT client built by the caller (a board, a test)
            self._use(client, (mqtt or {}).get("ticks_ms"))
        elif mqtt:
            self._start_mqtt(mqtt)

    def _topics(self, prefix):
        base = prefix + "/" + self.device_id
        self.topic = base + "/telemetry"
        self.cal_topic = base + "/calibration"
        self.result_topic = base + "/calibration/result"

    def _use(self, c, ticks_ms=None):
        if ticks_ms is None:
            import time
            ticks_ms = time.ticks_ms if hasattr(time, "ticks_ms") else \
                (lambda: int(time.monotonic() * 1000))
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.on_oversized = self._on_oversized
        c.subscribe(self.cal_topic, 1)
        self._ticks = ticks_ms
        self._client = c
        c.connect()

    # ---- MQTT set-up
    def _start_mqtt(self, cfg):
        try:
            from chumicro_mqtt import MQTTClient
            from chumicro_sockets.sockets_factory import fixed_connector_factory
            from chumicro_timing import ticks_ms
        except ImportError:
            raise ImportError("telemetry: the MQTT client is missing; install it with `mpremote "
                              "mip install github:ChuMicro/ChuMicro-Bundle/chumicro_mqtt`")
        tls = cfg.get("tls", False)
        ctx = None
        if tls and cfg.get("ca_pem"):
            import chumicro_sockets
            ctx = chumicro_sockets.ssl_context_with_ca(cfg["ca_pem"])
        factory = fixed_connector_factory(cfg["host"], int(cfg.get("port") or 1883),
                                          use_tls=bool(tls), ssl_context=ctx)
        c = MQTTClient(transport_factory=factory,
                       client_id=cfg.get("client_id") or "bms-" + self.device_id,
                       keep_alive_seconds=int(cfg.get("keepalive_s", 30)),
                       username=cfg.get("user"), password=cfg.get("password"),
                       # a signed calibration (~25 KB) must fit the receive buffer
                       rx_buffer_size=int(cfg.get("rx_buffer", 32768)),
                       max_tx_queue_size=WINDOW + PER_TICK + 4)
        self._use(c, ticks_ms)

    def _on_connect(self, *args):
        # a clean session forgets unacked publishes: send them again
        self._inflight = {}

    def _acker(self, seq):
        def acked(topic, payload):
            self._inflight.pop(seq, None)
            for k in range(len(self._buf)):
                if self._buf[k][0] == seq:
                    self._buf.pop(k)
                    self.sent += 1
                    break
        return acked

    # ---- the control loop's entry point
    def tick(self, now_ms, status):
        """Called every estimator tick; makes a record when the period has passed and
        moves MQTT traffic a bounded step. Never blocks. status: the status dict, or a
        function that makes it (called only when a record is due: at 16 cells on an
        RP2040 making it costs ~50 ms)."""
        if self._next_ms is None or now_ms - self._next_ms >= 0 \
                or self._next_ms - now_ms > 2 * self.period_ms:  # clock went back
            nxt = (self._next_ms if self._next_ms is not None else now_ms) + self.period_ms
            # late by more than a period (a stall): realign instead of bursting records
            self._next_ms = nxt if nxt - now_ms > 0 else now_ms + self.period_ms
            if not isinstance(status, dict):
                status = status()
            if "cells" in status:
                self._cells = status["cells"]
            if "cal_checksum" in status:
                self._cal_checksum = status["cal_checksum"]
            self.emit(status)
        if self._client is not None:
            self.poll()

    def emit(self, status):
        """Make one record now: print it and queue it for MQTT. Returns the record."""
        rec = make_record(status, self.device_id, self.boot, self.seq)
        self.seq += 1
        line = json.dumps(rec)
        if self.serial:
            self.out.write(MARK + line + "\n")
        if self._client is None:
            self.sent += 1
            return rec
        self._buf.append([rec["seq"], line.encode()])
        while len(self._buf) > self.buffer_max:
            old = self._buf.pop(0)
            self._inflight.pop(old[0], None)
            self.dropped += 1
        return rec

    def poll(self):
        """Move MQTT traffic one bounded step (tick() calls it; also usable to drain)."""
        c = self._client
        if c is None:
            return
        now = self._ticks()
        try:
            c.handle(now)
            if c.state != "connected":
                self._inflight = {}
                return
            n = 0
            for item in self._buf:
                if len(self._inflight) >= WINDOW or n >= PER_TICK:
                    break
                seq = item[0]
                if seq in self._inflight:
                    continue
                c.publish(self.topic, item[1], qos=1, on_publish=self._acker(seq))
                self._inflight[seq] = True
                n += 1
            for _ in range(PER_TICK - 1):
                c.handle(now)
        except Exception as e:  # backpressure or a socket error: retry next tick
            self.last_error = "telemetry: %s" % e

    # ---- calibration pushed over MQTT
    def _on_message(self, topic, payload):
        if isinstance(topic, bytes):
            topic = topic.decode()
        if topic != self.cal_topic:
            return
        ok, message = self.apply_signed(payload)
        self._log("calibration push %s: %s" % ("applied" if ok else "rejected", message))
        try:
            self._client.publish(self.result_topic, json.dumps(
                {"device_id": self.device_id, "ok": ok, "message": message}), qos=1)
        except Exception as e:
            self.last_error = "telemetry: %s" % e

    def _on_oversized(self, length, topic=None):
        self._log("calibration push rejected: %d bytes is more than the receive buffer "
                  "(raise mqtt rx_buffer)" % length)

    def apply_signed(self, payload):
        """Check and apply a signed calibration message. Returns (ok, message)."""
        if not self._key:
            return False, "this device has no key, so remote calibration is disabled"
        try:
            if not isinstance(payload, str):
                payload = bytes(payload).decode()
            msg = json.loads(payload)
            text = msg["calibration"]
            issued = msg["issued"]
            sig = msg["hmac"]
        except (ValueError, KeyError, TypeError, UnicodeError):
            return False, "message is not JSON with 'calibration', 'issued' and 'hmac'"
        if not isinstance(text, str) or not isinstance(issued, int) or issued < 0 \
                or not hmac_sha256.verify(self._key, _signed_body(issued, text), sig):
            return False, "bad signature"
        if issued <= self.last_issued:
            return False, ("replayed or out-of-date push (issued %d, the last applied was "
                           "%d)" % (issued, self.last_issued))
        try:
            checksum = calfile.loads(text, self._cells)[1]
        except calfile.CalibrationError as e:
            return False, str(e)
        if checksum == self._cal_checksum:
            self._applied(issued)
            return True, "calibration %s is already in use" % checksum[:12]
        if self.on_calibration is None:
            return False, "no calibration handler on this device"
        try:
            ok, message = self.on_calibration(text)
        except Exception as e:
            return False, "calibration handler failed: %s" % e
        if ok:
            self._applied(issued)
        return ok, message

    def _applied(self, issued):
        """Remember the issue number of an applied push (write temp, then rename)."""
        self.last_issued = issued
        if self.issued_path:
            import os
            tmp = self.issued_path + ".tmp"
            try:
                with open(tmp, "w") as f:
                    f.write("%d\n" % issued)
                os.rename(tmp, self.issued_path)
            except OSError as e:   # kept in memory: refused again until a reboot
                self.last_error = "telemetry: cannot store the push number: %s" % e

    def _log(self, text):
        if self.serial:
            self.out.write("BMS telemetry: " + text + "\n")

    def stats(self):
        c = self._client
        err = self.last_error
        if c is not None and c.last_error is not None:
            err = str(c.last_error)
        return {"records": self.seq, "sent": self.sent, "buffered": len(self._buf),
                "dropped": self.dropped, "connected": c is not None and c.state == "connected",
                "last_error": err, "boot": self.boot}

    def close(self):
        if self._client is not None:
            try:
                self._client.disconnect()
            except Exception:
                pass
