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


QEMU_BUILD = "build-bms-MPS2_AN385"
QEMU_MANIFEST = REPO / "boards" / "qemu" / "manifest.py"
# The port's default heap (140 KB) holds the frozen device code and one app, but the
# device tests are sent as source and compiled on the board: 512 KB of the MPS2 board's
# 4 MB RAM, set through the port's own MICROPY_HEAP_SIZE make variable.
QEMU_HEAP = 512 * 1024


def _mpy_lib_dir(mpy):
    """The ports' freeze step stops unless lib/micropython-lib holds a README.md, even for
    a manifest that takes nothing from it (ours): without the submodule, an empty stand-in."""
    real = mpy / "lib" / "micropython-lib"
    if (real / "README.md").exists():
        return real
    empty = BUILD / "micropython-lib-empty"
    empty.mkdir(parents=True, exist_ok=True)
    (empty / "README.md").write_text("Empty stand-in: the board manifests need nothing "
                                     "from micropython-lib.\n")
    return empty


def build_qemu():
    """The qemu port for a bare-metal Cortex-M3 (MPS2_AN385: soft float, float32) with
    ulab, bms_native and the device code (device/manifest.py) frozen by
    boards/qemu/manifest.py."""
    mpy, ulab = sources()
    mods = usercmodules(ulab)
    mpy_cross(mpy)
    _make(["make", "-C", str(mpy / "ports" / "qemu"), "-j", JOBS, "BOARD=MPS2_AN385",
           "BUILD=" + QEMU_BUILD, "USER_C_MODULES=%s" % mods,
           "FROZEN_MANIFEST=%s" % QEMU_MANIFEST, "MPY_LIB_DIR=%s" % _mpy_lib_dir(mpy),
           "MICROPY_HEAP_SIZE=%d" % QEMU_HEAP],
          "qemu")
    return mpy / "ports" / "qemu" / QEMU_BUILD / "firmware.elf"


RP2_BUILD = BUILD / "rp2-RPI_PICO"
RP2_MANIFEST = REPO / "boards" / "pico" / "manifest_emu.py"
RP2_LIBS = ("pico-sdk-2.2.0-rp2040-trim", "tinyusb-aa0fc2e08-rp2040-trim",
            "mbedtls-v3.6.6-lib-include", "micropython-lib-v1.28.0-used")


def build_rp2():
    """The Raspberry Pi Pico firmware (RPI_PICO) with ulab, bms_native and the device
    code frozen, for the rp2040js emulator: boards/pico/manifest_emu.py is the maker's
    manifest (boards/pico/manifest.py) without main.py and with the simulated I2C bus
    (boards/sim/sim_i2c.py)."""
    mpy, ulab = sources()
    if mpy.is_relative_to(VENDOR_OUT):
        for name in RP2_LIBS:  # the port's submodules, from the vendor folder
            tar = vendor_dir() / "rp2" / (name + ".tar.gz")
            if not tar.exists():
                raise Unavailable("no %s: the Pico firmware needs ../shared/vendor/rp2"
                                  % tar.name)
            _unpack(tar, mpy / "lib", name)
    elif not (mpy / "lib" / "pico-sdk" / "src").is_dir():
        raise Unavailable("MPY_DIR=%s has no lib/pico-sdk: run `make -C ports/rp2 "
                          "submodules` in it" % mpy)
    mpy_cross(mpy)
    port = mpy / "ports" / "rp2"
    args = ["cmake", "-S", str(port), "-B", str(RP2_BUILD), "-DMICROPY_BOARD=RPI_PICO",
            "-DPICO_BUILD_DOCS=0", "-DPICO_NO_PICOTOOL=1",
            "-DUSER_C_MODULES=%s" % (NATIVE_DIR / "micropython.cmake"),
            "-DULAB_DIR=%s" % ulab, "-DMICROPY_FROZEN_MANIFEST=%s" % RP2_MANIFEST]
    # cmake runs once per set of sources; after that make alone re-checks
    stamp = RP2_BUILD / ".configured"
    if not stamp.exists() or stamp.read_text() != " ".join(args):
        _make(args, "rp2-cmake")
        stamp.write_text(" ".join(args))
    _make(["make", "-C", str(RP2_BUILD), "-j", JOBS], "rp2")
    return RP2_BUILD / "firmware.bin"


TARGETS = {"unix": build_unix, "qemu": build_qemu, "rp2": build_rp2}


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
