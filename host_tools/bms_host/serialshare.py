"""One device console, two users: telemetry records and a REPL client (exec, push, mpremote).

A board prints a telemetry record as "\\x1eTEL {...}\\n" at any moment, also in the middle of
mpremote's raw-REPL exchange. While `bms-host record --port P` (or `monitor --port P`)
holds the port, it lifts those records out of the byte stream and passes everything else
to a pseudo-terminal it opens; `bms-host exec|push --port P` find that terminal through a
small registry file and talk to the REPL through it (clean of records), and so can
`mpremote connect /dev/pts/N` with the path record prints."""
import errno
import hashlib
import json
import os
import select
import tempfile
import time
import tty

from . import UserError

START = b"\x1e"
MARK = b"TEL "
MAX_RECORD = 1 << 16   # a frame longer than this is not a record: passed on as it came


class TelSplitter:
    """Split a console byte stream into REPL bytes and telemetry records."""

    def __init__(self):
        self._hold = b""   # from a START byte whose frame is not complete yet

    def feed(self, data):
        """(bytes for the REPL client, [record payloads]) for the next chunk of input."""
        buf = self._hold + data
        self._hold = b""
        out = bytearray()
        recs = []
        i = 0
        n = len(buf)
        while i < n:
            j = buf.find(START, i)
            if j < 0:
                out += buf[i:]
                break
            out += buf[i:j]
            head = buf[j + 1:j + 1 + len(MARK)]
            if head != MARK[:len(head)]:           # a lone separator: not ours
                out += START
                i = j + 1
                continue
            k = buf.find(b"\n", j) if len(head) == len(MARK) else -1
            if k < 0:
                if n - j > MAX_RECORD:             # never ends: give it back
                    out += buf[j:]
                else:
                    self._hold = buf[j:]
                break
            recs.append(bytes(buf[j + 1 + len(MARK):k]).rstrip(b"\r"))
            i = k + 1
        return bytes(out), recs


class FilteredSerial:
    """A pyserial port with telemetry records taken out of what it reads: given to
    mpremote's transport so that a record printed by the board in the middle of a raw-REPL
    exchange neither breaks the exchange nor ends up in a command's output."""

    def __init__(self, s):
        self.s = s
        self.split = TelSplitter()
        self.buf = b""

    def _pull(self, n):
        chunk = self.s.read(max(n, self.s.in_waiting))
        if chunk:
            self.buf += self.split.feed(chunk)[0]
        return bool(chunk)

    def read(self, n=1):
        while len(self.buf) < n and self._pull(n - len(self.buf)):
            pass
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def inWaiting(self):
        if self.s.in_waiting:
            self._pull(1)
        return len(self.buf)

    @property
    def in_waiting(self):
        return self.inWaiting()

    def __getattr__(self, name):   # write, close, dtr, rts, ... as the port has them
        return getattr(self.s, name)

    def __setattr__(self, name, value):
        if name in ("s", "split", "buf"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.s, name, value)


# ---- the registry: which pseudo-terminal shares which port

def _registry_dir():
    return os.path.join(tempfile.gettempdir(), "bms-host-shares-%d" % os.getuid())


def _entry(port):
    key = hashlib.sha256(os.path.realpath(port).encode()).hexdigest()[:16]
    return os.path.join(_registry_dir(), key + ".json")


def register(port, share_path):
    d = _registry_dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = _entry(port)
    tmp = path + ".%d.tmp" % os.getpid()
    with open(tmp, "w") as f:
        json.dump({"port": os.path.realpath(port), "share": share_path, "pid": os.getpid()}, f)
    os.replace(tmp, path)


def unregister(port):
    try:
        with open(_entry(port)) as f:
            if json.load(f).get("pid") != os.getpid():
                return
        os.remove(_entry(port))
    except (OSError, ValueError):
        pass


def resolve(port):
    """The pseudo-terminal that shares `port` while a recorder holds it, else `port`."""
    if not port or port.startswith(("socket://", "rfc2217://")):
        return port
    try:
        with open(_entry(port)) as f:
            e = json.load(f)
        os.kill(int(e["pid"]), 0)   # the recorder is still running
    except (OSError, ValueError, KeyError, TypeError):
        return port
    share = e.get("share")
    return share if isinstance(share, str) and os.path.exists(share) else port


class SharedConsole:
    """The pseudo-terminal side of a shared port: REPL bytes out, client bytes in."""

    def __init__(self, port):
        self.port = port
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)      # the client gets the device's bytes unchanged
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        register(port, self.path)

    def to_client(self, data):
        """Pass REPL bytes on; dropped when nobody reads and the terminal is full."""
        try:
            os.write(self.master, data)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EIO):
                raise

    def from_client(self):
        try:
            return os.read(self.master, 4096)
        except OSError:
            return b""

    def close(self):
        unregister(self.port)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1


def wait_readable(fds, timeout):
    fds = [f for f in fds if f is not None and f >= 0]
    if not fds:
        time.sleep(timeout)
        return []
    try:
        return select.select(fds, [], [], timeout)[0]
    except (OSError, ValueError):
        return []


def open_error(port, e):
    return UserError("cannot open serial port %s (%s): check the port name (bms-host sim "
                     "prints it) and that nothing else holds it" % (port, e))
