"""Where the host's MicroPython is and how device code is put on its path."""
import os
import shutil
import sys

from . import BOARDS_DIR, DEVICE_DIR, UserError


def micropython_binary():
    """BMS_MICROPYTHON (a firmware-like build with ulab and bms_native) or the venv's."""
    custom = os.environ.get("BMS_MICROPYTHON")
    if custom:
        return custom
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    found = here if os.path.exists(here) else shutil.which("micropython")
    if not found:
        raise UserError("the micropython command is missing; run `make setup` to install it")
    return found


def micropython_env(extra_paths=()):
    """Environment for the host micropython: device code, boards and the third-party
    MicroPython libraries (MQTT client) copied out of their installed wheels."""
    from . import mpylib

    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(
        [str(p) for p in extra_paths]
        + [str(DEVICE_DIR), str(BOARDS_DIR), str(mpylib.ensure()), ".frozen"])
    return env
