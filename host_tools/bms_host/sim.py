"""bms-host sim: the simulated device, a real MicroPython on a pseudo-terminal.

MicroPython (the unix port) runs the device code and boards/sim with the pty's master
side as its console input; the slave side is the "serial port" handed to mpremote. Its
output passes through a pipe that turns each bare line feed into CR LF, as a board's console
does (the unix port leaves that to a terminal's output processing, which a raw pty lacks,
so a terminal on the port would staircase). When the interpreter exits (a soft reset ends
the unix port, or a test kills it) it is started again on the same port, as a board
reboots; its flash is a folder that outlives it."""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty

from . import BOARDS_DIR, UserError, plausible
from .mpy import micropython_binary, micropython_env

HEAP = "16M"  # room for a long drive cycle; a board has far less, but no trace
HELP = "run the simulated device on a pseudo-terminal (prints `port: /dev/pts/N`)"


def configure(p):
    p.add_argument("--trace", help="trace CSV the simulated board plays (current, ambient)")
    p.add_argument("--calibration", help="calibration JSON installed at first boot")
    p.add_argument("--cells", type=int, default=1, help="cells in series (1..16)")
    p.add_argument("--soc", type=float, default=0.8,
                   help="initial SOC of the simulated cells (ECM plant mode)")
    p.add_argument("--age", metavar="RETENTION[:GROWTH]",
                   help="age the simulated cells: capacity times RETENTION (e.g. 0.87), "
                   "resistances times GROWTH (default: what `bms-host synth --aged-use` "
                   "gives the LG M50 at that retention, e.g. 1.24 at 0.87); the BMS keeps "
                   "the calibration it was given, as on a pack that aged")
    p.add_argument("--charger-cv", type=float, metavar="VOLTS",
                   help="charge as a CC-CV charger: the trace's charge current, tapered to "
                   "hold each cell at VOLTS (e.g. 4.2); default: the trace's current as it is")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="publish telemetry to this broker "
                   "(default: records on the console, as a deployed board prints them)")
    p.add_argument("--device-id", default="sim", help="device id in telemetry")
    p.add_argument("--period", type=float, default=None,
                   help="telemetry period in seconds of virtual time (default 5, or "
                   "config.json's period_s in the --flash folder)")
    p.add_argument("--flash", help="folder that plays the board's flash (kept across runs); "
                   "default: a temporary folder removed on exit")
    plausible.add_option(p)


def sample_calibration():
    """The simulated board's own cell (boards/sim/sample_cal.py), used when no calibration
    is given."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_sim_sample_cal",
                                                  BOARDS_DIR / "sim" / "sample_cal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.calibration()


class SimDevice:
    """Start/stop the simulated device from Python (tests, demo)."""

    def __init__(self, trace=None, calibration=None, cells=1, flash=None, soc=0.8,
                 mqtt=None, device_id="sim", period_s=None, allow_implausible=False,
                 age=None, charger_cv=None):
        for path, what in ((trace, "trace"), (calibration, "calibration")):
            if path and not os.path.isfile(path):
                raise UserError("%s file %s does not exist" % (what, path))
        if not 1 <= cells <= 16:
            raise UserError("--cells must be between 1 and 16, got %d" % cells)
        if not 0.0 <= soc <= 1.0:
            raise UserError("--soc must be between 0 and 1, got %g" % soc)
        if period_s is not None and not 1.0 <= period_s <= 3600.0:
            raise UserError("--period must be from 1 to 3600 seconds, got %g" % period_s)
        age = check_age(age)
        if charger_cv is not None and not 2.0 <= charger_cv <= 5.0:
            raise UserError("--charger-cv is a cell voltage from 2 to 5 V, got %g" % charger_cv)
        self._tmp = None
        self._cal_tmp = None
        # The host checks the inputs first, so that a bad file is one sentence here and
        # not a board that boots without its BMS.
        cal = None
        if calibration:
            from .calibration import read_canonical

            cal, _, text = read_canonical(calibration, cells)
            with open(calibration, "rb") as f:
                reformatted = f.read() != text.encode()
            if reformatted:   # re-indented by a JSON tool: the board reads the canonical form
                self._cal_tmp = tempfile.TemporaryDirectory(prefix="bms-sim-cal-")
                calibration = os.path.join(self._cal_tmp.name, os.path.basename(calibration))
                with open(calibration, "w", encoding="utf-8") as f:
                    f.write(text)
        if trace:
            from .traces import read_trace

            cols = read_trace(trace, required=("time_s", "current_a"), min_rows=2,
                              only=("voltage_v", "temperature_c", "ambient_c"))
            if not allow_implausible:
                plausible.check(cols, cal or sample_calibration(), trace)
            if age and "voltage_v" in cols and "temperature_c" in cols:
                raise UserError("--age ages the model cell, but %s records its cell's voltage "
                                "and temperature, which the board plays as they are; give "
                                "a trace without them, or one recorded on an aged cell "
                                "(data/lgm50_aged*/)" % trace)
        if flash is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bms-sim-flash-")
            flash = self._tmp.name
        os.makedirs(flash, exist_ok=True)
        self.flash = os.path.abspath(flash)
        self.trace = os.path.abspath(trace) if trace else None
        self.calibration = os.path.abspath(calibration) if calibration else None
        self.cells = cells
        self.soc = soc
        self.mqtt = mqtt
        self.device_id = device_id
        self.period_s = period_s
        self.age = age
        self.charger_cv = charger_cv
        self.proc = None
        self._out = None   # the thread that copies the interpreter's output to the port
        self.boots = 0
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)

    def _env(self):
        env = micropython_env()
        env["BMS_SIM_CELLS"] = str(self.cells)
        env["BMS_SIM_SOC"] = repr(self.soc)
        env["BMS_SIM_ID"] = self.device_id
        if self.period_s is not None:
            env["BMS_SIM_PERIOD"] = repr(float(self.period_s))
        if self.mqtt:
            env["BMS_SIM_MQTT"] = self.mqtt
        if self.age:
            env["BMS_SIM_AGE"] = self.age
        if self.charger_cv is not None:
            env["BMS_SIM_CV"] = repr(float(self.charger_cv))
        if self.trace:
            env["BMS_SIM_TRACE"] = self.trace
        if self.calibration:
            env["BMS_SIM_CALIBRATION"] = self.calibration
        return env

    def _drain(self):
        """Drop what the host sent to the dead interpreter (a stray Ctrl-D from an
        interrupted command would end the next one at its first prompt)."""
        os.set_blocking(self.master, False)
        try:
            while os.read(self.master, 4096):
                pass
        except OSError:
            pass
        finally:
            os.set_blocking(self.master, True)

    def boot(self):
        """(Re)start the interpreter: the board powering up."""
        self._drain()
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [micropython_binary(), "-X", "heapsize=%s" % HEAP, "-i", "-c",
                 "import sim.boot"],
                stdin=self.master, stdout=w, stderr=w,
                cwd=self.flash, env=self._env(), close_fds=True, start_new_session=True)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self._out = threading.Thread(target=_console_out, args=(r, self.master), daemon=True)
        self._out.start()
        self.boots += 1
        return self.proc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """Pull the power: SIGKILL, no clean-up on the device."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def wait_ready(self, timeout=20.0):
        """Wait until the REPL answers (mpremote can connect)."""
        from .device import Device

        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if not self.alive():
                raise UserError("the simulated device exited at boot (exit %s)"
                                % self.proc.returncode)
            try:
                with Device(self.port, timeout=2.0) as d:
                    if d.eval("1+1") == 2:
                        return
            except UserError as e:
                last = e
            time.sleep(0.2)
        raise UserError("the simulated device did not answer within %g s: %s" % (timeout, last))

    def boot_error(self):
        """None when the BMS runs on the booted device, else one sentence saying why not."""
        from .device import Device

        code = ("import sys, bms\n"
                "b = sys.modules.get('sim.boot')\n"
                "r = b.error if b else 'its boot script did not run'\n"
                "if r is None and bms.app is None:\n r = 'bms.start was not reached'\n"
                "if r is None and %r and bms.app.store.cal is None:\n"
                " r = 'its calibration was refused (%%s)' %% bms.app.store.note\n"
                "print(repr(r))" % bool(self.calibration))
        with Device(self.port, timeout=5.0) as d:
            return _literal(d.exec(code))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._out is not None:
            self._out.join(timeout=2.0)   # its last output reaches the port before it closes
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1
        for tmp in (self._tmp, self._cal_tmp):
            if tmp is not None:
                tmp.cleanup()
        self._tmp = self._cal_tmp = None

    def __enter__(self):
        self.boot()
        return self

    def __exit__(self, *exc):
        self.stop()


def check_age(text):
    """--age as the board takes it ("0.87" or "0.87:1.3"), or None; one sentence when bad."""
    if text is None or text == "":
        return None
    parts = str(text).split(":")
    try:
        vals = [float(x) for x in parts]
    except ValueError:
        vals = []
    if not 1 <= len(vals) <= 2 or not 0.3 <= vals[0] <= 1.0 \
            or (len(vals) == 2 and not 1.0 <= vals[1] <= 5.0):
        raise UserError("--age is a capacity retention from 0.3 to 1, optionally with a "
                        "resistance growth from 1 to 5: e.g. 0.87 or 0.87:1.3; got %r" % text)
    return ":".join(repr(v) for v in vals)


def _literal(text):
    import ast

    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip() or "no answer"


def _console_out(r, master):
    """Copy the interpreter's output to the port with each bare LF made CR LF, until the
    interpreter exits (end of pipe) or the port is closed."""
    last = b""
    try:
        while True:
            data = os.read(r, 4096)
            if not data:
                break
            out = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            if last == b"\r" and data[:1] == b"\n":
                out = out[1:]   # the CR of this CR LF came at the end of the last chunk
            last = data[-1:]
            while out:
                out = out[os.write(master, out):]
    except OSError:
        pass
    finally:
        os.close(r)


def run(args):
    if args.mqtt and ":" not in args.mqtt:
        raise UserError("--mqtt wants HOST:PORT, e.g. 127.0.0.1:1883")
    sim = SimDevice(args.trace, args.calibration, args.cells, args.flash, args.soc, args.mqtt,
                    args.device_id, args.period, getattr(args, "allow_implausible", False),
                    args.age, args.charger_cv)
    stopping = []

    def _stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sim.boot()
        sim.wait_ready()
        why = sim.boot_error()
        if why:
            raise UserError("the simulated board booted but its BMS did not start: %s" % why)
        if stopping:
            return 130
        print("port: %s" % sim.port, flush=True)
        print("flash: %s" % sim.flash, flush=True)
        while not stopping:
            time.sleep(0.1)
            if not sim.alive():  # soft reset or crash: the board reboots
                print("device exited (%s); rebooting" % sim.proc.returncode, file=sys.stderr,
                      flush=True)
                sim.boot()
    finally:
        sim.stop()
    return 0
