"""The Raspberry Pi Pico firmware in the rp2040js emulator, driven over its REPL.

tools/rp2040/run.mjs (our runner, rp2040js pinned in tools/rp2040/package.json) loads
firmware.bin and the RP2040 boot ROM and bridges the Pico's USB serial to its
stdin/stdout. This side speaks mpremote's raw-REPL protocol over those two pipes: Ctrl-A
enters it, code then Ctrl-D runs it, and the Pico answers `OK`, the output, Ctrl-D, the
error text, Ctrl-D, `>`. Time inside the firmware (time.ticks_us) is emulated RP2040
cycles at 125 MHz; host wall time says nothing about the Pico's speed.

    with Pico(firmware.build_rp2()) as pico:
        print(pico.exec("import bms; print(bms.__version__)"))
"""
import os
import select
import shutil
import subprocess
import time

from . import REPO, UserError, firmware

RUNNER_DIR = REPO / "tools" / "rp2040"
LOG = firmware.BUILD / "rp2040js.log"
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"


class NodeMissing(UserError):
    """No Node.js/npm: the emulator tests skip with this one sentence."""


class PicoError(UserError):
    """The Pico raised (the traceback is the message) or stopped answering."""


def node():
    """The node binary, with the runner's npm dependencies installed (npm ci, once)."""
    exe, npm = shutil.which("node"), shutil.which("npm")
    if not exe or not npm:
        raise NodeMissing("the emulated Pico needs Node.js 18+ and npm (rp2040js): "
                          "run `make apt` or install the nodejs and npm packages")
    if not (RUNNER_DIR / "node_modules" / "rp2040js").is_dir():
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=RUNNER_DIR,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError("`npm ci` in %s failed (offline, or no access to the npm "
                            "registry?):\n%s" % (RUNNER_DIR, (r.stdout + r.stderr)[-2000:]))
    return exe


def bootrom():
    path = firmware.vendor_dir() / "rp2" / "bootrom_b1.bin"
    if not path.exists():
        raise firmware.Unavailable("no RP2040 boot ROM image (%s): the emulated Pico "
                                   "needs ../shared/vendor/rp2" % path)
    return path


class Pico:
    """One emulated Pico, booted to the raw REPL. Closing it stops the emulator."""

    def __init__(self, firmware_bin, boot_timeout=60.0):
        exe = node()
        rom = bootrom()
        LOG.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(LOG, "w")
        t0 = time.monotonic()
        self.p = subprocess.Popen([exe, str(RUNNER_DIR / "run.mjs"), str(firmware_bin),
                                   str(rom)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self._log, cwd=RUNNER_DIR)
        self._buf = b""
        try:
            # Ctrl-A waits in the Pico's USB buffer until its REPL starts reading.
            self._send(b"\r\x01")
            self._read_until(RAW_PROMPT, boot_timeout, "booting to the raw REPL")
        except BaseException:
            self.close()
            raise
        self.boot_s = time.monotonic() - t0   # host seconds, for the reports

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        p = getattr(self, "p", None)
        if p is None:
            return
        self.p = None
        try:
            p.stdin.close()   # the runner stops when its stdin ends
        except OSError:
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()
        self._log.close()

    def _send(self, data):
        try:
            self.p.stdin.write(data)
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            raise PicoError(self._dead("while sending")) from None

    def _dead(self, doing):
        self.p.poll()
        self._log.flush()
        tail = LOG.read_text()[-1500:] if LOG.exists() else ""
        return ("the emulator stopped (exit %s) %s: %s" % (self.p.returncode, doing,
                                                           tail.strip() or "no message"))

    def _read_until(self, ending, timeout, doing):
        """Bytes up to and including `ending`; what follows stays buffered."""
        fd = self.p.stdout.fileno()
        deadline = time.monotonic() + timeout
        while ending not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PicoError("the emulated Pico did not answer within %g s %s; it last "
                                "sent %r" % (timeout, doing, self._buf[-300:]))
            if select.select([fd], [], [], min(left, 1.0))[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise PicoError(self._dead(doing))
                self._buf += chunk
        k = self._buf.index(ending) + len(ending)
        out, self._buf = self._buf[:k], self._buf[k:]
        return out

    def exec(self, code, timeout=600.0):
        """Run code on the Pico; returns what it printed. A Python exception on the Pico
        raises PicoError with its traceback."""
        if isinstance(code, str):
            code = code.encode()
        self._send(code + b"\x04")
        ok = self._read_until(b"OK", 30, "accepting the code")
        if not ok.endswith(b"OK") or len(ok) != 2:
            raise PicoError("the Pico refused the code: %r" % ok[-200:])
        out = self._read_until(b"\x04", timeout, "running the code")[:-1]
        err = self._read_until(b"\x04", 30, "reporting errors")[:-1]
        self._read_until(b">", 30, "returning to the prompt")
        if err:
            raise PicoError("the Pico raised:\n%s" % err.decode(errors="replace").strip())
        return out.decode(errors="replace")
