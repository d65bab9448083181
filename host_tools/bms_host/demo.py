"""bms-host demo: the main job end to end on the simulated board."""
import os
import time

from . import CALIBRATION_DIR, REPO, UserError

HELP = "run the whole job on the simulated board: calibration, device, drive cycle, SOC vs truth"


def configure(p):
    p.add_argument("--out", default="out/demo", help="folder for the table and the plot")
    p.add_argument("--trace", default=str(REPO / "data" / "lgm50" / "dst_25C.csv"),
                   help="drive cycle with a soc_true column")


def run(args):
    from .evaluate import soc_table
    from .replay import replay_micropython
    from .sim import SimDevice

    os.makedirs(args.out, exist_ok=True)
    cal = str(CALIBRATION_DIR / "lgm50.json")
    if not os.path.isfile(args.trace):
        raise UserError("drive cycle %s does not exist (make calibration makes it)" % args.trace)
    t0 = time.time()
    with SimDevice(calibration=cal) as sim:
        sim.wait_ready()
        print("simulated device answering on %s" % sim.port)
    est = os.path.join(args.out, "estimate.csv")
    replay_micropython(args.trace, cal, est, initial_soc=None)
    print(soc_table(args.trace, est, os.path.join(args.out, "soc.png")))
    print("demo done in %.1f s; results in %s" % (time.time() - t0, args.out))
    return 0
