# Device-side tests of telemetry records, the offline buffer and signed calibration pushes
# (run under CPython and MicroPython).
import io
import json

from bms import calfile, hmac_sha256, telemetry
import scratch
from calsample import calibration

KEY = b"device-key-0123456789abcdef-secret"


def lines_of(out):
    # split on newlines only: CPython's splitlines() also splits at the record separator
    return [x for x in out.getvalue().split("\n") if x]


def status(t_ms=0, cells=2):
    return {"device_id": "d1", "t_ms": t_ms, "cells": cells, "v": [3.71234567, 3.7][:cells],
            "temp_c": [25.0, 26.5], "i_a": 1.25, "soc": [0.5, 0.51][:cells],
            "soc_sigma": [0.01, 0.012][:cells], "soc_pack": 0.5, "soh": 0.98, "soh_sigma": 0.02,
            "sop_dis_a": [50.0, 40.0, 30.0], "sop_chg_a": [10.0, 8.0, 6.0], "fet_chg": True,
            "fet_dsg": False, "faults": ["OT_CHG"], "backend": "python",
            "capacity_ah": [4.41, 4.45][:cells], "capacity_sigma_ah": [0.05, 0.06][:cells],
            "r0_growth": [1.2, 1.18][:cells], "r0_growth_sigma": [0.06, 0.07][:cells],
            "cal_checksum": "ab" * 32}


class FakeClient:
    """Stands in for chumicro_mqtt.MQTTClient: publishes are acked on the next handle()
    while `up`; going down forgets them, as a clean session does."""

    def __init__(self):
        self.state = "connected"
        self.last_error = None
        self.up = True
        self.published = []
        self.pending = []
        self.subscribed = []

    def subscribe(self, topic, qos=0):
        self.subscribed.append(topic)

    def connect(self):
        pass

    def publish(self, topic, payload, qos=0, retain=False, on_publish=None):
        self.published.append((topic, bytes(payload) if not isinstance(payload, str)
                               else payload.encode()))
        self.pending.append((topic, payload, on_publish))

    def handle(self, now):
        if not self.up:
            self.state = "failed"
            self.pending = []
            return
        if self.state != "connected":
            self.state = "connected"
            self.on_connect()
        pending, self.pending = self.pending, []
        for topic, payload, cb in pending:
            if cb is not None:
                cb(topic, payload)

    def disconnect(self):
        self.state = "disconnected"


def test_record_has_every_field_and_marker():
    out = io.StringIO()
    tel = telemetry.Telemetry("d1", period_s=5, out=out, boot=7)
    tel.tick(0, status(0))
    lines = lines_of(out)
    # the record separator first: a host lifts records out of raw-REPL traffic by it
    assert len(lines) == 1 and lines[0].startswith("\x1eTEL ")
    rec = json.loads(lines[0][5:])
    for k in ("device_id", "boot", "seq", "t_ms", "v", "temp_c", "i_a", "soc", "soc_sigma",
              "soh", "soh_sigma", "sop_dis_a", "sop_chg_a", "fet_chg", "fet_dsg", "faults"):
        assert k in rec, k
    assert rec["device_id"] == "d1" and rec["boot"] == 7 and rec["seq"] == 0
    assert rec["faults"] == ["OT_CHG"] and rec["fet_dsg"] is False
    assert abs(rec["v"][0] - 3.712346) < 1e-5  # rounded to 6 decimals
    assert abs(rec["v_pack"] - (3.712346 + 3.7)) < 1e-5
    assert telemetry.parse_line(lines[0])["seq"] == 0
    # state of health with its uncertainty, per cell: what the host's RUL trends read
    assert rec["capacity_ah"] == [4.41, 4.45] and rec["capacity_sigma_ah"] == [0.05, 0.06]
    assert rec["r0_growth"] == [1.2, 1.18] and rec["r0_growth_sigma"] == [0.06, 0.07]


def test_parse_line_ignores_repl_chatter():
    assert telemetry.parse_line(">>> print('hi')") is None
    assert telemetry.parse_line("TEL {not json") is None
    assert telemetry.parse_line('TEL {"a": 1}') is None
    assert telemetry.parse_line('TEL {"device_id": "x", "seq": 3}')["seq"] == 3


def test_one_record_per_period():
    out = io.StringIO()
    tel = telemetry.Telemetry("d1", period_s=5, out=out)
    for k in range(121):  # 12 s of 100 ms ticks
        tel.tick(k * 100, status(k * 100))
    recs = [telemetry.parse_line(x) for x in lines_of(out)]
    assert [r["seq"] for r in recs] == [0, 1, 2]
    assert [r["t_ms"] for r in recs] == [0, 5000, 10000]
    assert tel.stats()["sent"] == 3


def test_nan_and_inf_become_null_so_the_record_stays_json():
    st = status(0)
    st["i_a"] = float("nan")
    st["v"] = [3.7, float("inf"), float("-inf")]
    rec = telemetry.make_record(st, "d1", 1, 0)
    assert rec["i_a"] is None and rec["v"] == [3.7, None, None], rec
    line = json.dumps(rec)
    assert "nan" not in line.lower() and "inf" not in line.lower(), line
    assert json.loads(line)["v"][1] is None


def test_status_is_made_only_when_a_record_is_due():
    # making the status of 16 cells costs ~50 ms on an RP2040: not every estimator tick
    out = io.StringIO()
    tel = telemetry.Telemetry("d1", period_s=5, out=out)
    made = []

    def make():
        made.append(1)
        return status(len(made))

    for k in range(121):  # 12 s of 100 ms ticks
        tel.tick(k * 100, make)
    assert len(made) == 3 and len(lines_of(out)) == 3


def test_serial_off_prints_nothing():
    out = io.StringIO()
    tel = telemetry.Telemetry("d1", period_s=1, out=out, serial=False)
    tel.tick(0, status())
    assert out.getvalue() == ""


def test_buffer_is_bounded_and_drops_oldest():
    c = FakeClient()
    tel = telemetry.Telemetry("d1", period_s=1, serial=False, buffer_max=5, client=c)
    c.up = False
    for k in range(12):
        tel.tick(k * 1000, status(k * 1000))
    st = tel.stats()
    assert st["buffered"] == 5 and st["dropped"] == 7 and st["sent"] == 0
    assert not st["connected"]
    c.published = []
    c.up = True
    for _ in range(8):  # reconnect: the buffer drains, oldest first
        tel.poll()
    seqs = [json.loads(p[1])["seq"] for p in c.published]
    assert seqs[:5] == [7, 8, 9, 10, 11], seqs
    assert tel.stats()["buffered"] == 0 and tel.stats()["sent"] == 5


def test_unacked_records_are_republished_after_reconnect():
    c = FakeClient()
    tel = telemetry.Telemetry("d1", period_s=1, serial=False, client=c)
    tel.emit(status())
    c.handle = lambda now: None  # publish goes out, the PUBACK never comes
    tel.poll()
    assert len(c.published) == 1 and tel.stats()["buffered"] == 1
    del c.handle  # back to the class method
    c.up = False
    tel.poll()
    c.up = True
    tel.poll()
    tel.poll()
    assert [json.loads(p[1])["seq"] for p in c.published] == [0, 0]
    assert tel.stats()["buffered"] == 0 and tel.stats()["sent"] == 1
    assert c.published[0][0] == "bms/d1/telemetry" and c.subscribed == ["bms/d1/calibration"]


def test_hmac_rfc4231_case_1():
    assert hmac_sha256.hexdigest(b"\x0b" * 20, b"Hi There") == \
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"


def test_hmac_rfc4231_case_2():
    assert hmac_sha256.hexdigest(b"Jefe", b"what do ya want for nothing?") == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hmac_rfc4231_case_6_long_key():
    assert hmac_sha256.hexdigest(
        b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First") == \
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_hmac_verify():
    sig = hmac_sha256.hexdigest(KEY, "text")
    assert hmac_sha256.verify(KEY, "text", sig)
    assert hmac_sha256.verify(KEY, "text", sig.upper())
    assert not hmac_sha256.verify(KEY, "text!", sig)
    assert not hmac_sha256.verify(KEY, "text", sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    assert not hmac_sha256.verify(KEY, "text", None)


def cal_text(cal=None):
    return calfile.encode(json.dumps(cal or calibration()))


class Handler:
    def __init__(self):
        self.applied = []

    def __call__(self, text):
        self.applied.append(text)
        return True, "calibration applied"


def test_signed_calibration_is_applied():
    h = Handler()
    tel = telemetry.Telemetry("d1", serial=False, key=KEY, on_calibration=h)
    text = cal_text()
    ok, msg = tel.apply_signed(telemetry.sign(KEY, text, issued=1))
    assert ok and h.applied == [text], msg


def test_push_is_numbered_by_the_clock_or_asks_for_a_number():
    # Elsewhere pushes carry issued=1: the qemu board has no clock to number them by.
    import time
    try:
        msg = json.loads(telemetry.sign(KEY, cal_text()))
    except ValueError as e:
        assert not hasattr(time, "time_ns") and "pass issued=" in str(e), str(e)
        return
    assert isinstance(msg["issued"], int) and msg["issued"] > 0


def test_bad_or_missing_signature_is_rejected():
    h = Handler()
    tel = telemetry.Telemetry("d1", serial=False, key=KEY, on_calibration=h)
    text = cal_text()
    ok, msg = tel.apply_signed(telemetry.sign(b"another key", text, issued=1))
    assert not ok and msg == "bad signature"
    ok, msg = tel.apply_signed(json.dumps({"calibration": text}))
    assert not ok
    ok, msg = tel.apply_signed(b"\xff garbage")
    assert not ok
    assert h.applied == []


def test_a_recorded_push_cannot_be_replayed():
    path = scratch.path("issued")
    h = Handler()
    tel = telemetry.Telemetry("d1", serial=False, key=KEY, on_calibration=h, issued_path=path)
    text = cal_text()
    old = telemetry.sign(KEY, text, issued=5)
    ok, msg = tel.apply_signed(old)
    assert ok and tel.last_issued == 5, msg
    ok, msg = tel.apply_signed(old)                       # the same message again
    assert not ok and "replayed" in msg and len(h.applied) == 1
    forged = json.loads(old)
    forged["issued"] = 9                                  # a new number on the old HMAC
    ok, msg = tel.apply_signed(json.dumps(forged))
    assert not ok and msg == "bad signature"
    ok, msg = tel.apply_signed(telemetry.sign(KEY, text, issued=6))
    assert ok and len(h.applied) == 2
    # after a reboot the device still knows the last number
    again = telemetry.Telemetry("d1", serial=False, key=KEY, on_calibration=h, issued_path=path)
    assert again.last_issued == 6
    ok, msg = again.apply_signed(old)
    assert not ok and "replayed" in msg and len(h.applied) == 2


def test_no_key_means_no_remote_calibration():
    h = Handler()
    tel = telemetry.Telemetry("d1", serial=False, on_calibration=h)
    ok, msg = tel.apply_signed(telemetry.sign(b"", cal_text(), issued=1))
    assert not ok and "no key" in msg and h.applied == []


def test_signed_limit_beyond_maxima_is_rejected():
    h = Handler()
    cal = calibration()
    cal["limits"]["v_max"] = 4.5  # beyond NMC's 4.25 V
    tel = telemetry.Telemetry("d1", serial=False, key=KEY, on_calibration=h)
    ok, msg = tel.apply_signed(telemetry.sign(KEY, cal_text(cal), issued=1))
    assert not ok and "v_max" in msg and h.applied == []


def test_calibration_over_mqtt_and_key_never_shown():
    out = io.StringIO()
    c = FakeClient()
    h = Handler()
    tel = telemetry.Telemetry("d1", period_s=1, out=out, key=KEY, on_calibration=h, client=c)
    tel.tick(0, status())
    c.on_message("bms/d1/calibration", telemetry.sign(b"wrong", cal_text(), issued=1).encode())
    c.on_message("bms/d1/calibration", telemetry.sign(KEY, cal_text(), issued=1).encode())
    c.on_message("bms/d1/other", b"{}")
    tel.tick(1000, status(1000))
    tel.poll()
    assert len(h.applied) == 1
    results = [json.loads(p[1]) for p in c.published if p[0] == "bms/d1/calibration/result"]
    assert [r["ok"] for r in results] == [False, True]
    seen = out.getvalue() + repr(tel.stats()) + "".join(repr(p) for p in c.published)
    for secret in (KEY.decode(), "".join("%02x" % b for b in KEY)):
        assert secret not in seen


# ---- start-up from config.json

class FakeApp:
    """What telemetry.start needs of bms.application.App."""

    def __init__(self):
        self.device_id = "bms"
        self.started = []

    def start_telemetry(self, period_s=5, mqtt=None, serial=False, key=None):
        self.started.append((period_s, mqtt, serial, key))
        if mqtt and mqtt.get("host") == "no-client":
            raise ImportError("telemetry: the MQTT client is missing; install it")
        self.tel = telemetry.Telemetry(self.device_id, period_s, None, serial, key=key,
                                       out=io.StringIO())
        return self.tel


class FakeNetwork:
    STA_IF = 0

    def __init__(self):
        self.joined = []
        net = self

        class WLAN:
            def __init__(self, which):
                self.on = False

            def active(self, on):
                self.on = on

            def isconnected(self):
                return False

            def connect(self, ssid, password):
                net.joined.append((ssid, password, self.on))

        self.WLAN = WLAN


def write_config(text):
    p = scratch.path("config.json")
    if text is not None:
        with open(p, "w") as f:
            f.write(text)
    return p


def test_no_config_means_console_records_every_5_s():
    app, out = FakeApp(), io.StringIO()
    tel = telemetry.start(app, write_config(None), out=out)
    assert app.started == [(5, None, True, None)] and out.getvalue() == ""
    for k in range(101):  # 10 s of estimator ticks
        tel.tick(k * 100, status(k * 100))
    recs = [telemetry.parse_line(x) for x in lines_of(out)]
    assert [r["seq"] for r in recs] == [0, 1, 2]


def test_config_names_broker_wifi_and_device():
    app, out, net = FakeApp(), io.StringIO(), FakeNetwork()
    cfg = {"device_id": "garage", "period_s": 2, "wifi": {"ssid": "home", "password": "pw"},
           "mqtt": {"host": "192.168.1.10", "port": 1884}, "key": "k"}
    tel = telemetry.start(app, write_config(json.dumps(cfg)), out=out, network=net)
    assert app.device_id == "garage"
    assert app.started == [(2, {"host": "192.168.1.10", "port": 1884}, True, "k")]
    assert net.joined == [("home", "pw", True)]
    assert tel.discovery == {} and out.getvalue() == ""
    # the link stays down: joined again every 30 s, not at every record
    for k in range(1, 66):
        tel.tick(k * 1000, status(k * 1000))
    assert len(net.joined) == 3, net.joined
    assert "pw" not in repr(tel.stats())


def test_bad_config_is_one_line_and_records_go_on():
    for text, words in (("{not json", "not valid JSON"),
                        ('{"perod_s": 5}', "unknown key 'perod_s'"),
                        ('{"period_s": 0}', "period_s must be"),
                        ('{"mqtt": {"port": 1883}}', "mqtt must name a broker"),
                        ('{"mqtt": {"host": "h", "port": "x"}}', "mqtt port"),
                        ('{"wifi": {"password": "x"}}', "wifi must be"),
                        ('[1, 2]', "JSON object")):
        app, out = FakeApp(), io.StringIO()
        telemetry.start(app, write_config(text), out=out)
        lines = lines_of(out)
        assert len(lines) == 1 and words in lines[0], (text, lines)
        assert app.started == [(5, None, True, None)], text


def test_board_without_wifi_or_mqtt_client_keeps_console_records():
    # a Pico without Wi-Fi has no network module (nor have the host runtimes)
    app, out = FakeApp(), io.StringIO()
    telemetry.start(app, write_config('{"wifi": {"ssid": "home"}, "mqtt": {"host": "h"}}'),
                    out=out)
    assert "no Wi-Fi" in out.getvalue() and app.started[-1][1] is None
    app, out = FakeApp(), io.StringIO()
    tel = telemetry.start(app, write_config('{"mqtt": {"host": "no-client"}}'), out=out)
    assert "MQTT client is missing" in out.getvalue() and app.started[-1][1] is None
    assert tel.discovery is None


# ---- Home Assistant discovery

def test_discovery_messages_cover_the_pack():
    msgs = []
    k = 0
    while True:
        m = telemetry.discovery_message(k, "pack 7", 4, 2, "bms/pack 7/telemetry", 5)
        if m is None:
            break
        msgs.append((m[0], json.loads(m[1])))
        k += 1
    ids = [c["unique_id"] for _, c in msgs]
    assert len(ids) == len(set(ids)) == 11 + 4 + 2
    assert "bms_pack_7_cell4_voltage" in ids and "bms_pack_7_temp2" in ids
    for topic, c in msgs:
        assert topic.startswith("homeassistant/sensor/bms_pack_7/") and topic.endswith("/config")
        assert c["state_topic"] == "bms/pack 7/telemetry"
        assert c["device"]["identifiers"] == ["bms_pack_7"]
        assert c["value_template"].startswith("{{") and c["expire_after"] == 25


def test_discovery_goes_out_retained_after_connect():
    c = FakeClient()
    retained = []
    publish = c.publish

    def pub(topic, payload, qos=0, retain=False, on_publish=None):
        if retain:
            retained.append(topic)
        publish(topic, payload, qos, retain, on_publish)

    c.publish = pub
    tel = telemetry.Telemetry("d1", period_s=1, serial=False, client=c,
                              discovery={"prefix": "ha"})
    c.state = "connecting"
    for k in range(8):
        tel.tick(k * 1000, status(k * 1000))
    assert len(retained) == 11 + 2 + 2, retained
    assert all(t.startswith("ha/sensor/bms_d1/") for t in retained)
    c.state = "connecting"   # a reconnect publishes them again (the broker may be new)
    for k in range(8, 16):
        tel.tick(k * 1000, status(k * 1000))
    assert len(retained) == 2 * (11 + 2 + 2)
    seqs = [json.loads(p[1])["seq"] for p in c.published if p[0] == "bms/d1/telemetry"]
    assert sorted(set(seqs)) == list(range(16))
