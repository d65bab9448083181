"""Target bench: the real application on the real Raspberry Pi Pico firmware.

The RPI_PICO firmware (float32, ulab + bms_native, device code frozen; firmware.build_rp2)
boots in the rp2040js emulator. On it, the real `App` runs with the Pico's board code and
drivers (board.build) on the simulated I2C bus (sim.sim_i2c, frozen in that firmware
only), for 1, 4 and 16 cells and 60 virtual seconds each (10 ms ticks, as bms.run()
advances the simulated board). Time is the firmware's own time.ticks_us: emulated RP2040
cycles at 125 MHz.

Only device work is counted:
- the plant (a recorded DST trace at half charge, played back with a small spread per
  cell) writes the simulated chips' inputs between ticks, outside the measured spans;
- the simulated chips' register emulation runs inside the drivers' I2C calls, so the bus
  times it and that time is subtracted from each fast tick (on a board this is silicon;
  the real bus transfer and the ADS1115 conversion wait are NOT in the figures); the
  bus's methods are small enough that MicroPython keeps their frames off the heap, as a
  board's C I2C calls have none (a heap frame is allocated before the method can read
  the clock, so its cost, which grows with heap fragmentation, would count as the BMS's);
- the heap is capped at --heap-kb (the issue's Pico budget) by a block taken before the
  BMS starts, when the firmware has more;
- the fault log is not saved (the emulated flash cannot be written).

Per configuration: estimator tick mean/max, fast tick max, overruns, heap, how often each
cell gets an estimator step, the slowest fast ticks with what ran in them, and the cost of
one cell's pieces measured alone afterwards.
Last line: `target: cells=16 heap_kb=H free_kb=F est_tick_ms=E fast_tick_max_ms=M
overruns=O every_cell_s=C step_ms=S`.
"""
import argparse
import ast
import sys
import time

from . import REPO, UserError, firmware, rp2040

HELP = "the application on the emulated Pico (rp2040js): tick times, heap, per cell"
CAL = REPO / "calibration" / "lgm50.json"
TRACE = REPO / "data" / "lgm50" / "dst_25C.csv"
TRACE_FROM = 7000      # DST around half charge
TARGETS = {"free_kb": (">=", 48), "est_tick_ms": ("<=", 50), "fast_tick_max_ms": ("<=", 5),
           "overruns": ("<=", 0), "every_cell_s": ("<=", 1), "step_ms": ("<=", 2.5)}

# Run over the raw REPL as separate pieces, so that the heap figure holds neither the
# bench's source, nor the calibration's text, nor the trace: each piece's code is freed
# when it returns. First the heap cap (HEAP_KB), then CAL_TEXT and ROWS, then these.
CAP = r"""
import gc
gc.collect()
_have = gc.mem_free() + gc.mem_alloc()
_ballast = bytearray(_have - HEAP_KB * 1024) if _have > HEAP_KB * 1024 else None
"""

SETUP = r"""
from time import ticks_us, ticks_diff
import board
from bms import application, backends, calfile, model, ukf
from sim import sim_i2c


class Pin:
    def __init__(self, v):
        self.v = v

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0


class Bus(sim_i2c.SimI2C):
    # The simulated chips (sim_i2c) behind register images: between ticks the plant has
    # the chips compute their result registers (two dithered images, keyed addr << 8 |
    # reg; an ADS1115's conversion of input c under addr << 8 | 16 + c); in the tick a
    # driver's read copies two bytes, and starting a conversion latches that input's
    # code as the chip's result. Set-up and probes go to the chips themselves. The bus
    # times itself: that time is taken off the fast tick (silicon on a board). Each
    # method keeps to 11 words of Python state, so MicroPython puts its frame on the C
    # stack: on a board these are C calls, and a frame on the heap (its allocation,
    # before the method can read the clock) would charge the bench's bus to the BMS.
    spent = 0
    last = 0      # the last fast tick's share
    calls = 0
    t0 = 0

    def __init__(self):
        sim_i2c.SimI2C.__init__(self)
        self.img = {}     # this tick's image
        self.held = {}    # addr << 8 -> the conversion an ADS1115 holds

    def readfrom_mem_into(self, addr, reg, buf):
        self.t0 = ticks_us()
        v = self.img.get(addr << 8 | reg)
        if v is None:
            v = self.held.get(addr << 8 | reg)
        if v is None:
            sim_i2c.SimI2C.readfrom_mem_into(self, addr, reg, buf)
        else:
            buf[0] = v >> 8
            buf[1] = v & 0xFF
        self.spent += ticks_diff(ticks_us(), self.t0)
        self.calls += 1

    def writeto_mem(self, addr, reg, buf):
        self.t0 = ticks_us()
        v = self.img.get(addr << 8 | 16 | buf[0] >> 4 & 3) if reg == 1 and buf[0] & 0x80 \
            else None
        if v is None:
            sim_i2c.SimI2C.writeto_mem(self, addr, reg, buf)
        else:
            self.held[addr << 8] = v     # a single-shot conversion started
        self.spent += ticks_diff(ticks_us(), self.t0)
        self.calls += 1


class FastStats(application.LoopStats):
    # the fast tick without the simulated chips' time; the slowest ones kept with what
    # ran in them (called after the tick's clock is read: none of this is timed)
    max_at = 0    # virtual ms of the longest fast tick
    calls0 = 0
    gc_seen = 0
    gc_at = 0     # virtual ms of the estimator tick that ended with the last collection

    def add(self, us):
        us -= bus.spent
        at = app.now_ms + application.FAST_MS
        if us > self.max_us:
            self.max_at = at
        application.LoopStats.add(self, us)
        if app.gc_runs != self.gc_seen:
            self.gc_seen = app.gc_runs
            self.gc_at = app.now_ms
        if len(slowest) < SLOWEST or us > slowest[-1][0]:
            # an NTC read this tick? (sensor k on tick k mod temp_every_n)
            ntc = (app.sensors._temp_tick - 1) % hw.temp_every_n < hw.n_temps \
                or self.count == 1
            slowest.append((us, at, at - self.gc_at, int(ntc), bus.calls - self.calls0))
            slowest.sort(key=lambda e: -e[0])
            if len(slowest) > SLOWEST:
                slowest.pop()
        self.calls0 = bus.calls
        bus.last = bus.spent
        bus.spent = 0


SLOWEST = 5
slowest = []     # (us, at ms, ms since the last collection, NTC read, I2C calls)


bus = Bus()
ina = bus.add(sim_i2c.SimINA226(0x40, 0.002))
ina.noise_lsb = 1          # dither, as the simulated board does: a frozen value reads stuck
ads = [bus.add(sim_i2c.SimADS1115(0x48 + j)) for j in range((CELLS + 3) // 4)]
n_ntc = 2 if CELLS > 1 else 1
ntc_u16 = [32768] * n_ntc
hw = board.build(bus, [(lambda k=k: ntc_u16[k]) for k in range(n_ntc)],
                 lambda x, hi: Pin(0 if hi else 1), {"series_cells": CELLS, "n_ntc": n_ntc})
cal = calfile.loads(CAL_TEXT)[0]
del CAL_TEXT
gc.collect()
app = application.App(hw, cal=cal, faultlog_path=None)
app.fast_stats = FastStats(application.FAST_MS)
# the plant's two dithered register images, swapped every tick; made once and updated in
# place (small ints), so the plant leaves nothing new on the heap between the ticks
images = [{}, {}]
for im in images:
    for r in (1, 2, 3, 4):
        im[0x40 << 8 | r] = 0
    for a in ads:
        im[a.addr << 8 | 1] = 0x8583                  # config: OS set, conversion done
        for c in range(4):
            im[a.addr << 8 | 16 | c] = 0


def plant(row):
    # one trace row into the chips' register images (outside every measured span)
    t, i, v, ts, ta = row
    ina.set_current_a(i)
    stack = 0.0
    codes = [[0] * 4 for a in ads]
    for k in range(CELLS):
        stack += v + 0.002 * (k % 4)       # a little spread between cells
        tap = hw.taps[k]
        codes[k // 4][k % 4] = int(stack / tap.ratio / tap.adc.lsb_v + 0.5)
    ina.set_bus_v(stack)
    for d in (0, 1):
        im = images[d]
        for r in (1, 2, 3, 4):
            im[0x40 << 8 | r] = ina.value(r) & 0xFFFF
        for j in range(len(ads)):
            a = ads[j].addr << 8
            for c in range(4):
                im[a | 16 | c] = min(codes[j][c] + d, 32767) & 0xFFFF
    for j in range(n_ntc):
        ntc_u16[j] = int(hw.temps[j].ratio_for(ts) * 65535 + 0.5)


"""

RUN = r"""
steps = {}                  # cell -> [estimator steps, first ms, last ms, largest gap ms]
now = 0
r = -1
est_seen = 0
while now < SECONDS * 1000:
    now += application.FAST_MS
    k = now // 1000                          # the trace has one row per second
    if k != r and k < len(ROWS):
        r = k
        plant(ROWS[k])
    bus.img = images[(now // application.FAST_MS) & 1]
    bus.spent = 0
    app.service(now)
    if app.est_stats.count != est_seen:      # bookkeeping outside the measured spans
        est_seen = app.est_stats.count
        for c in range(CELLS):
            ms = app._cell_ms[c]
            if ms is None:
                continue
            s = steps.get(c)
            if s is None:
                steps[c] = [1, ms, ms, 0]
            elif ms != s[2]:
                # gaps between filter steps; the first entry is the cell's start from its
                # OCV at boot (slow, one cell per tick until every cell has started)
                if ms - s[2] > s[3] and s[0] >= 2:
                    s[3] = ms - s[2]
                s[0] += 1
                s[2] = ms

gaps = [steps[c][3] for c in range(CELLS) if c in steps and steps[c][0] > 2]
counts = [steps[c][0] if c in steps else 0 for c in range(CELLS)]
print(repr({"est": app.est_stats.as_dict(), "fast": app.fast_stats.as_dict(),
            "fast_max_at": app.fast_stats.max_at, "gc_runs": app.gc_runs,
            "slowest": slowest,
            "gap_max_ms": max(gaps) if gaps else None, "steps_min": min(counts),
            "steps_max": max(counts), "now": now}))
"""

# The BMS's heap after the run: the trace and the plant's images dropped (the bench's
# small classes and the simulated chips stay in: a little conservative).
HEAP = r"""
del ROWS, images
gc.collect()
print(repr({"free": gc.mem_free(),
            "heap": gc.mem_free() + gc.mem_alloc() - (len(_ballast) if _ballast else 0)}))
"""

PIECES = r"""
# Where the time goes: pieces timed alone after the run, each the best of three (a
# collection may land in any one call; gc_us says what one costs).
gc.collect()
t0 = ticks_us()
gc.collect()
gc_us = ticks_diff(ticks_us(), t0)
s = app.sensors.sample
ta = app.ambient_c(s)
c0 = app.cells[0]


def best(f, *args):
    b = None
    for _ in range(3):
        t0 = ticks_us()
        f(*args)
        us = ticks_diff(ticks_us(), t0) - bus.spent
        bus.spent = 0
        b = us if b is None or us < b else b
    return b


cell_us = best(c0.step, s.current_a, s.cell_v[0], s.cell_temp_c(0), ta, 0.1)
sop_us = best(c0.update_sop, ta)
bus.calls = 0
app.fast_tick(now + 10)
bus_calls = bus.calls
bus_one_us = bus.last
read_us = prot_us = None
for _ in range(3):     # the fast tick's two halves, 10 ms apart as in the tick
    t = app._last_fast + 10
    app._last_fast = t
    t0 = ticks_us()
    app.sensors.read(t)
    t1 = ticks_us()
    app.protection.update(s, t)
    r_us = ticks_diff(t1, t0) - bus.spent
    p_us = ticks_diff(ticks_us(), t1)
    bus.spent = 0
    read_us = r_us if read_us is None or r_us < read_us else read_us
    prot_us = p_us if prot_us is None or p_us < prot_us else prot_us
try:
    nb = backends.make("native")
    x = nb.alloc(c0.x)
    P = nb.alloc(c0.P)
    p = nb.alloc(model.pack(cal))
    cfg = nb.alloc(c0.cfg)
    out = nb.alloc([0.0] * ukf.OUT_SIZE)
    u = nb.alloc(ukf.make_u(s.current_a, ta, 1.0, s.cell_v[0], s.cell_temp_c(0),
                            p[model.CAP_AS]))
    best = None
    for _ in range(3):
        t0 = ticks_us()
        nb.step(x, P, p, cfg, u, out)
        us = ticks_diff(ticks_us(), t0)
        best = us if best is None or us < best else best
    step_us = best
    step_err = None
except Exception as e:
    step_us = None
    step_err = "%s: %s" % (type(e).__name__, e)
print(repr({"cells": CELLS,
            "backend": c0.backend.name, "note": app.backend_note, "est_errors": app.est_errors,
            "cell_us": cell_us, "sop_us": sop_us,
            "bus_one_us": bus_one_us, "bus_calls": bus_calls,
            "step_us": step_us, "step_err": step_err, "gc_us": gc_us, "read_us": read_us,
            "prot_us": prot_us, "faults": len(app.log), "soc": app.pack_soc()}))
"""


def _rows(seconds):
    lines = TRACE.read_text().splitlines()
    names = lines[0].split(",")
    cols = [names.index(c) for c in ("time_s", "current_a", "voltage_v", "temperature_c",
                                     "ambient_c")]
    n = int(seconds) + 2
    return [tuple(float(line.split(",")[k]) for k in cols)
            for line in lines[TRACE_FROM:TRACE_FROM + n]]


def run_config(fw, cells, seconds, heap_kb):
    t0 = time.monotonic()
    res = {}
    with rp2040.Pico(fw) as pico:       # a fresh Pico per configuration: a clean heap
        pico.exec("HEAP_KB = %d\n%s" % (heap_kb, CAP))
        pico.exec("CAL_TEXT = %r" % CAL.read_text())
        pico.exec("ROWS = %r\nCELLS = %d\nSECONDS = %r" % (_rows(seconds), cells, seconds))
        pico.exec(SETUP)
        for piece in (RUN, HEAP, PIECES):
            out = pico.exec(piece, timeout=3600)
            res.update(ast.literal_eval(out.strip().splitlines()[-1]))
    res["host_s"] = time.monotonic() - t0
    return res


def figures(r):
    """The target line's figures from one configuration's result; every_cell_s is the
    longest time any cell waited between two estimator steps."""
    every = r["gap_max_ms"] / 1000.0 if r["gap_max_ms"] else None
    return {
        "cells": r["cells"], "heap_kb": r["heap"] // 1024, "free_kb": r["free"] // 1024,
        "est_tick_ms": r["est"]["mean_us"] / 1000.0,
        "fast_tick_max_ms": r["fast"]["max_us"] / 1000.0,
        "overruns": r["est"]["overruns"] + r["fast"]["overruns"],
        "every_cell_s": every,
        "step_ms": r["step_us"] / 1000.0 if r["step_us"] is not None else None,
    }


def _f(x, fmt="%.1f"):
    return "n/a" if x is None else fmt % x


def report(r):
    f = figures(r)
    print("cells=%-2d backend=%s  est tick mean %s ms max %s ms (%d overruns)  fast tick "
          "max %s ms (%d overruns)  heap %d KB, free %d KB after gc.collect()  every cell "
          "waited at most %s s between filter steps after its start (%d..%d steps each "
          "in %g s)  native step %s ms  [%.0f s host]"
          % (r["cells"], r["backend"], _f(f["est_tick_ms"]), _f(r["est"]["max_us"] / 1000.0),
             r["est"]["overruns"], _f(f["fast_tick_max_ms"], "%.2f"), r["fast"]["overruns"],
             f["heap_kb"], f["free_kb"], _f(f["every_cell_s"], "%.2f"), r["steps_min"],
             r["steps_max"], r["now"] / 1000.0, _f(f["step_ms"], "%.2f"), r["host_s"]))
    glue = r["cell_us"] / 1000.0 - f["step_ms"] if f["step_ms"] is not None else None
    print("         estimator, timed alone: one cell's step %.1f ms (native step %s + Python "
          "glue %s), SOP %.1f ms (one cell per tick)%s"
          % (r["cell_us"] / 1000.0, _f(f["step_ms"], "%.2f"), _f(glue), r["sop_us"] / 1000.0,
             ("; backend note: %s" % r["note"]) if r["note"] else ""))
    print("         fast tick: mean %.2f ms, longest at %.2f s; timed alone: sensors.read %.2f "
          "(drivers + validation) + protection.update %.2f (+ %.2f ms of simulated chips in "
          "%d I2C calls, subtracted); one gc.collect() %.1f ms, %d made in the run"
          % (r["fast"]["mean_us"] / 1000.0, r["fast_max_at"] / 1000.0, r["read_us"] / 1000.0,
             r["prot_us"] / 1000.0, r["bus_one_us"] / 1000.0, r["bus_calls"],
             r["gc_us"] / 1000.0, r["gc_runs"]))
    print("         slowest fast ticks: %s" % "; ".join(
        "%.2f ms at %.2f s (%d ms after a collection%s, %d I2C calls)"
        % (us / 1000.0, at / 1000.0, since, ", an NTC read" if ntc else "", calls)
        for us, at, since, ntc, calls in r["slowest"]))
    if r["step_err"]:
        print("         native step not measured: %s" % r["step_err"])
    if r["est_errors"]:
        print("         estimator ticks that raised: %d" % r["est_errors"])
    sys.stdout.flush()
    return f


def target_line(f):
    return ("target: cells=%d heap_kb=%d free_kb=%d est_tick_ms=%s fast_tick_max_ms=%s "
            "overruns=%d every_cell_s=%s step_ms=%s"
            % (f["cells"], f["heap_kb"], f["free_kb"], _f(f["est_tick_ms"]),
               _f(f["fast_tick_max_ms"], "%.2f"), f["overruns"], _f(f["every_cell_s"], "%.2f"),
               _f(f["step_ms"], "%.2f")))


def meets(f, heap_kb):
    if f["heap_kb"] > heap_kb:
        return False
    for k, (op, lim) in TARGETS.items():
        v = f[k]
        if v is None or (v < lim if op == ">=" else v > lim):
            return False
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bms-host bench target", description=HELP)
    ap.add_argument("--cells", default="1,4,16", help="comma-separated cell counts")
    ap.add_argument("--seconds", type=float, default=60.0, help="virtual seconds each")
    ap.add_argument("--heap-kb", type=int, default=192,
                    help="heap the BMS may use (the firmware's is larger: the rest is held)")
    args = ap.parse_args(argv)
    try:
        cells = [int(c) for c in args.cells.split(",")]
    except ValueError:
        print("error: --cells takes numbers like 1,4,16", file=sys.stderr)
        return 2
    try:
        firmware.sources()
        rp2040.node()
        t0 = time.monotonic()
        fw = firmware.build_rp2()
        print("firmware: %s (%.0f s to build or check)" % (fw, time.monotonic() - t0))
        print("plant outside the measured spans; simulated chips' time subtracted from the "
              "fast tick; time = emulated RP2040 cycles (125 MHz); %g virtual s each"
              % args.seconds)
        f = None
        for n in cells:
            f = report(run_config(fw, n, args.seconds, args.heap_kb))
    except firmware.Unavailable as e:
        print("bench target: skipped: %s" % e)
        return 2
    except (UserError, RuntimeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print(target_line(f), flush=True)
    return 0 if meets(f, args.heap_kb) else 1


if __name__ == "__main__":
    sys.exit(main())
