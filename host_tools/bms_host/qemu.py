"""The device code on a bare-metal Cortex-M3: the qemu firmware (firmware.build_qemu:
MPS2_AN385, soft float, ulab, bms_native, device code frozen) under qemu-system-arm, its
UART on a pty, driven through mpremote's raw REPL.

`-icount shift=0` makes the emulated clock follow executed instructions, so time.ticks_us()
on the board counts work, not the host's load.

The board has no writable filesystem (only an optional read-only ROMFS), so the runner
mounts a small RAM filesystem at "/" first: the device tests' sources and helpers are
sent into it and imported from there (compiled on the board, like code copied to a board
with mpremote), and what the tests write (fault log, calibration store, /tmp files) lands
there too. The board's own code (bms, drivers) stays the frozen one.

    python -m bms_host.qemu [test_module ...]     # prints the PASS/FAIL lines
"""
import binascii
import re
import subprocess
import sys
import time
import zlib

from . import BOARDS_DIR, REPO

QEMU = "qemu-system-arm"
DEVICE_TESTS = REPO / "tests" / "device"

# Sent to the board before anything else. Whole files live in a dict (bytes); a read
# returns an io.BytesIO/StringIO, a native stream, so `import` can read from it too.
RAMFS = r'''
import io, sys, vfs

class _Writer:
    def __init__(self, fs, path, data):
        self.fs, self.path, self.parts = fs, path, [data]
    def write(self, s):
        self.parts.append(s if isinstance(s, bytes) else s.encode())
        return len(s)
    def flush(self):
        pass
    def close(self):
        if self.parts is not None:
            self.fs.files[self.path] = b"".join(self.parts)
            self.parts = None
    def __enter__(self):
        return self
    def __exit__(self, *a):
        self.close()

class RamFS:
    def __init__(self):
        self.files, self.dirs, self.cwd = {}, {""}, ""
    def mount(self, readonly, mkfs):
        pass
    def umount(self):
        pass
    def _p(self, path):
        parts = [] if path.startswith("/") else self.cwd.split("/")
        for c in path.split("/"):
            if c == "..":
                parts = parts[:-1]
            elif c and c != ".":
                parts.append(c)
        return "/".join(c for c in parts if c)
    def _parent(self, p):
        if p.rpartition("/")[0] not in self.dirs:
            raise OSError(2)
    def stat(self, path):
        p = self._p(path)
        if p in self.dirs:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if p in self.files:
            return (0x8000, 0, 0, 0, 0, 0, len(self.files[p]), 0, 0, 0)
        raise OSError(2)
    def open(self, path, mode):
        p = self._p(path)
        if "r" in mode:
            if p not in self.files:
                raise OSError(2)
            d = self.files[p]
            return io.BytesIO(d) if "b" in mode else io.StringIO(d.decode())
        self._parent(p)
        if p in self.dirs:
            raise OSError(21)
        return _Writer(self, p, self.files.get(p, b"") if "a" in mode else b"")
    def remove(self, path):
        p = self._p(path)
        if p not in self.files:
            raise OSError(2)
        del self.files[p]
    def rename(self, old, new):
        o, n = self._p(old), self._p(new)
        if o not in self.files:
            raise OSError(2)
        self._parent(n)
        self.files[n] = self.files.pop(o)   # replaces like littlefs does
    def mkdir(self, path):
        p = self._p(path)
        if p in self.dirs or p in self.files:
            raise OSError(17)
        self._parent(p)
        self.dirs.add(p)
    def rmdir(self, path):
        p = self._p(path)
        if p not in self.dirs or any(k.startswith(p + "/") for k in self.files):
            raise OSError(2)
        self.dirs.remove(p)
    def ilistdir(self, path):
        p = self._p(path)
        pre = p + "/" if p else ""
        for k in list(self.dirs) + list(self.files):
            if k and k.startswith(pre) and "/" not in k[len(pre):]:
                yield (k[len(pre):], 0x4000 if k in self.dirs else 0x8000, 0)
    def chdir(self, path):
        p = self._p(path)
        if p not in self.dirs:
            raise OSError(2)
        self.cwd = p
    def getcwd(self):
        return "/" + self.cwd
    def statvfs(self, path):
        return (512, 512, 1024, 1024, 1024, 0, 0, 0, 0, 255)

_fs = RamFS()
vfs.mount(_fs, "/")
_fs.dirs.add("tmp")

def _put(path, data):
    d = path.rpartition("/")[0]
    if d:
        _fs.dirs.add(d)
    _fs.files[path] = data

def _unpack(b64):
    # "<size> <path>\n<bytes>" records, zlib-compressed (see send_files)
    import binascii, deflate
    z = deflate.DeflateIO(io.BytesIO(binascii.a2b_base64(b64)), deflate.ZLIB)
    while True:
        head = z.readline()
        if not head:
            break
        n, path = head.split()
        _put(path.decode(), z.read(int(n)))
'''


def _files_for(module):
    """(path on the board, local file) for one test module and the helpers it may import."""
    # the runner and every helper module of the device tests (calsample, scratch, ...)
    out = [(p.name, p) for p in sorted(DEVICE_TESTS.glob("*.py"))
           if not p.name.startswith("test_")]
    out += [("pico/board.py", BOARDS_DIR / "pico" / "board.py"),
            ("esp32/board.py", BOARDS_DIR / "esp32" / "board.py")]
    out += [("sim/" + p.name, p) for p in sorted((BOARDS_DIR / "sim").glob("*.py"))]
    src = DEVICE_TESTS / (module + ".py")
    out.append((module + ".py", src))
    # the repository's calibrations the module opens (as "calibration/<name>.json", the
    # path they have from the repository's root, the host runs' working directory)
    for name in sorted(set(re.findall(r"calibration/(\w+)\.json", src.read_text()))):
        out.append(("calibration/%s.json" % name, REPO / "calibration" / (name + ".json")))
    return out


def send_files(board, files):
    """Put (path on the board, local file) pairs into the board's RAM filesystem. The
    UART moves about 15 KB/s; compressed, the ~38 KB a test module needs take 0.8 s
    instead of 2.5-4.5 s."""
    blob = b"".join(b"%d %s\n" % (len(data), dest.encode()) + data
                    for dest, data in ((d, src.read_bytes()) for d, src in files))
    b64 = binascii.b2a_base64(zlib.compress(blob, 9), newline=False)
    _check(*board.exec("_unpack(%r)" % b64), "sending the test sources")


class QemuBoard:
    """One qemu-system-arm running the firmware, its UART on a pty, in the raw REPL."""

    def __init__(self, firmware):
        self.firmware = str(firmware)
        self.proc = None
        self.transport = None

    def start(self):
        from mpremote.transport_serial import SerialTransport

        try:
            self.proc = subprocess.Popen(
                [QEMU, "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                 "-semihosting", "-icount", "shift=0", "-serial", "pty",
                 "-kernel", self.firmware],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except FileNotFoundError:
            raise RuntimeError("%s is missing: install Debian's qemu-system-arm "
                               "(tools/apt-deps.sh)" % QEMU) from None
        line = self.proc.stdout.readline()    # "char device redirected to /dev/pts/N ..."
        m = re.search(r"(/dev/pts/\d+)", line)
        if not m:
            self.close()
            raise RuntimeError("qemu did not start its serial pty: %s" % line.strip())
        self.transport = SerialTransport(m.group(1), baudrate=115200)
        # Never soft-reset on entry: the freshly booted board is already clean.
        self.transport.enter_raw_repl(soft_reset=False)
        return self

    def exec(self, code, timeout=60):
        """Run code in the raw REPL; (stdout, stderr) as text. timeout: seconds of silence."""
        out, err = self.transport.exec_raw(code, timeout=timeout)
        return out.decode(errors="replace"), err.decode(errors="replace")

    def close(self):
        if self.transport:
            try:
                self.transport.close()
            except Exception:
                pass
            self.transport = None
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def _check(out, err, what):
    if err:
        raise RuntimeError("%s failed on the qemu board:\n%s%s" % (what, out, err))


def run_module(firmware, module, timeout=120):
    """Run one device test module (tests/device/<module>.py) on a freshly booted qemu
    board; returns mpy_runner's output: PASS/FAIL ... ENDFAIL lines, then END.
    A fresh machine per module (as the unix port gets a fresh process): a boot costs
    0.1 s, and no module sees another's imports, monkeypatches or files."""
    with QemuBoard(firmware) as board:
        _check(*board.exec(RAMFS), "mounting the RAM filesystem")
        send_files(board, _files_for(module))
        out, err = board.exec("import mpy_runner\nmpy_runner.main(%r)\n" % module,
                              timeout=timeout)
        return out + err


def main(argv=None):
    from . import firmware

    argv = sys.argv[1:] if argv is None else argv
    try:
        fw = firmware.build_qemu()
    except (firmware.Unavailable, RuntimeError) as e:
        print("qemu: %s" % e, file=sys.stderr)
        return 1
    mods = argv or sorted(p.stem for p in DEVICE_TESTS.glob("test_*.py"))
    for m in mods:
        if not (DEVICE_TESTS / (m + ".py")).exists():
            print("qemu: there is no tests/device/%s.py" % m, file=sys.stderr)
            return 2
    ok = True
    for m in mods:
        t0 = time.monotonic()
        out = run_module(fw, m)
        print(out.rstrip())
        print("# %s: %.1f s" % (m, time.monotonic() - t0))
        ok = ok and "\nFAIL " not in "\n" + out and out.rstrip().endswith("END")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
