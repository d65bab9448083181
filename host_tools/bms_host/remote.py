"""bms-host exec: run code on a board or the simulated device (no soft reset)."""
from .device import Device

HELP = "run Python code on the device (e.g. \"import bms; bms.status()\")"


def configure(p):
    p.add_argument("code", help="Python code to run on the device")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0 or /dev/pts/N")
    p.add_argument("--timeout", type=float, default=30.0)


def run(args):
    with Device(args.port) as d:
        print(d.exec(args.code, timeout=args.timeout), end="")
    return 0
