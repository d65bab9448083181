# Telemetry: one record every period, as a JSON line on the serial console and published
# over MQTT (QoS 1). On the console a record is "\x1eTEL {...}\n": the record separator
# byte never occurs in REPL output (repr() escapes it), so a host sharing the line with
# mpremote's raw REPL (bms-host record --port) can lift records out of the byte stream
# wherever they land, even between a command and its "OK".
#
# A board starts it with start(app) (boards/main.py): records every 5 s on the console,
# and over MQTT when config.json on flash names a broker (and, on ESP32 / Pico W, the
# Wi-Fi to reach it); see CONFIG_KEYS and the README. With MQTT it also publishes Home
# Assistant discovery (retained) so the pack shows up there with its sensors.
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

from bms import calfile, compat, hmac_sha256

SCHEMA = 1
MARK = "TEL "
START = "\x1e"  # ASCII record separator before MARK on the console
CONFIG_PATH = "config.json"
WINDOW = 8  # QoS 1 publishes awaiting PUBACK at once
PER_TICK = 4  # new publishes per tick, and handle() calls: bounded work per control tick

# status keys copied into the record, in this order (absent keys are left out)
# (state of health: soh and capacity_ah with their sigmas, r0_growth the resistance over
# the calibration's, per cell, with its sigma; the host's RUL trends read them)
FIELDS = ("cells", "v", "temp_c", "cell_temp_c", "i_a", "soc", "soc_sigma", "soc_pack", "soh",
          "soh_sigma", "sop_dis_a", "sop_chg_a", "fet_chg", "fet_dsg", "faults", "r0_ohm",
          "capacity_ah", "capacity_sigma_ah", "r0_growth", "r0_growth_sigma", "backend",
          "cal_checksum")


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
    v = rec.get("v")
    if v:   # pack voltage: the sum of the cells, null when a cell has no reading
        total = 0.0
        for x in v:
            if x is None:
                total = None
                break
            total += x
        rec["v_pack"] = None if total is None else round(total, 6)
    return rec


def parse_line(line):
    """Record dict from a console line, or None when the line is not a record."""
    if line.startswith(START):
        line = line[len(START):]
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
    b = compat.urandom(4)
    if b is None:
        import random
        return random.getrandbits(30)
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) & 0x3FFFFFFF


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
                 issued_path=None, discovery=None):
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
        self._n_temps = 0
        self._cal_checksum = None
        # Home Assistant discovery: {"prefix", "name", "model"} or None; published after
        # each connect, a few messages per tick, once the first record told the pack size
        self.discovery = discovery
        self._disc_next = None   # index of the next discovery message, None: nothing due
        self.wifi = None         # a WifiLink to keep up (start() sets it from config.json)
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
        client = compat.mqtt_client()
        if client is None:
            raise ImportError("telemetry: the MQTT client is missing; install it with `mpremote "
                              "mip install github:ChuMicro/ChuMicro-Bundle/chumicro_mqtt`")
        MQTTClient, fixed_connector_factory, ticks_ms = client
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
        if self.discovery is not None:
            self._disc_next = 0

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
            if "temp_c" in status:
                self._n_temps = len(status["temp_c"])
            if "cal_checksum" in status:
                self._cal_checksum = status["cal_checksum"]
            self.emit(status)
            if self.wifi is not None:
                self.wifi.check(now_ms)
        if self._client is not None:
            self.poll()

    def emit(self, status):
        """Make one record now: print it and queue it for MQTT. Returns the record."""
        rec = make_record(status, self.device_id, self.boot, self.seq)
        self.seq += 1
        line = json.dumps(rec)
        if self.serial:
            self.out.write(START + MARK + line + "\n")
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
            n = self._publish_discovery(c)
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

    def _publish_discovery(self, c):
        """Publish up to PER_TICK pending discovery messages; returns how many."""
        k = self._disc_next
        if k is None or self._cells is None:
            return 0
        d = self.discovery
        n = 0
        while n < PER_TICK:
            msg = discovery_message(k, self.device_id, self._cells, self._n_temps,
                                    self.topic, self.period_ms // 1000, d.get("prefix"),
                                    d.get("name"), d.get("model"))
            if msg is None:
                k = None
                break
            c.publish(msg[0], msg[1], qos=1, retain=True)
            k += 1
            n += 1
        self._disc_next = k
        return n

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


# ---- Home Assistant MQTT discovery
# One sensor per entity, all reading the telemetry topic: (object id, name, value template,
# unit, device class, state class). Text sensors (FETs, faults) have no unit or classes.
_PACK_ENTITIES = (
    ("pack_voltage", "Pack voltage", "{{ value_json.v_pack }}", "V", "voltage", "measurement"),
    ("current", "Current", "{{ value_json.i_a }}", "A", "current", "measurement"),
    ("soc", "State of charge", "{{ (value_json.soc_pack * 100) | round(1) }}", "%", "battery",
     "measurement"),
    ("soc_sigma", "SOC uncertainty", "{{ (value_json.soc_sigma | max * 100) | round(2) }}",
     "%", None, "measurement"),
    ("soh", "State of health", "{{ (value_json.soh * 100) | round(1) }}", "%", None,
     "measurement"),
    ("soh_sigma", "SOH uncertainty", "{{ (value_json.soh_sigma * 100) | round(2) }}", "%",
     None, "measurement"),
    ("sop_discharge", "Discharge limit 10 s", "{{ value_json.sop_dis_a[1] }}", "A", "current",
     "measurement"),
    ("sop_charge", "Charge limit 10 s", "{{ value_json.sop_chg_a[1] }}", "A", "current",
     "measurement"),
    ("fet_charge", "Charge FET", "{{ 'on' if value_json.fet_chg else 'off' }}", None, None,
     None),
    ("fet_discharge", "Discharge FET", "{{ 'on' if value_json.fet_dsg else 'off' }}", None,
     None, None),
    ("faults", "Faults",
     "{{ value_json.faults | join(', ') if value_json.faults else 'none' }}", None, None, None),
)


def _node(device_id):
    """The device id as a discovery node id (letters, digits, _ and - only)."""
    out = ""
    for ch in device_id:
        out += ch if ch.isalpha() or ch.isdigit() or ch in "_-" else "_"
    return "bms_" + out


def discovery_entity(k, n_cells, n_temps):
    """Entity k of a pack with n_cells and n_temps sensors, or None past the last."""
    if k < len(_PACK_ENTITIES):
        return _PACK_ENTITIES[k]
    k -= len(_PACK_ENTITIES)
    if k < n_cells:
        return ("cell%d_voltage" % (k + 1), "Cell %d voltage" % (k + 1),
                "{{ value_json.v[%d] }}" % k, "V", "voltage", "measurement")
    k -= n_cells
    if k < n_temps:
        return ("temp%d" % (k + 1), "Temperature %d" % (k + 1),
                "{{ value_json.temp_c[%d] }}" % k, "\u00b0C", "temperature", "measurement")
    return None


def discovery_message(k, device_id, n_cells, n_temps, state_topic, period_s=5, prefix=None,
                      name=None, model=None):
    """(topic, JSON payload) of discovery message k, or None past the last: published
    retained to <prefix>/sensor/<node>/<object>/config."""
    e = discovery_entity(k, n_cells, n_temps)
    if e is None:
        return None
    node = _node(device_id)
    cfg = {"name": e[1], "unique_id": node + "_" + e[0], "object_id": node + "_" + e[0],
           "state_topic": state_topic, "value_template": e[2],
           # unavailable when three records in a row did not come
           "expire_after": 3 * max(1, int(period_s)) + 10,
           "device": {"identifiers": [node], "name": name or "BMS " + device_id,
                      "manufacturer": "micropython-bms", "model": model or "%dS pack" % n_cells}}
    if e[3] is not None:
        cfg["unit_of_measurement"] = e[3]
    if e[4] is not None:
        cfg["device_class"] = e[4]
    if e[5] is not None:
        cfg["state_class"] = e[5]
    return ("%s/sensor/%s/%s/config" % (prefix or "homeassistant", node, e[0]),
            json.dumps(cfg))


# ---- start-up from config.json on flash
# Known keys; every one is optional:
#   device_id     "pack1": names the device in records, topics and Home Assistant
#   period_s      5: seconds between records (1..3600)
#   serial        true: print records on the console
#   wifi          {"ssid": ..., "password": ...}: joined at boot (ESP32, Pico W)
#   mqtt          {"host": ..., "port": 1883, "user", "password", "tls", "topic_prefix"}
#   key           "...": the device key for signed calibration pushes over MQTT
#   homeassistant true, false or {"prefix": "homeassistant", "name": "Garage pack"}
CONFIG_KEYS = ("device_id", "period_s", "serial", "wifi", "mqtt", "key", "homeassistant")
_MQTT_KEYS = ("host", "port", "user", "password", "tls", "ca_pem", "topic_prefix",
              "client_id", "keepalive_s", "rx_buffer")


def check_config(cfg):
    """None when cfg (a dict from config.json) is usable, else one sentence why not."""
    if not isinstance(cfg, dict):
        return "it must hold a JSON object such as {\"period_s\": 5}"
    for k in cfg:
        if k not in CONFIG_KEYS:
            return "unknown key '%s' (known: %s)" % (k, ", ".join(CONFIG_KEYS))
    d = cfg.get("device_id")
    if d is not None and (not isinstance(d, str) or not d or "/" in d or "+" in d
                          or "#" in d):
        return "device_id must be a non-empty string without / + #"
    p = cfg.get("period_s", 5)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p <= 3600:
        return "period_s must be a number of seconds from 1 to 3600"
    if not isinstance(cfg.get("serial", True), bool):
        return "serial must be true or false"
    w = cfg.get("wifi")
    if w is not None and (not isinstance(w, dict) or not isinstance(w.get("ssid"), str)
                          or not isinstance(w.get("password", ""), str)):
        return "wifi must be {\"ssid\": \"...\", \"password\": \"...\"}"
    m = cfg.get("mqtt")
    if m is not None:
        if not isinstance(m, dict) or not isinstance(m.get("host"), str) or not m["host"]:
            return "mqtt must name a broker: {\"host\": \"192.168.1.10\", \"port\": 1883}"
        for k in m:
            if k not in _MQTT_KEYS:
                return "unknown mqtt key '%s' (known: %s)" % (k, ", ".join(_MQTT_KEYS))
        port = m.get("port", 1883)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            return "mqtt port must be a number from 1 to 65535"
    if cfg.get("key") is not None and not isinstance(cfg["key"], str):
        return "key must be a string"
    h = cfg.get("homeassistant", True)
    if not isinstance(h, (bool, dict)):
        return "homeassistant must be true, false or {\"prefix\": ..., \"name\": ...}"
    return None


def read_config(path=CONFIG_PATH):
    """(config dict, problem): a missing file is an empty config and no problem; a bad
    one is an empty config and one sentence saying what is wrong with it."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}, None
    try:
        cfg = json.loads(text)
    except ValueError:
        return {}, "%s is not valid JSON" % path
    problem = check_config(cfg)
    if problem:
        return {}, "%s: %s" % (path, problem)
    return cfg, None


class WifiLink:
    """The station link from config.json: joined at boot without waiting (the MQTT client
    retries until it is up) and joined again when it dropped, at most every REJOIN_MS
    (not every port rejoins by itself after the access point went away)."""
    REJOIN_MS = 30000

    def __init__(self, w, network):
        self.ssid = w["ssid"]
        self._password = w.get("password") or ""
        self.net = network
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        self.joins = 0
        self._last_ms = None
        self.join(0)

    def join(self, now_ms):
        if self.wlan.isconnected():
            return
        busy = getattr(self.net, "STAT_CONNECTING", None)
        if busy is not None and self._last_ms is not None and self.wlan.status() == busy:
            return
        self._last_ms = now_ms
        self.joins += 1
        self.wlan.connect(self.ssid, self._password)

    def check(self, now_ms):
        """Called with each record: rejoin when the link is down and REJOIN_MS passed."""
        d = None if self._last_ms is None else now_ms - self._last_ms
        if d is None or d >= self.REJOIN_MS or d < 0:   # d < 0: the tick counter wrapped
            self.join(now_ms)


def join_wifi(w, network=None):
    """(WifiLink, None), or (None, one sentence) when this board has no Wi-Fi."""
    if network is None:
        network = compat.network()
        if network is None:
            return None, "this board has no Wi-Fi (no network module): use an ESP32 or a Pico W"
    return WifiLink(w, network), None


def start(app, path=CONFIG_PATH, out=None, network=None):
    """Start telemetry on a running app from config.json (missing: records every 5 s on
    the console only). Never stops the BMS: a bad config or a missing MQTT client is
    reported in one line and the console records go on. Returns the Telemetry."""
    out = out if out is not None else sys.stdout
    cfg, problem = read_config(path)
    if problem:
        out.write("BMS telemetry: %s; records go to the console only\n" % problem)
    if cfg.get("device_id"):
        app.device_id = cfg["device_id"]
    period = cfg.get("period_s", 5)
    serial = cfg.get("serial", True)
    key = cfg.get("key")
    mqtt = cfg.get("mqtt")
    disc = None
    wifi = None
    if mqtt is not None:
        h = cfg.get("homeassistant", True)
        if h is not False:
            disc = h if isinstance(h, dict) else {}
        if cfg.get("wifi") is not None:
            wifi, problem = join_wifi(cfg["wifi"], network)
            if problem:
                out.write("BMS telemetry: %s; records go to the console only\n" % problem)
                mqtt = None
    try:
        tel = app.start_telemetry(period, mqtt, serial, key)
    except (ImportError, OSError, ValueError) as e:
        out.write("BMS telemetry: %s; records go to the console only\n" % e)
        tel = app.start_telemetry(period, None, serial, key)
        disc = None
    tel.out = out
    tel.wifi = wifi
    tel.discovery = disc
    if disc is not None:
        tel._disc_next = 0
    return tel
