# Where device tests write files. Under pytest (and the host MicroPython it starts) a
# folder pytest owns and removes, named by BMS_SCRATCH; on a board (qemu) its RAM /tmp.
import os


def folder():
    # read at each call: pytest imports the test modules before it sets BMS_SCRATCH
    getenv = getattr(os, "getenv", None)   # absent in bare-metal ports
    return (getenv and getenv("BMS_SCRATCH")) or "/tmp"


def path(name):
    """A fresh file path in the scratch folder: any earlier file of that name is removed."""
    p = folder() + "/" + name
    for q in (p, p + ".tmp"):
        try:
            os.remove(q)
        except OSError:
            pass
    return p
