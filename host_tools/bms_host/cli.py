"""The `bms-host` command. Each subcommand lives in its own module exposing
`HELP` (one line), `configure(parser)` and `run(args) -> int`."""
import argparse
import importlib
import importlib.util
import sys

from . import UserError, __version__

# name -> module; a subcommand is listed only when its module exists.
COMMANDS = {
    "synth": "bms_host.synth",
    "fit": "bms_host.fit",
    "simulate": "bms_host.simulate",
    "replay": "bms_host.replay",
    "sim": "bms_host.sim",
    "exec": "bms_host.remote",
    "push": "bms_host.push",
    "record": "bms_host.record",
    "monitor": "bms_host.monitor",
    "report": "bms_host.report",
    "db": "bms_host.db",
    "demo": "bms_host.demo",
    "bench": "bms_host.bench",
    "wiring": "bms_host.wiring",
}


def build_parser(only=None):
    """The parser with every subcommand, or with just `only`: importing a module pulls in
    its dependencies (scipy, PyBaMM, matplotlib), seconds that one command need not pay."""
    parser = argparse.ArgumentParser(
        prog="bms-host", description="Host tools for the model-based MicroPython BMS.")
    parser.add_argument("--version", action="version", version="bms-host " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        if only is not None and name != only:
            continue
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return args._run(args) or 0
    except UserError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
