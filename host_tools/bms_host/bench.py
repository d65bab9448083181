"""bms-host bench: the speed, accuracy and telemetry benchmarks (tables, not tests)."""
import argparse
import importlib

HELP = ("run a benchmark and print its table: speed, accuracy, telemetry, target, aging, "
        "fleet, real or zero")

BENCHES = {
    "speed": "bms_host.bench_speed",
    "accuracy": "bms_host.bench_accuracy",
    "telemetry": "bms_host.bench_telemetry",
    "target": "bms_host.bench_target",
    "aging": "bms_host.bench_aging",
    "fleet": "bms_host.bench_fleet",
    "real": "bms_host.bench_real",
    "zero": "bms_host.bench_zero",
}


def configure(p):
    p.add_argument("which", choices=sorted(BENCHES))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")


def run(args):
    mod = importlib.import_module(BENCHES[args.which])
    if args.which == "speed":  # takes no options
        return mod.main() or 0
    return mod.main(args.rest) or 0
