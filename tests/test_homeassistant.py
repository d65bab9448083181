"""The simulated device configured as a maker configures a board (config.json naming a
broker) publishes Home Assistant discovery to a real mosquitto; every payload is checked
as Home Assistant reads it, its value_template rendered against an actual state message.
The live monitor shows the same pack from the broker and stops when the broker goes."""
import io
import json
import time

import pytest

from bms_host import bench_telemetry, cli, monitor
from bms_host.device import Device
from bms_host.sim import SimDevice
from test_telemetry import LGM50, needs_broker

# what Home Assistant's MQTT sensor needs, and the classes' units it accepts
REQUIRED = ("name", "unique_id", "state_topic", "value_template", "device")
UNITS = {"voltage": "V", "current": "A", "battery": "%", "temperature": "\u00b0C"}


def start_sim_with_config(tmp_path, port, cells=4):
    flash = tmp_path / "flash"
    flash.mkdir()
    # the same config.json a maker copies to a board with `make deploy CONFIG=...`
    (flash / "config.json").write_text(json.dumps({
        "device_id": "garage", "period_s": 1,
        "mqtt": {"host": "127.0.0.1", "port": port},
        "homeassistant": {"name": "Garage pack"}}))
    sim = SimDevice(calibration=LGM50, cells=cells, flash=str(flash))
    sim.boot()
    sim.wait_ready()
    return sim


def run_device(d, seconds):
    """bms.run() in virtual time, then real time for the network (the sim's loop)."""
    d.exec("bms.run(%d)" % seconds, timeout=60)
    d.exec("for _ in range(60):\n bms.app.tel.poll()\n time.sleep(0.03)", timeout=30)


@needs_broker
def test_discovery_payloads_validate_against_a_state_message(tmp_path):
    import jinja2
    import paho.mqtt.client as mqtt

    seen = {}
    with bench_telemetry.Broker(tmp_path) as broker:
        sim = start_sim_with_config(tmp_path, broker.port)
        try:
            with Device(sim.port) as d:
                d.exec("import bms, time")   # its boot started telemetry from config.json
                run_device(d, 5)
            # a late subscriber (Home Assistant restarting) still gets them: retained
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            c.on_message = lambda cl, u, m: seen.setdefault(m.topic, (m.payload, m.retain))
            c.connect("127.0.0.1", broker.port)
            c.subscribe([("homeassistant/#", 0), ("bms/+/telemetry", 0)])
            c.loop_start()
            with Device(sim.port) as d:
                run_device(d, 2)
            deadline = time.time() + 5
            while "bms/garage/telemetry" not in seen and time.time() < deadline:
                time.sleep(0.05)
            c.loop_stop()
            c.disconnect()
        finally:
            sim.stop()
    state = json.loads(seen.pop("bms/garage/telemetry")[0])
    configs = {t: json.loads(p) for t, (p, retained) in seen.items() if retained}
    assert set(configs) == set(seen), "discovery must be retained"
    # 11 pack entities, 4 cell voltages, 2 temperature sensors
    assert len(configs) == 17, sorted(configs)
    env = jinja2.Environment()
    values = {}
    for topic, cfg in configs.items():
        parts = topic.split("/")
        assert parts[0] == "homeassistant" and parts[1] == "sensor" and parts[4] == "config"
        assert parts[2] == "bms_garage" and cfg["unique_id"] == "bms_garage_" + parts[3]
        for k in REQUIRED:
            assert k in cfg, (topic, k)
        assert cfg["state_topic"] == "bms/garage/telemetry"
        assert cfg["device"]["identifiers"] == ["bms_garage"]
        assert cfg["device"]["name"] == "Garage pack"
        text = env.from_string(cfg["value_template"]).render(value_json=state).strip()
        assert text and text != "None", (topic, cfg["value_template"], text)
        if "state_class" in cfg:   # a numeric sensor: its template gives a number
            assert cfg["state_class"] == "measurement" and "unit_of_measurement" in cfg
            float(text)
        if "device_class" in cfg:
            assert cfg["unit_of_measurement"] == UNITS[cfg["device_class"]], topic
        values[parts[3]] = text
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    # the templates pick the right fields out of the record
    assert float(values["cell2_voltage"]) == pytest.approx(state["v"][1])
    assert float(values["pack_voltage"]) == pytest.approx(sum(state["v"]), abs=1e-5)
    assert float(values["soc"]) == pytest.approx(state["soc_pack"] * 100, abs=0.06)
    assert float(values["temp2"]) == pytest.approx(state["temp_c"][1])
    assert values["fet_discharge"] == ("on" if state["fet_dsg"] else "off")
    assert values["faults"] == (", ".join(state["faults"]) or "none")


@needs_broker
def test_monitor_over_mqtt_shows_the_pack_and_ends_with_the_broker(tmp_path):
    from rich.console import Console

    with bench_telemetry.Broker(tmp_path) as broker:
        sim = start_sim_with_config(tmp_path, broker.port, cells=3)
        try:
            feed = monitor.MqttFeed("127.0.0.1", broker.port)
            feed.start()
            try:
                with Device(sim.port) as d:
                    d.exec("import bms, time")   # telemetry: from config.json at boot
                    run_device(d, 3)
                out = io.StringIO()
                console = Console(file=out, width=100, force_terminal=False)
                shown, why = monitor.watch(feed, console, count=2, duration=15)
                assert shown == 2, why
                broker.stop()          # the source ends: the monitor says so and returns
                shown2, why2 = monitor.watch(feed, Console(file=io.StringIO()), duration=15)
            finally:
                feed.stop()
        finally:
            sim.stop()
    text = out.getvalue()
    assert "garage" in text and "closed the connection" in why2, (why2, shown2)
    for word in ("pack", "SOC", "SOH", "SOP dis", "FETs", "faults", "cell", "voltage"):
        assert word in text, word
    rows = [x for x in text.splitlines() if x.strip("\u2502 ").startswith(("1 ", "2 ", "3 "))]
    # the last frame: every cell read (the first record, at boot, has no tap readings yet)
    assert len(rows) >= 3 and all(" V " in r and " C " in r and "%" in r for r in rows[-3:]), rows


def test_monitor_unreachable_broker_and_wrong_port_are_one_sentence(capsys):
    for argv, words in ((["--mqtt", "127.0.0.1:%d" % bench_telemetry.free_port()],
                         "cannot reach the MQTT broker"),
                        (["--port", "/dev/does-not-exist"], "cannot open serial port"),
                        (["--mqtt", "nohost"], "--mqtt must be HOST:PORT")):
        rc = cli.main(["monitor"] + argv + ["--duration", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], err
