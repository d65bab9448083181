"""bms-host db: manage telemetry stores (migrate a SQLite file into PostgreSQL, show what a
store holds)."""
from . import UserError
from .store import display, migrate, open_store

HELP = "telemetry stores: migrate SQLite -> PostgreSQL, show a store's contents"


def configure(p):
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    m = sub.add_parser("migrate", help="copy every record of SRC into DST (all or nothing; "
                                       "records already in DST are kept)")
    m.add_argument("src", help="SQLite file (or postgresql:// URL) to read")
    m.add_argument("dst", help="postgresql:// URL (or SQLite file) to write; the table is "
                               "created when missing")
    i = sub.add_parser("info", help="records, devices and gaps in a store")
    i.add_argument("target", help="SQLite file or postgresql:// URL")


def run(args):
    if args.db_command == "migrate":
        if str(args.src) == str(args.dst):
            raise UserError("source and destination are the same store: give two different ones")
        migrate(args.src, args.dst)
        return 0
    from .record import gap_report

    store = open_store(args.target, create=False)
    try:
        n = store.count()
        devs = store.devices()
        print("%s (%s): %d records from %d device(s)" % (display(args.target), store.kind, n,
                                                         len(devs)))
        for line in gap_report(store):
            print(line)
    finally:
        store.close()
    return 0
