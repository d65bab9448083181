"""bms-host replay: run a recorded trace through the device's estimator."""
import os
import subprocess

from . import UserError, plausible, use_device_code
from .mpy import micropython_binary, micropython_env
from .traces import guard_output, read_trace, remove_quietly, temp_beside

HELP = "replay a trace (CSV) through the device estimator, write SOC/SOH/SOP per row"


def configure(p):
    p.add_argument("trace", help="CSV with time_s,current_a,voltage_v,temperature_c[,ambient_c]")
    p.add_argument("--calibration", required=True, help="calibration JSON")
    p.add_argument("--initial-soc", type=float, default=None,
                   help="start SOC (0..1); default: from the first samples, as at boot")
    p.add_argument("--backend", choices=["python", "ulab", "native"], default="python")
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython")
    p.add_argument("--out", required=True, help="output CSV (never one of the inputs)")
    plausible.add_option(p)


def _check(args):
    for path, what in ((args.trace, "trace"), (args.calibration, "calibration")):
        if not os.path.isfile(path):
            raise UserError("%s file %s does not exist" % (what, path))
    if args.initial_soc is not None and not 0.0 <= args.initial_soc <= 1.0:
        raise UserError("--initial-soc must be between 0 and 1, got %g" % args.initial_soc)
    guard_output(args.out, args.trace, args.calibration)


def run(args):
    from .calibration import read_canonical

    _check(args)
    cal, _, text = read_canonical(args.calibration)
    # the host reads the trace first: one sentence for a bad file, its units checked, and
    # a last line cut short dropped (the device code then reads only the good rows)
    cols = read_trace(args.trace, min_rows=2, only=("ambient_c",))
    if not getattr(args, "allow_implausible", False):
        plausible.check(cols, cal, args.trace)
    rows = len(cols["time_s"])
    tmp = temp_beside(args.out)
    cal_tmp = None
    try:
        if args.runtime == "cpython":
            replay_cpython(args.trace, args.calibration, tmp, args.initial_soc, args.backend,
                           rows=rows)
        else:
            cal_path = args.calibration
            with open(cal_path, "rb") as f:
                if f.read() != text.encode():   # reformatted: the device reads the canonical
                    cal_tmp = temp_beside(tmp)
                    with open(cal_tmp, "w", encoding="utf-8") as g:
                        g.write(text)
                    cal_path = cal_tmp
            replay_micropython(args.trace, cal_path, tmp, args.initial_soc,
                               args.backend, rows=rows)
        os.replace(tmp, args.out)  # never leave a half-written result under the real name
    finally:
        remove_quietly(tmp)
        if cal_tmp:
            remove_quietly(cal_tmp)
    print("wrote %s" % args.out)
    return 0


def replay_cpython(trace, cal_path, out, initial_soc=None, backend="python", cfg=None,
                   rows=None):
    """cal_path: a calibration file, read as the host reads it (a reformatted one too)."""
    use_device_code()
    from bms import calfile, replay

    from .calibration import read_calibration

    try:
        cal = read_calibration(cal_path)[0]
        return replay.run(trace, cal, out, initial_soc, backend, cfg, rows)
    except (calfile.CalibrationError, ValueError) as e:
        _cleanup(out)
        raise UserError(str(e)) from None
    except ArithmeticError as e:
        _cleanup(out)
        raise UserError("the estimator could not follow trace %s (%s: %s): check its units "
                        "and sign" % (trace, e.__class__.__name__, e)) from None


def replay_micropython(trace, cal_path, out, initial_soc=None, backend="python", rows=None):
    code = ("import sys\nfrom bms import calfile, replay\n"
            "try:\n"
            "    replay.run(%r, calfile.load(%r)[0], %r, %r, %r, None, %r)\n"
            "except (ValueError, ArithmeticError) as e:\n"
            "    print('ERROR:', e)\n    sys.exit(3)\n"
            % (os.path.abspath(trace), os.path.abspath(cal_path), os.path.abspath(out),
               initial_soc, backend, rows))
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


