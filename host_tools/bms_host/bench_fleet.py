"""Fleet bench: N lightweight simulated devices publish realistic records (QoS 1, one MQTT
connection each) to a real mosquitto; two `bms-host record` workers share the stream
through an MQTT 5 shared subscription and write into a real PostgreSQL. During the run
the broker is restarted once and one worker is killed (SIGKILL) and restarted; after the
steady phase the devices speed up for a short peak phase to find the rate the recorders
sustain. Every record a device made is then looked up in the database.

A simulated device is a coroutine, not a MicroPython process: it keeps each record until
the broker's PUBACK and publishes the unacknowledged ones again after a reconnect, as
device/bms/telemetry.py does, with records replayed from a drive cycle run through the
device's cell model. Publisher processes hold a share of the devices each.

Ends with one line:
`fleet: devices=N rate=R/s sent=S stored=T lost=L duplicated=D workers=W db=postgresql`."""
import argparse
import asyncio
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time

from . import UserError
from .bench_telemetry import Broker, free_port

HELP = "fleet bench: 1000 simulated devices, mosquitto and PostgreSQL, two recorder workers"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LGM50 = os.path.join(ROOT, "calibration", "lgm50.json")


# ---- realistic records: a drive cycle through the device's own cell model

def drive_cycle(seconds=900, cells=4, seed=7):
    """Status dicts, one per second, of a 4-cell pack on a random drive cycle."""
    sys.path.insert(0, os.path.join(ROOT, "device"))
    from bms import calfile, model

    cal, _ = calfile.load(LGM50)
    cap = cal["cell"]["capacity_ah"]
    rnd = random.Random(seed)
    sims = [model.Simulator(model.pack(cal, capacity_ah=cap * (1 - 0.01 * k)), 0.85, 25.0)
            for k in range(cells)]
    out, i, hold = [], 0.0, 0
    for k in range(seconds):
        if hold <= 0:
            i = rnd.choice([0.0, 0.5, 1.0, 2.0, -0.5, -1.0]) * cap * rnd.random()
            hold = rnd.randint(3, 40)
        hold -= 1
        v = [s.step(i, 25.0, 1.0) for s in sims]
        out.append({"t_ms": k * 1000, "cells": cells, "v": [round(x, 4) for x in v],
                    "temp_c": [round(sims[0].ts, 2), round(sims[-1].ts + 0.4, 2)],
                    "i_a": round(i, 3), "soc": [round(s.soc, 4) for s in sims],
                    "soc_sigma": [0.012] * cells,
                    "soc_pack": round(min(s.soc for s in sims), 4),
                    "sop_dis_a": [40.0, 30.0, 20.0], "sop_chg_a": [10.0, 8.0, 5.0],
                    "fet_chg": True, "fet_dsg": True, "faults": [], "backend": "native",
                    "cal_checksum": "5e1f" * 16})
    return out


# ---- a minimal MQTT 3.1.1 QoS 1 publisher (what a device needs, nothing more)

def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id):
    vh = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", 0)  # clean session, no keepalive
    pl = _str(client_id)
    return b"\x10" + _varint(len(vh) + len(pl)) + vh + pl


def publish_packet(topic, pid, payload, dup=False):
    vh = _str(topic) + struct.pack(">H", pid)
    return bytes([0x32 | (0x08 if dup else 0)]) + _varint(len(vh) + len(payload)) + vh + payload


async def read_packet(reader):
    h = (await reader.readexactly(1))[0]
    n, mult = 0, 1
    while True:
        b = (await reader.readexactly(1))[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return h, (await reader.readexactly(n) if n else b"")


class Device:
    def __init__(self, dev_id, boot, cycle, offset, aging):
        self.id, self.boot = dev_id, boot
        self.topic = "bms/%s/telemetry" % dev_id
        self.cycle, self.offset = cycle, offset
        self.soh, self.r0 = aging
        self.seq = 0
        self.pid = 0
        self.inflight = {}  # packet id -> payload, until PUBACK
        self.writer = None
        self.acked = 0
        self.dropped = 0
        self.connects = 0

    def make(self):
        st = self.cycle[(self.offset + self.seq) % len(self.cycle)]
        rec = {"schema": 1, "device_id": self.id, "boot": self.boot, "seq": self.seq,
               "t_ms": self.seq * 1000}
        for k, v in st.items():
            if k != "t_ms":
                rec[k] = v
        rec["soh"] = self.soh
        rec["soh_sigma"] = 0.01
        rec["r0_ohm"] = [self.r0] * st["cells"]
        rec["capacity_ah"] = [round(5.0 * self.soh, 4)] * st["cells"]
        self.seq += 1
        return json.dumps(rec, separators=(",", ":")).encode()

    def publish(self, buffer_max):
        payload = self.make()
        self.pid = self.pid % 65535 + 1
        while self.pid in self.inflight:
            self.pid = self.pid % 65535 + 1
        if len(self.inflight) >= buffer_max:  # full: the oldest goes, counted
            del self.inflight[next(iter(self.inflight))]
            self.dropped += 1
        self.inflight[self.pid] = payload
        w = self.writer
        if w is not None and not w.is_closing():
            w.write(publish_packet(self.topic, self.pid, payload))

    async def connection(self, host, port, stop):
        while not stop.is_set():
            try:
                r, w = await asyncio.open_connection(host, port)
                w.write(connect_packet(self.id))
                h, body = await asyncio.wait_for(read_packet(r), 10)
                if h >> 4 != 2 or body[1] != 0:
                    raise ConnectionError("CONNACK %r" % body)
                self.connects += 1
                for pid, payload in list(self.inflight.items()):
                    w.write(publish_packet(self.topic, pid, payload, dup=True))
                self.writer = w
                while True:
                    h, body = await read_packet(r)
                    if h >> 4 == 4:  # PUBACK
                        if self.inflight.pop(struct.unpack(">H", body[:2])[0], None) is not None:
                            self.acked += 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError,
                    asyncio.TimeoutError, IndexError):
                pass
            finally:
                if self.writer is not None:
                    self.writer.close()
                self.writer = None
            await asyncio.sleep(0.5 + random.random() * 2.0)


async def publisher_main(cfg):
    """One publisher process: cfg["devices"] devices, the schedule of the bench."""
    cycle = drive_cycle()
    rnd = random.Random(cfg["seed"])
    devs = []
    for name in cfg["devices"]:
        aging = (round(rnd.uniform(0.75, 1.0), 4), round(rnd.uniform(0.010, 0.025), 5))
        devs.append(Device(name, rnd.getrandbits(30), cycle, rnd.randrange(len(cycle)),
                           aging))
    stop = asyncio.Event()
    conns = []
    for k, d in enumerate(devs):  # spread the connects over the first seconds
        conns.append(asyncio.create_task(d.connection(cfg["host"], cfg["port"], stop)))
        if k % 50 == 49:
            await asyncio.sleep(0.05)
    t0 = cfg["t0"]
    n = len(devs)
    buffer_max = cfg["buffer_max"]
    # steady phase: each device once a second, at its own phase in the second
    for phase_end, hz in ((cfg["seconds"], 1.0), (cfg["seconds"] + cfg["peak_s"],
                                                  cfg["peak_hz"])):
        period = 1.0 / hz
        while True:
            now = time.time() - t0
            if now >= phase_end:
                break
            slot = int(now / period)
            for k, d in enumerate(devs):
                target = t0 + (slot + k / n) * period
                delay = target - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if target - t0 < phase_end:
                    d.publish(buffer_max)
            await asyncio.sleep(max(0.0, t0 + (slot + 1) * period - time.time()))
    made_at = time.time()
    while any(d.inflight for d in devs) and time.time() - made_at < cfg["drain_s"]:
        await asyncio.sleep(0.2)
    stop.set()
    for d in devs:
        if d.writer is not None:
            d.writer.close()
    for c in conns:
        c.cancel()
    await asyncio.gather(*conns, return_exceptions=True)
    return {"devices": [[d.id, d.boot, d.seq] for d in devs],
            "acked": sum(d.acked for d in devs), "dropped": sum(d.dropped for d in devs),
            "unacked": sum(len(d.inflight) for d in devs),
            "connects": sum(d.connects for d in devs)}


def publisher_process(cfg_json):
    cfg = json.loads(cfg_json)
    res = asyncio.run(publisher_main(cfg))
    print("STATS " + json.dumps(res), flush=True)


# ---- the bench

def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Worker:
    """One `bms-host record --share` process."""

    def __init__(self, n, port, url, logdir):
        self.n, self.port, self.url, self.logdir = n, port, url, logdir
        self.proc = None
        self.runs = 0

    def start(self):
        self.runs += 1
        log = open(os.path.join(self.logdir, "worker%d.%d.log" % (self.n, self.runs)), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bms_host.record", "--mqtt", "127.0.0.1:%d" % self.port,
             "--db", self.url, "--share", "fleet", "--worker", str(self.n), "--batch", "1000"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        path = log.name
        deadline = time.time() + 20
        while time.time() < deadline:
            if "recording" in open(path).read():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise UserError("recorder worker %d did not start: %s" % (self.n, open(path).read()[-500:]))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_bench(devices=1000, seconds=120.0, peak_s=20.0, peak_hz=4.0, workers=2,
              publishers=2, broker_restart_at=0.35, worker_kill_at=0.65, down_s=3.0,
              worker_down_s=5.0, workdir=None, log=None, pg_settings=None):
    from . import pgcluster
    from .store import open_store

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    raise_fd_limit()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bms-bench-fleet-")
        workdir = tmp.name
    cluster = pgcluster.Cluster(port=free_port(), settings=pg_settings).start()
    broker = None
    pubs, ws = [], []
    try:
        url = cluster.create_db("fleet")
        open_store(url).close()  # the schema, before the workers race for it
        broker = Broker(workdir)
        with open(broker.conf, "a") as f:
            # a batch is acknowledged after its commit: let a whole batch be in flight
            f.write("max_inflight_messages 0\nmax_connections -1\n")
        broker.start()
        ws = [Worker(k + 1, broker.port, url, workdir).start() for k in range(workers)]
        time.sleep(0.5)
        names = ["fleet%04d" % k for k in range(devices)]
        t0 = time.time() + 3.0
        for p in range(publishers):
            cfg = {"devices": names[p::publishers], "host": "127.0.0.1", "port": broker.port,
                   "t0": t0, "seconds": seconds, "peak_s": peak_s, "peak_hz": peak_hz,
                   "buffer_max": 100000, "drain_s": 60.0, "seed": p}
            with open(os.path.join(workdir, "publisher%d.log" % p), "w") as err:
                pubs.append(subprocess.Popen(
                    [sys.executable, "-m", "bms_host.bench_fleet", "--publisher",
                     json.dumps(cfg)], stdout=subprocess.PIPE, stderr=err, text=True))
        log("bench: %d devices at 1 record/s for %g s, then %g s at %g/s; %d workers; "
            "broker on port %d" % (devices, seconds, peak_s, peak_hz, workers, broker.port))
        probe = open_store(url)
        samples = []
        events = [(t0 + broker_restart_at * seconds, "broker"),
                  (t0 + worker_kill_at * seconds, "kill")]
        restart_worker_at = None
        end = t0 + seconds + peak_s
        while time.time() < end + 1.0:
            now = time.time()
            samples.append((now, probe.count()))
            probe.commit()
            if events and now >= events[0][0]:
                what = events.pop(0)[1]
                if what == "broker":
                    log("bench: restarting the broker (down %g s)" % down_s)
                    broker.restart(down_s)
                else:
                    log("bench: killing worker 1 (SIGKILL), restarting it in %g s"
                        % worker_down_s)
                    ws[0].kill()
                    restart_worker_at = now + worker_down_s
            if restart_worker_at is not None and now >= restart_worker_at:
                ws[0].start()
                restart_worker_at = None
                log("bench: worker 1 restarted")
            time.sleep(1.0)
        stats = []
        for p in pubs:
            out, _ = p.communicate(timeout=180)
            line = [x for x in out.splitlines() if x.startswith("STATS ")]
            if not line:
                raise RuntimeError("a publisher ended without stats (exit %s): see %s"
                                   % (p.returncode, workdir))
            stats.append(json.loads(line[0][6:]))
        sent = sum(n for s in stats for _, _, n in s["devices"])
        deadline = time.time() + 60
        while probe.count() < sent and time.time() < deadline:
            probe.commit()
            samples.append((time.time(), probe.count()))
            time.sleep(0.5)
        probe.commit()
        for w in ws:
            w.stop()
        expected = {(d, b, q) for s in stats for d, b, n in s["devices"] for q in range(n)}
        rows = probe.keys()
        probe.close()
        keys = set(rows)
        missing = expected - keys
        if missing:  # when they were made: a device makes record `seq` at t0 + seq s
            at = sorted(q for _, _, q in missing)
            log("bench: lost records were made %d..%d s into the run (median %d)"
                % (at[0], at[-1], at[len(at) // 2]))
        res = {"devices": devices, "workers": workers, "sent": sent, "stored": len(rows),
               "lost": len(missing),
               "duplicated": (len(rows) - len(keys)) + len(keys - expected),
               "rate": sum(min(n, int(seconds)) for s in stats for _, _, n in s["devices"])
               / seconds,
               "acked": sum(s["acked"] for s in stats),
               "dropped": sum(s["dropped"] for s in stats),
               "unacked": sum(s["unacked"] for s in stats),
               "connects": sum(s["connects"] for s in stats),
               "peak": peak_rate(samples, 10.0),
               "peak_asked": devices * peak_hz if peak_s else 0.0,
               "peak_made": (sent - devices * int(seconds)) / peak_s if peak_s else 0.0,
               "standby": standby_counts(workdir)}
        return res
    finally:
        for p in pubs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for w in ws:
            w.stop()
        if broker is not None:
            broker.stop()
        cluster.stop()
        if tmp is not None:
            tmp.cleanup()


def standby_counts(workdir):
    """Records the workers took from their standby sessions (the broker-restart window)."""
    n = 0
    for name in os.listdir(workdir):
        if name.startswith("worker") and name.endswith(".log"):
            for ln in open(os.path.join(workdir, name)):
                if "taken from the standby session" in ln:
                    n += int(ln.rsplit(", ", 1)[1].split()[0])
    return n


def peak_rate(samples, window):
    """The highest records/s stored over any stretch of at least `window` seconds."""
    best = 0.0
    j = 0
    for i in range(len(samples)):
        while j < i and samples[i][0] - samples[j + 1][0] >= window:
            j += 1
        dt = samples[i][0] - samples[j][0]
        if dt >= window:
            best = max(best, (samples[i][1] - samples[j][1]) / dt)
    return best


def line(res):
    return ("fleet: devices=%d rate=%.0f/s sent=%d stored=%d lost=%d duplicated=%d workers=%d "
            "db=postgresql" % (res["devices"], res["rate"], res["sent"], res["stored"],
                               res["lost"], res["duplicated"], res["workers"]))


def table(res):
    return ["| | |", "|---|---|",
            "| devices | %d (one MQTT connection each, %d connects in all) |"
            % (res["devices"], res["connects"]),
            "| steady rate | %.0f records/s |" % res["rate"],
            "| peak sustained (best 10 s, stored) | %.0f records/s (peak phase: asked %.0f/s, "
            "the publishers made %.0f/s) |" % (res["peak"], res["peak_asked"], res["peak_made"]),
            "| faults survived | broker restart (down 3 s), worker 1 killed (SIGKILL) and "
            "restarted; %d records taken from standby sessions |" % res["standby"],
            "| acknowledged to devices | %d (unacknowledged at the end %d, dropped %d) |"
            % (res["acked"], res["unacked"], res["dropped"])]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bms-host bench fleet", description=HELP)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=120.0, help="steady phase, 1 record/s")
    ap.add_argument("--peak-seconds", type=float, default=20.0)
    ap.add_argument("--peak-hz", type=float, default=4.0,
                    help="records/s per device in the peak phase")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--publisher", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.publisher:
        publisher_process(args.publisher)
        return 0
    if args.devices < 1 or args.seconds < 10 or args.workers < 1:
        print("error: --devices >= 1, --seconds >= 10 and --workers >= 1 are needed",
              file=sys.stderr)
        return 2
    try:
        res = run_bench(args.devices, args.seconds, args.peak_seconds, args.peak_hz,
                        args.workers, args.publishers)
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    for x in table(res):
        print(x)
    print(line(res), flush=True)
    return 0 if res["lost"] == 0 and res["duplicated"] == 0 and res["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
