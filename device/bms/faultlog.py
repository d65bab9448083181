# Fault events (code, boot, timestamp_ms, value) in a fixed-size ring, persisted to a small
# JSON file by write-temp-then-rename so a power cut leaves the old or the new file, never
# half. timestamp_ms counts from boot; boot numbers the boots (the stored count + 1 at each
# load), so events of different boots can be told apart and ordered.
import json
import os

_NAN = float("nan")


class FaultLog:
    """append() is cheap and never touches flash; call save() from a slow task."""

    def __init__(self, path=None, capacity=64):
        if capacity < 1:
            raise ValueError("fault log: capacity must be at least 1")
        self.path = path
        self.capacity = capacity
        self._code = [""] * capacity
        self._b = [0] * capacity
        self._t = [0] * capacity
        self._v = [0.0] * capacity
        self._head = 0       # next slot to write
        self._n = 0
        self.total = 0       # events ever appended, including overwritten ones
        self.dirty = False
        self.note = None     # one sentence when the stored log could not be used
        self.boot = 1        # this boot's number
        if path is not None:
            self.load()
            self.boot += 1   # a new boot: saved with the next save()
            self.dirty = True

    def __len__(self):
        return self._n

    def append(self, code, timestamp_ms, value=0, boot=None):
        k = self._head
        self._code[k] = code
        self._b[k] = self.boot if boot is None else boot
        self._t[k] = timestamp_ms
        self._v[k] = value
        self._head = (k + 1) % self.capacity
        if self._n < self.capacity:
            self._n += 1
        self.total += 1
        self.dirty = True

    def events(self):
        """List of (code, boot, timestamp_ms, value), oldest first."""
        out = []
        start = (self._head - self._n) % self.capacity
        for j in range(self._n):
            k = (start + j) % self.capacity
            out.append((self._code[k], self._b[k], self._t[k], self._v[k]))
        return out

    def last(self):
        if not self._n:
            return None
        k = (self._head - 1) % self.capacity
        return (self._code[k], self._b[k], self._t[k], self._v[k])

    def clear(self):
        self._head = 0
        self._n = 0
        self.dirty = True

    def save(self, path=None):
        path = path or self.path
        if path is None:
            raise ValueError("fault log: no file path given to save to")
        ev = []
        for code, b, t, v in self.events():
            if v != v:
                v = None   # JSON has no NaN
            ev.append([code, b, t, v])
        text = json.dumps({"version": 2, "boot": self.boot, "total": self.total,
                           "events": ev})
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
        self.dirty = False

    def load(self, path=None):
        """Load the stored events and boot count; a missing file is an empty log, a
        corrupt one starts empty with self.note explaining it. Version 1 files (no boot
        numbers) load as boot 0."""
        path = path or self.path
        self._head = 0
        self._n = 0
        self.total = 0
        self.boot = 0
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return   # first boot: nothing stored yet
        try:
            d = json.loads(data.decode())
            ev = d["events"]
            total = int(d.get("total", len(ev)))
            boot = int(d.get("boot", 0))
            rows = []
            for e in ev:
                if len(e) == 3:
                    code, t, v = e
                    b = 0
                else:
                    code, b, t, v = e
                if not isinstance(code, str):
                    raise ValueError
                rows.append((code, int(b), int(t), _NAN if v is None else float(v)))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, UnicodeError):
            self.note = ("fault log %s was unreadable (corrupt or from another version); "
                         "started an empty log" % path)
            self.dirty = True
            return
        for code, b, t, v in rows[-self.capacity:]:
            self.append(code, t, v, b)
        self.total = max(total, len(rows))
        self.boot = boot
        self.dirty = False
