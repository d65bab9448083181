"""bms-host replay: run a recorded trace through the device's estimator."""
import os
import subprocess

from . import UserError, use_device_code
from .mpy import micropython_binary, micropython_env

HELP = "replay a trace (CSV) through the device estimator, write SOC/SOH/SOP per row"


def configure(p):
    p.add_argument("trace", help="CSV with time_s,current_a,voltage_v,temperature_c[,ambient_c]")
    p.add_argument("--calibration", required=True, help="calibration JSON")
    p.add_argument("--initial-soc", type=float, default=None,
                   help="start SOC (0..1); default: from the first samples, as at boot")
    p.add_argument("--backend", choices=["python", "ulab", "native"], default="python")
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython")
    p.add_argument("--out", required=True, help="output CSV")


def _check(args):
    for path, what in ((args.trace, "trace"), (args.calibration, "calibration")):
        if not os.path.isfile(path):
            raise UserError("%s file %s does not exist" % (what, path))
    if args.initial_soc is not None and not 0.0 <= args.initial_soc <= 1.0:
        raise UserError("--initial-soc must be between 0 and 1, got %g" % args.initial_soc)


def run(args):
    _check(args)
    tmp = args.out + ".part"
    if args.runtime == "cpython":
        replay_cpython(args.trace, args.calibration, tmp, args.initial_soc, args.backend)
    else:
        replay_micropython(args.trace, args.calibration, tmp, args.initial_soc, args.backend)
    os.replace(tmp, args.out)  # never leave a half-written result under the real name
    print("wrote %s" % args.out)
    return 0


def replay_cpython(trace, cal_path, out, initial_soc=None, backend="python", cfg=None):
    use_device_code()
    from bms import calfile, replay

    try:
        cal = calfile.load(cal_path)[0]
        return replay.run(trace, cal, out, initial_soc, backend, cfg)
    except (calfile.CalibrationError, ValueError) as e:
        _cleanup(out)
        raise UserError(str(e)) from None


def replay_micropython(trace, cal_path, out, initial_soc=None, backend="python"):
    code = ("import sys\nfrom bms import calfile, replay\n"
            "try:\n"
            "    replay.run(%r, calfile.load(%r)[0], %r, %r, %r)\n"
            "except ValueError as e:\n"
            "    print('ERROR:', e)\n    sys.exit(3)\n"
            % (os.path.abspath(trace), os.path.abspath(cal_path), os.path.abspath(out),
               initial_soc, backend))
    r = subprocess.run([micropython_binary(), "-c", code], capture_output=True, text=True,
                       env=micropython_env())
    if r.returncode != 0:
        _cleanup(out)
        msg = r.stdout.strip().splitlines()[-1:] or r.stderr.strip().splitlines()[-1:]
        raise UserError("replay under micropython failed: %s"
                        % (msg[0].replace("ERROR: ", "") if msg else "exit %d" % r.returncode))


def _cleanup(path):
    try:
        os.remove(path)
    except OSError:
        pass


