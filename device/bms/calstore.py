# Calibration store on flash. A new calibration is accepted only when schema, checksum,
# cell count and hard limits pass (calfile.loads), then swapped in by renames so that a
# power cut at any moment leaves the old or the new file intact:
#   incoming (any state) -> validated -> staged.json (written, then renamed) ->
#   active.json becomes previous.json, staged.json becomes active.json.
# At boot: active.json if valid, else previous.json, else staged.json, else none.
# An upload (bms-host push writes cal/upload.json, then asks for install_file) never stays
# on flash: install_file removes it whatever happens, one larger than calfile.MAX_BYTES is
# refused before it is read, and one left by an upload cut short is removed at boot.
import os

from bms import calfile

DIR = "cal"
ACTIVE = DIR + "/active.json"
PREVIOUS = DIR + "/previous.json"
STAGED = DIR + "/staged.json"
TMP = DIR + "/staged.tmp"
UPLOAD = DIR + "/upload.json"


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _read(path):
    with open(path) as f:
        return f.read()


class CalStore:
    def __init__(self, series_cells, root=""):
        self.series_cells = series_cells
        self.root = root
        self.cal = None
        self.checksum = None
        self.source = None
        self.note = None  # one sentence about what boot found, if anything was wrong

    def _p(self, path):
        return self.root + path if self.root else path

    def load(self):
        """Boot: the newest intact calibration. Returns True when one is active."""
        _remove(self._p(UPLOAD))
        notes = []
        for path in (ACTIVE, PREVIOUS, STAGED):
            full = self._p(path)
            if not _exists(full):
                continue
            try:
                self.cal, self.checksum = calfile.loads(_read(full), self.series_cells)
                calfile.compact(self.cal)
            except (calfile.CalibrationError, OSError, ValueError) as e:
                notes.append("%s unusable (%s)" % (path, e))
                continue
            self.source = path
            if path != ACTIVE:
                # Finish the interrupted swap: make what we use the active file again.
                try:
                    if _exists(self._p(ACTIVE)):
                        os.remove(self._p(ACTIVE))
                    os.rename(full, self._p(ACTIVE))
                    self.source = ACTIVE
                except OSError:
                    pass
            self.note = "; ".join(notes) if notes else None
            _remove(self._p(TMP))
            return True
        self.note = "; ".join(notes) if notes else "no calibration stored"
        return False

    def install_text(self, text):
        """Validate and store a calibration; raises CalibrationError (old one stays)."""
        cal, checksum = calfile.loads(text, self.series_cells)
        calfile.compact(cal)
        try:
            os.mkdir(self._p(DIR))
        except OSError:
            pass  # there already
        tmp = self._p(TMP)
        with open(tmp, "w") as f:
            f.write(text)
        # Read back what reached the flash before trusting it.
        if calfile.split(_read(tmp))[0] != checksum:
            _remove(tmp)
            raise calfile.CalibrationError("calibration: flash write did not read back "
                                           "intact; the old calibration stays active")
        _remove(self._p(STAGED))
        os.rename(tmp, self._p(STAGED))
        if _exists(self._p(ACTIVE)):
            _remove(self._p(PREVIOUS))
            os.rename(self._p(ACTIVE), self._p(PREVIOUS))
        os.rename(self._p(STAGED), self._p(ACTIVE))
        self.cal, self.checksum, self.source = cal, checksum, ACTIVE
        return checksum

    def use(self, cal, checksum=None, note=None):
        """Run on a calibration held in memory (a board without writable flash, a test);
        nothing is stored."""
        self.cal, self.checksum, self.source, self.note = calfile.compact(cal), checksum, \
            "memory", note

    def install_file(self, path):
        """Install from a file (e.g. uploaded by bms-host push); the upload is removed."""
        full = path if path.startswith("/") else self._p(path)
        try:
            try:
                size = os.stat(full)[6]
            except OSError:
                raise calfile.CalibrationError("calibration: uploaded file %s is missing"
                                               % path)
            if size > calfile.MAX_BYTES:
                raise calfile.CalibrationError(
                    "calibration: uploaded file is %d bytes, more than the %d this board "
                    "takes; the old calibration stays active" % (size, calfile.MAX_BYTES))
            try:
                text = _read(full)
                return self.install_text(text)
            except MemoryError:
                raise calfile.CalibrationError("calibration: not enough memory to check the "
                                               "upload; the old calibration stays active")
        finally:
            _remove(full)
