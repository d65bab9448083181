"""Firmware builds from real MicroPython, ulab (and the Pico SDK) sources, for tests and
benches: the float32 unix port, the qemu Cortex-M3 port and the Raspberry Pi Pico port,
each with ulab and bms_native.

Sources come from MPY_DIR / ULAB_DIR (a maker's own checkouts) or from the project's
vendor folder (../shared/vendor, or BMS_VENDOR_DIR), unpacked once into build/vendor.
Every build is incremental (the ports' own make/cmake): a second run only checks.

    python -m bms_host.firmware unix|qemu|rp2|all     # prints each artifact's path
"""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from . import REPO

BUILD = REPO / "build"
VENDOR_OUT = BUILD / "vendor"
USERMODS = BUILD / "usercmodules"
NATIVE_DIR = REPO / "device" / "native"
JOBS = str(os.cpu_count() or 2)


class Unavailable(Exception):
    """No sources to build from: the caller skips with this one sentence."""


def vendor_dir():
    d = os.environ.get("BMS_VENDOR_DIR")
    return Path(d) if d else REPO.parent / "shared" / "vendor"


def _unpack(tar, dest, stamp_name):
    """Extract tar into dest once (a stamp names the archive and its size)."""
    dest.mkdir(parents=True, exist_ok=True)
    stamp = dest / (".unpacked-" + stamp_name)
    key = "%s %d" % (tar.name, tar.stat().st_size)
    if stamp.exists() and stamp.read_text() == key:
        return
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="tar")
    stamp.write_text(key)


def sources():
    """(micropython_dir, ulab_dir): the user's checkouts or the unpacked vendor sources."""
    mpy, ulab = os.environ.get("MPY_DIR"), os.environ.get("ULAB_DIR")
    if mpy and ulab:
        mpy, ulab = Path(mpy).resolve(), Path(ulab).resolve()
        if not (mpy / "py" / "mkrules.mk").exists():
            raise Unavailable("MPY_DIR=%s is not a MicroPython checkout (no py/mkrules.mk)"
                              % mpy)
        if not (ulab / "code" / "micropython.cmake").exists():
            raise Unavailable("ULAB_DIR=%s is not a ulab checkout (no code/micropython.cmake)"
                              % ulab)
        return mpy, ulab
    v = vendor_dir()
    if not (v / "micropython-src.tar.gz").exists():
        raise Unavailable("no MicroPython sources: firmware tests need ../shared/vendor or "
                          "MPY_DIR=<micropython checkout> ULAB_DIR=<ulab checkout>")
    _unpack(v / "micropython-src.tar.gz", VENDOR_OUT, "micropython")
    _unpack(v / "ulab-src.tar.gz", VENDOR_OUT, "ulab")
    return VENDOR_OUT / "micropython", VENDOR_OUT / "ulab"


def usercmodules(ulab):
    """The unix and qemu ports take a folder whose subfolders hold micropython.mk."""
    USERMODS.mkdir(parents=True, exist_ok=True)
    for name, target in (("ulab", ulab / "code"), ("bms_native", NATIVE_DIR / "bms_native")):
        link = USERMODS / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return USERMODS


def _make(args, log_name):
    """Run make/cmake quietly; on failure raise with the log's tail."""
    log = BUILD / ("%s.log" % log_name)
    with open(log, "w") as f:
        r = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError("%s failed (log: %s):\n%s" % (" ".join(map(str, args)), log, tail))


def mpy_cross(mpy):
    exe = mpy / "mpy-cross" / "build" / "mpy-cross"
    _make(["make", "-C", str(mpy / "mpy-cross"), "-j", JOBS], "mpy-cross")
    return exe


UNIX_BUILD = "build-bms-f32"


def build_unix():
    """The unix port in float32 (as on the boards) with ulab and bms_native."""
    mpy, ulab = sources()
    mods = usercmodules(ulab)
    mpy_cross(mpy)
    _make(["make", "-C", str(mpy / "ports" / "unix"), "-j", JOBS, "BUILD=" + UNIX_BUILD,
           "USER_C_MODULES=%s" % mods, "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0",
           "MICROPY_PY_SSL=0", "MICROPY_SSL_MBEDTLS=0", "FROZEN_MANIFEST=",
           "CFLAGS_EXTRA=-DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT"], "unix-f32")
    return mpy / "ports" / "unix" / UNIX_BUILD / "micropython"


TARGETS = {"unix": build_unix}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    names = list(TARGETS) if argv in ([], ["all"]) else argv
    for n in names:
        if n not in TARGETS:
            print("unknown firmware %r: choose %s or all" % (n, ", ".join(TARGETS)),
                  file=sys.stderr)
            return 2
    try:
        for n in names:
            print("%s: %s" % (n, TARGETS[n]()))
    except Unavailable as e:
        print("firmware: skipped: %s" % e)
    except RuntimeError as e:
        print("firmware: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
