"""bms-host push: send a calibration to a board, verified by the board's read-back.

Upload to a staging file, then ask the device to validate and install it (atomic
renames on the device: a power cut leaves the old or the new calibration). The device
answers with the checksum it now runs, which must equal the file's."""
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


def local_checksum(path, check=True):
    use_device_code()
    from bms import calfile

    if not os.path.isfile(path):
        raise UserError("calibration file %s does not exist" % path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode()
        if check:
            return data, calfile.loads(text)[1]
        return data, calfile.split(text)[0]
    except (UnicodeDecodeError, calfile.CalibrationError) as e:
        if not check:
            return data, None
        raise UserError("%s is not a valid calibration: %s" % (path, e)) from None


def push(port, path, check=True):
    """Returns the checksum the device runs. Raises UserError with one sentence."""
    data, checksum = local_checksum(path, check)
    with Device(port) as d:
        d.exec("import os\ntry:\n os.mkdir('cal')\nexcept OSError:\n pass")
        d.write_bytes(UPLOAD, data)
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
    checksum = push(args.port, args.calibration, check=not args.no_check)
    print("pushed %s: device runs calibration %s" % (args.calibration, checksum[:16]))
    return 0
