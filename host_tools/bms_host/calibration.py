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


def read_calibration(path):
    """(calibration dict, checksum hex) of a file; UserError with the validator's sentence."""
    calfile = _calfile()
    path = str(path)
    if not os.path.isfile(path):
        raise UserError("calibration file %s does not exist" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("cannot read calibration %s (%s)" % (path, e.__class__.__name__)) \
            from None
    try:
        return calfile.loads(text)
    except calfile.CalibrationError as e:
        raise UserError("%s (%s)" % (e, path)) from None
