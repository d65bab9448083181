"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary folder,
pg_ctl start listening only on a unix socket in that folder, removed at stop(). Uses the
server binaries of Debian's `postgresql` package (tools/apt-deps.sh installs it).

PostgreSQL refuses to run as root; as root the cluster is made and run as the `postgres`
system user the package creates, in a folder that user owns."""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from . import UserError


def server_bin():
    """The folder holding initdb/pg_ctl/postgres, or None."""
    for name in ("initdb", "pg_ctl"):
        if not shutil.which(name):
            break
    else:
        return os.path.dirname(os.path.realpath(shutil.which("pg_ctl")))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def available():
    """The server binaries are there, and as root the `postgres` user to run them."""
    if server_bin() is None:
        return False
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


# for tests: a cluster that is thrown away needs no crash safety
THROWAWAY = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


class Cluster:
    def __init__(self, port=5432, settings=None):
        self.bin = server_bin()
        if self.bin is None:
            raise UserError("the PostgreSQL server is missing: run `make apt` "
                            "(sudo apt-get install postgresql)")
        self.port = port
        self.settings = dict(settings or {})
        self.dir = None
        self.user = None

    def _as_owner(self):
        if os.getuid() != 0:
            return {}
        pw = pwd.getpwnam("postgres")

        def drop():
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        return {"preexec_fn": drop}

    def _run(self, *cmd):
        r = subprocess.run([os.path.join(self.bin, cmd[0])] + list(cmd[1:]),
                           capture_output=True, text=True, cwd=self.dir, **self._as_owner())
        if r.returncode:
            raise UserError("PostgreSQL %s failed: %s" % (cmd[0], (r.stderr or r.stdout)
                                                           .strip().splitlines()[-1:]))
        return r

    def start(self):
        # in /tmp whatever TMPDIR says: the `postgres` user must reach the folder, and a
        # unix socket's path must stay short (about 100 bytes)
        base = "/tmp" if os.access("/tmp", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="bms-pg-", dir=base)
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.user = pwd.getpwuid(os.getuid()).pw_name if os.getuid() else "postgres"
        data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", data, "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-locale")
        opts = {"listen_addresses": "''", "unix_socket_directories": "'%s'" % self.dir,
                "port": str(self.port), "max_connections": "50",
                "shared_buffers": "64MB"}
        opts.update({k: str(v) for k, v in self.settings.items()})
        o = " ".join("-c %s=%s" % kv for kv in opts.items())
        self._run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-w",
                  "-t", "30", "-o", o, "start")
        return self

    def url(self, db="postgres"):
        return "postgresql://%s@/%s?host=%s&port=%d" % (self.user, db, self.dir, self.port)

    def create_db(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS %s" % name)
            c.execute("CREATE DATABASE %s" % name)
        return self.url(name)

    def stop(self):
        if self.dir is None:
            return
        data = os.path.join(self.dir, "data")
        if os.path.isdir(data):
            subprocess.run([os.path.join(self.bin, "pg_ctl"), "-D", data, "-m", "fast", "-w",
                            "stop"], capture_output=True, cwd=self.dir, **self._as_owner())
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
