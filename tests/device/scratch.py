# Where device tests write files. Under pytest (and the host MicroPython it starts) a
# folder pytest owns and removes, named by BMS_SCRATCH; on a board (qemu) its RAM /tmp.
import os

_getenv = getattr(os, "getenv", None)   # absent in bare-metal ports
DIR = (_getenv and _getenv("BMS_SCRATCH")) or "/tmp"


def path(name):
    """A fresh file path in the scratch folder: any earlier file of that name is removed."""
    p = DIR + "/" + name
    for q in (p, p + ".tmp"):
        try:
            os.remove(q)
        except OSError:
            pass
    return p
