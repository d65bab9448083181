"""Reading and writing calibration files (the device's format: checksum + canonical JSON).

The body is compact JSON with sorted keys (CANONICAL); the file text is
`calfile.encode(body)`, i.e. a SHA-256 checksum over those exact bytes in front. The same
validator (device/bms/calfile.py) runs here and on the board, and takes any body layout
(files written indented, before fit-4, load as they are). Compact, because the file is
pushed signed inside one MQTT message that a board takes whole into a 32 KB buffer: the
indented LG M50 calibration used 31.8 KB of it, compact 21 KB. Read it with
`python -m json.tool FILE`; the fit report shows the tables.
"""
import json
import os

from . import UserError, use_device_code


def _calfile():
    use_device_code()
    from bms import calfile
    return calfile


CANONICAL = {"sort_keys": True, "separators": (",", ":")}


def encode(body):
    """Canonical file text for a calibration dict."""
    calfile = _calfile()
    # No trailing newline: the checksum covers every byte after its own field.
    return calfile.encode(json.dumps(body, **CANONICAL))


def write_calibration(body, path):
    """Validate, then write atomically (temp file in the same folder, then os.replace).
    Returns the checksum."""
    calfile = _calfile()
    try:
        calfile.validate(body)
    except calfile.CalibrationError as e:
        raise UserError("refusing to write %s: %s" % (path, e)) from None
    text = encode(body)
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".%s.part" % os.path.basename(path))
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise UserError("cannot write calibration %s (%s)" % (path, e.strerror or e)) from None
    return calfile.split(text)[0]


def read_calibration(path, series_cells=None):
    """(calibration dict, checksum hex) of a file; UserError with the validator's sentence.
    A file reformatted by a JSON tool is read when its content is intact (see canonical)."""
    cal, checksum, _ = read_canonical(path, series_cells)
    return cal, checksum


def read_canonical(path, series_cells=None):
    """(calibration dict, checksum hex, canonical file text) of a calibration file."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError("calibration file %s does not exist" % path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError("cannot read calibration %s (%s)" % (path, e.strerror or e)) from None
    return canonical(data, path, series_cells)


class CalibrationFileError(UserError):
    """A calibration file that cannot be used; .reason is the sentence without the path."""

    def __init__(self, reason, path, binary=False):
        super().__init__("calibration %s: %s" % (path, reason))
        self.reason = reason
        self.binary = binary


def _reason(e):
    return str(e).replace("calibration: ", "", 1)


def canonical(data, path, series_cells=None):
    """Check a calibration file's bytes; returns (dict, checksum, canonical text).

    The checksum covers the canonical body, so the file is checked by its content, not its
    layout: one written by bms-host fit is taken as it is; one re-indented or re-ordered by
    a JSON tool (`python -m json.tool`) is parsed, its body re-serialised canonically and
    checked against its checksum field, and comes back in the canonical layout the board
    reads. Raises CalibrationFileError with one sentence."""
    calfile = _calfile()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise CalibrationFileError("the file holds binary data, not a calibration's JSON "
                                   "text", path, binary=True)
    try:
        cal, checksum = calfile.loads(text, series_cells)
        return cal, checksum, text
    except calfile.CalibrationError as e:
        first = e
    if text.startswith(calfile._HEAD):
        raise CalibrationFileError(_reason(first), path)
    try:
        doc = json.loads(text)
    except ValueError:
        raise CalibrationFileError("its JSON is cut short or malformed (truncated?)",
                                   path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("checksum"), str):
        raise CalibrationFileError("it has no checksum field: not written by bms-host fit",
                                   path)
    checksum = doc.pop("checksum")
    body = json.dumps(doc, **CANONICAL)
    if calfile.sha256_hex(body) != checksum:
        raise CalibrationFileError("checksum mismatch: its content differs from what "
                                   "bms-host fit wrote (edited or corrupted; regenerate it)",
                                   path)
    text = calfile.encode(body)
    try:
        cal, checksum = calfile.loads(text, series_cells)
    except calfile.CalibrationError as e:
        raise CalibrationFileError(_reason(e), path) from None
    return cal, checksum, text
