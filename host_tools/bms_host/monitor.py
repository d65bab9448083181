"""bms-host monitor: a live view of running packs from a device's console or an MQTT broker.

One panel per device: pack voltage, current, SOC with its sigma, SOH, capacity and
resistance growth of the weakest cell with their sigmas, SOP (discharge and
charge limits for 2/10/30 s), FETs and faults, then a row per cell (voltage, temperature,
SOC +- sigma). It refreshes as records arrive; Ctrl-C ends it, and so does the source
ending (the device unplugged, the broker gone). On a terminal the view is redrawn in
place (rich's Live); into a pipe or file each record prints one plain frame."""
import json
import os
import queue
import sys
import time

from . import UserError

HELP = "live view of a pack: per-cell V, T, SOC +- sigma, current, SOP, FETs, faults"
HORIZONS_S = (2, 10, 30)   # SOP horizons of the records' sop_dis_a / sop_chg_a


def configure(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of a device (e.g. /dev/ttyACM0 or /dev/pts/N)")
    src.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker to subscribe to")
    p.add_argument("--user", help="MQTT username")
    p.add_argument("--password", help="MQTT password (or set BMS_MQTT_PASSWORD)")
    p.add_argument("--tls", action="store_true", help="connect to the broker with TLS")
    p.add_argument("--cafile", help="CA certificate for --tls (default: the system's)")
    p.add_argument("--topic-prefix", default="bms", help="topic prefix (default bms)")
    p.add_argument("--device", help="show only this device id")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate")
    p.add_argument("--count", type=int, help="stop after this many records")
    p.add_argument("--duration", type=float, help="stop after this many seconds")


# ---- sources: get(timeout) -> record dict or None; `ended` says why the source stopped

class MqttFeed:
    """Subscribes to <prefix>/+/telemetry with a clean session (a viewer keeps no state
    on the broker)."""

    def __init__(self, host, port, user=None, password=None, tls=False, cafile=None,
                 prefix="bms"):
        import paho.mqtt.client as mqtt

        self.host, self.port = host, port
        self.topic = "%s/+/telemetry" % prefix
        self.q = queue.Queue()
        self.error = None
        self.connected = False
        self.ended = None
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id="bms-monitor-%d-%d" % (os.getpid(), time.time_ns() % 10**6))
        if user:
            self.c.username_pw_set(user, password)
        if tls:
            self.c.tls_set(ca_certs=cafile)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda c, u, msg: self.q.put(msg.payload)

    def _on_connect(self, client, userdata, flags, reason, props):
        if reason.is_failure:
            self.error = "the broker at %s:%d refused the connection (%s): check --user and " \
                         "--password" % (self.host, self.port, reason)
            return
        self.connected = True
        client.subscribe(self.topic, qos=0)

    def _on_disconnect(self, client, userdata, flags, reason, props):
        if self.connected:
            self.ended = "the broker at %s:%d closed the connection" % (self.host, self.port)
        self.connected = False

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
        if self.error or not self.connected:
            self.stop()
            raise UserError(self.error or "the MQTT broker at %s:%d did not answer within %g s"
                            % (self.host, self.port, timeout))
        self.c.reconnect_delay_set(min_delay=3600, max_delay=3600)   # no retries: it ended

    def get(self, timeout):
        try:
            payload = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        return _record(payload)

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


class SerialFeed:
    """A device's console, shared with exec/push like `record --port`."""

    def __init__(self, port, baud):
        from .record import SerialSource

        self.port = port
        self.src = SerialSource(port, baud)
        self.ended = None

    def get(self, timeout):
        item = self.src.get(timeout)
        if self.src.gone and not os.path.exists(self.port):
            self.ended = "the device on %s went away" % self.port
        return _record(item[0]) if item else None

    def stop(self):
        self.src.stop()


def _record(payload):
    try:
        rec = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("device_id"), str):
        return None
    return rec


# ---- the view

def _num(x, fmt):
    return fmt % x if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _at(seq, k):
    return seq[k] if isinstance(seq, list) and k < len(seq) else None


def _weakest(values, sigmas, pick):
    """(value, its sigma) of the cell that pick (min or max) chooses; Nones when absent."""
    if not isinstance(values, list):
        return None, None
    ks = [k for k, v in enumerate(values) if isinstance(v, (int, float))]
    if not ks:
        return None, None
    k = pick(ks, key=lambda j: values[j])
    return values[k], _at(sigmas, k)


def render(devices, now=None):
    """The view of {device_id: (record, rx_time)} as a rich renderable."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    if not devices:
        return Text("waiting for telemetry records ...")
    panels = []
    for dev in sorted(devices):
        rec, rx = devices[dev]
        faults = rec.get("faults") or []
        sigma = rec.get("soc_sigma") or []
        pack = Table.grid(padding=(0, 2))
        for _ in range(4):
            pack.add_column()
        pack.add_row("pack", _num(rec.get("v_pack"), "%.3f V"),
                     "current", _num(rec.get("i_a"), "%+.3f A"))
        soc_pack = rec.get("soc_pack")
        worst = max([s for s in sigma if isinstance(s, (int, float))], default=None)
        pack.add_row("SOC", "%s +- %s" % (_num(soc_pack and soc_pack * 100, "%.1f %%"),
                                          _num(worst and worst * 100, "%.1f %%")),
                     "SOH", "%s +- %s" % (_num(rec.get("soh") and rec["soh"] * 100, "%.1f %%"),
                                          _num(rec.get("soh_sigma") and rec["soh_sigma"] * 100,
                                               "%.1f %%")))
        cap, cap_sig = _weakest(rec.get("capacity_ah"), rec.get("capacity_sigma_ah"), min)
        grow, grow_sig = _weakest(rec.get("r0_growth"), rec.get("r0_growth_sigma"), max)
        if cap is not None or grow is not None:
            pack.add_row("capacity", "%s +- %s" % (_num(cap, "%.2f Ah"), _num(cap_sig, "%.2f Ah")),
                         "R0 growth", "x%s +- %s" % (_num(grow, "%.2f"), _num(grow_sig, "%.2f")))
        sop = " / ".join(_num(_at(rec.get("sop_dis_a"), k), "%.1f") for k in range(3))
        sopc = " / ".join(_num(_at(rec.get("sop_chg_a"), k), "%.1f") for k in range(3))
        hz = "/".join("%g" % h for h in HORIZONS_S)
        pack.add_row("SOP dis %s s" % hz, sop + " A", "SOP chg %s s" % hz, sopc + " A")
        fets = "charge %s, discharge %s" % ("ON" if rec.get("fet_chg") else "off",
                                            "ON" if rec.get("fet_dsg") else "off")
        pack.add_row("FETs", fets, "faults",
                     Text(", ".join(faults), style="bold red") if faults
                     else Text("none", style="green"))
        cells = Table(box=None, padding=(0, 2), header_style="bold")
        for col in ("cell", "voltage", "temp", "SOC", "sigma"):
            cells.add_column(col, justify="right")
        n = rec.get("cells") or len(rec.get("v") or [])
        temps = rec.get("cell_temp_c") or []
        for k in range(n):
            cells.add_row(str(k + 1), _num(_at(rec.get("v"), k), "%.3f V"),
                          _num(_at(temps, k), "%.1f C"),
                          _num(_at(rec.get("soc"), k) and rec["soc"][k] * 100, "%.1f %%"),
                          _num(_at(sigma, k) and sigma[k] * 100, "%.2f %%"))
        sensors = rec.get("temp_c") or []
        title = "%s  seq %s  (%.0f s ago)" % (dev, rec.get("seq"), max(0.0, now - rx))
        sub = "sensors: " + ", ".join(_num(t, "%.1f C") for t in sensors) if sensors else None
        panels.append(Panel(Group(pack, Text(""), cells), title=title, subtitle=sub,
                            title_align="left", border_style="red" if faults else "green"))
    return Group(*panels)


def watch(feed, console, count=None, duration=None, device=None, live=None):
    """Show records from feed until count/duration, Ctrl-C or the feed's end. Returns
    (records shown, why it stopped)."""
    devices = {}
    shown = 0
    end = time.time() + duration if duration else None
    live = console.is_terminal if live is None else live
    lv = None
    if live:
        from rich.live import Live
        lv = Live(render(devices), console=console, refresh_per_second=4, transient=False)
        lv.start()
    why = None
    try:
        while True:
            if count is not None and shown >= count:
                why = "%d records shown" % shown
                break
            if end is not None and time.time() >= end:
                why = "--duration reached"
                break
            rec = feed.get(0.2)
            if rec is None:
                if feed.ended:
                    why = feed.ended
                    break
                if lv is not None:
                    lv.update(render(devices))   # keeps the age of the last record moving
                continue
            if device and rec["device_id"] != device:
                continue
            devices[rec["device_id"]] = (rec, time.time())
            shown += 1
            if lv is not None:
                lv.update(render(devices))
            else:
                console.print(render(devices))
    except KeyboardInterrupt:
        why = "stopped"
    finally:
        if lv is not None:
            lv.stop()
    return shown, why


def run(args):
    from rich.console import Console

    from .record import host_port

    if args.count is not None and args.count < 1:
        raise UserError("--count must be 1 or more, got %d" % args.count)
    if args.mqtt:
        host, port = host_port(args.mqtt)
        feed = MqttFeed(host, port, args.user,
                        args.password or os.environ.get("BMS_MQTT_PASSWORD"), args.tls,
                        args.cafile, args.topic_prefix)
        feed.start()
    else:
        feed = SerialFeed(args.port, args.baud)
    try:
        shown, why = watch(feed, Console(), args.count, args.duration, args.device)
    finally:
        feed.stop()
    print("monitor: %s (%d records)" % (why, shown), file=sys.stderr)
    return 0
