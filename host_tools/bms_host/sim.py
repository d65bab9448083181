"""bms-host sim: the simulated device, a real MicroPython on a pseudo-terminal.

MicroPython (the unix port) runs the device code and boards/sim with the pty's master
side as its console; the slave side is the "serial port" handed to mpremote. When the
interpreter exits (a soft reset ends the unix port, or a test kills it) it is started
again on the same port, as a board reboots; its flash is a folder that outlives it."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import tty

from . import UserError
from .mpy import micropython_binary, micropython_env

HEAP = "16M"  # room for a long drive cycle; a board has far less, but no trace
HELP = "run the simulated device on a pseudo-terminal (prints `port: /dev/pts/N`)"


def configure(p):
    p.add_argument("--trace", help="trace CSV the simulated board plays (current, ambient)")
    p.add_argument("--calibration", help="calibration JSON installed at first boot")
    p.add_argument("--cells", type=int, default=1, help="cells in series (1..16)")
    p.add_argument("--soc", type=float, default=0.8,
                   help="initial SOC of the simulated cells (ECM plant mode)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="publish telemetry to this broker")
    p.add_argument("--device-id", default="sim", help="device id in telemetry")
    p.add_argument("--period", type=float, default=5.0, help="telemetry period, seconds")
    p.add_argument("--flash", help="folder that plays the board's flash (kept across runs); "
                   "default: a temporary folder removed on exit")


class SimDevice:
    """Start/stop the simulated device from Python (tests, demo)."""

    def __init__(self, trace=None, calibration=None, cells=1, flash=None, soc=0.8,
                 mqtt=None, device_id="sim", period_s=5.0):
        for path, what in ((trace, "trace"), (calibration, "calibration")):
            if path and not os.path.isfile(path):
                raise UserError("%s file %s does not exist" % (what, path))
        if not 1 <= cells <= 16:
            raise UserError("--cells must be between 1 and 16, got %d" % cells)
        self._tmp = None
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
        self.proc = None
        self.boots = 0
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)

    def _env(self):
        env = micropython_env()
        env["BMS_SIM_CELLS"] = str(self.cells)
        env["BMS_SIM_SOC"] = repr(self.soc)
        if self.mqtt:
            env["BMS_SIM_MQTT"] = self.mqtt
            env["BMS_SIM_ID"] = self.device_id
            env["BMS_SIM_PERIOD"] = repr(self.period_s)
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
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", "heapsize=%s" % HEAP, "-i", "-c", "import sim.boot"],
            stdin=self.master, stdout=self.master, stderr=self.master,
            cwd=self.flash, env=self._env(), close_fds=True, start_new_session=True)
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

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        self.boot()
        return self

    def __exit__(self, *exc):
        self.stop()


def run(args):
    if args.mqtt and ":" not in args.mqtt:
        raise UserError("--mqtt wants HOST:PORT, e.g. 127.0.0.1:1883")
    sim = SimDevice(args.trace, args.calibration, args.cells, args.flash, args.soc, args.mqtt,
                    args.device_id, args.period)
    stopping = []

    def _stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sim.boot()
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
