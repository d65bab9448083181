"""Third-party MicroPython libraries for the simulated device, taken from installed wheels.

The device's MQTT client (chumicro-mqtt and the three small packages it imports) is pure
Python that runs unchanged under MicroPython. It is not committed: `ensure()` copies the
package folders out of the installed distributions into build/mpylib (gitignored), which
is then put on MICROPYPATH. On a board: `mpremote mip install
github:ChuMicro/ChuMicro-Bundle/chumicro_mqtt`."""
import importlib.util
import shutil
import sys
from pathlib import Path

from . import REPO, UserError

PACKAGES = ("chumicro_mqtt", "chumicro_sockets", "chumicro_timing", "chumicro_config")
LIB_DIR = REPO / "build" / "mpylib"


def ensure(dest=LIB_DIR):
    """Copy the packages into dest (when missing or older); return dest."""
    dest = Path(dest)
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise UserError("the Python package %s is missing; run `make setup` (pip install "
                            "chumicro-mqtt)" % name)
        src = Path(list(spec.submodule_search_locations)[0])
        out = dest / name
        stamp = out / "__init__.py"
        if stamp.exists() and stamp.stat().st_mtime >= (src / "__init__.py").stat().st_mtime:
            continue
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc",
                                                                 "testing.py"))
    return dest


def main():
    print(ensure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
