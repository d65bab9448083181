"""bms-host push: send a calibration to a board, verified by the board's read-back.

Upload to a staging file, then ask the device to validate and install it (atomic
renames on the device: a power cut leaves the old or the new calibration). The device
answers with the checksum it now runs, which must equal the file's.

The file is checked by its content, not its bytes: one re-indented by a JSON tool goes up
in the canonical layout its checksum covers. Its size is checked before anything is sent:
a board takes at most calfile.MAX_BYTES."""
import os

from . import UserError, use_device_code
from .device import Device, DeviceError

HELP = "push a calibration JSON to the board over mpremote and verify the read-back"
UPLOAD = "cal/upload.json"


def configure(p):
    p.add_argument("calibration", help="calibration JSON made by bms-host fit")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0 or /dev/pts/N")
    p.add_argument("--no-check", action="store_true",
                   help="send even if the local validator rejects it (the device still checks)")
    p.add_argument("--force", action="store_true",
                   help="send a refit calibration even though its own validation failed")


def _size_limit():
    use_device_code()
    from bms import calfile
    return calfile.MAX_BYTES


def local_checksum(path, check=True):
    """(bytes to upload, checksum they carry) for a calibration file; UserError with one
    sentence for a missing, oversized, binary or (when check) invalid file."""
    from .calibration import CalibrationFileError, canonical

    use_device_code()
    from bms import calfile

    if not os.path.isfile(path):
        raise UserError("calibration file %s does not exist" % path)
    limit = _size_limit()
    size = os.path.getsize(path)
    # a reformatted file may be larger than its content (indentation): read up to a
    # generous bound, then hold what goes up to the board's limit
    if size > 16 * limit:
        raise UserError("%s is %s, far more than the %d KB a board takes for a calibration "
                        "(the LG M50 one is 19 KB): is it the right file? Nothing was sent"
                        % (path, _human(size), limit // 1024))
    with open(path, "rb") as f:
        data = f.read()
    try:
        cal, checksum, text = canonical(data, path)
        payload = text.encode()
    except CalibrationFileError as e:
        if check or e.binary:  # binary: not worth an upload for the device's check
            raise UserError("%s is not a valid calibration: %s" % (path, e.reason)) from None
        payload = data
        try:
            checksum = calfile.split(data.decode())[0]
        except (UnicodeDecodeError, calfile.CalibrationError):
            checksum = None
    if len(payload) > limit:
        raise UserError("%s holds %s of calibration, more than the %d KB a board takes: "
                        "nothing was sent" % (path, _human(len(payload)), limit // 1024))
    return payload, checksum


def _human(n):
    return "%.1f MB" % (n / 1e6) if n >= 1e6 else "%d KB" % (n // 1024)


def push(port, path, check=True, force=False):
    """Returns the checksum the device runs. Raises UserError with one sentence."""
    data, checksum = local_checksum(path, check)
    if not force:
        refuse_failed_validation(path)
    with Device(port) as d:
        d.exec("import os\ntry:\n os.mkdir('cal')\nexcept OSError:\n pass")
        try:
            d.write_bytes(UPLOAD, data)
        except DeviceError:
            # an interrupted upload must not stay behind on the board's flash
            try:
                d.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass" % UPLOAD)
            except DeviceError:
                pass
            raise
        try:
            got = d.eval("__import__('bms').app.install_calibration(%r)" % UPLOAD)
        except DeviceError as e:
            why = str(e).split("CalibrationError: ", 1)[-1]
            raise UserError("the device rejected %s (its old calibration stays active): %s"
                            % (path, why)) from None
        running = d.eval("__import__('bms').app.store.checksum")
    if got != checksum or running != checksum:
        raise UserError("read-back differs: the device runs calibration %s, the file is %s"
                        % (str(running)[:12], str(checksum)[:12]))
    return checksum


def run(args):
    checksum = push(args.port, args.calibration, check=not args.no_check,
                    force=getattr(args, "force", False))
    print("pushed %s: device runs calibration %s" % (args.calibration, checksum[:16]))
    return 0


def refuse_failed_validation(path):
    """UserError when the file is a refit whose own validation on held-back records
    failed (provenance.refit.validation.passed false, written by bms-host fit --from-db)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            cal = json.load(f)
        val = cal["provenance"]["refit"]["validation"]
    except (OSError, ValueError, KeyError, TypeError):
        return   # not a refit, or no validation recorded: nothing to hold it back
    if isinstance(val, dict) and val.get("passed") is False:
        raise UserError("%s failed its own validation (%s): nothing was sent; push it "
                        "anyway with --force" % (path, val.get("reason", "no reason given")))
