# The C filter core is built here as a CPython extension so the `native` backend
# runs on the host; the same C file is built into MicroPython firmware (device/native).
# Two top-level modules from the same sources: `bms_native` (float32, as on the boards)
# and `bms_native_f64` (double, -DBMS_REAL_DOUBLE).
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = "device/native/bms_native"
CFLAGS = ["-Wall", "-Wextra", "-Werror", "-O2", "-std=c99", "-ffp-contract=off"]


def native(name, macros):
    return Extension(
        name,
        sources=[f"{SRC}/ukf_core.c", f"{SRC}/sop_core.c", f"{SRC}/pybind_native.c"],
        include_dirs=[SRC],
        define_macros=macros,
        depends=[f"{SRC}/ukf_core.h", f"{SRC}/sop_core.h", f"{SRC}/bms_float.h"],
        extra_compile_args=CFLAGS,
    )


class BuildExt(build_ext):
    """Both extensions compile the same files with different macros: give each its own
    object directory so that one never links the other's objects."""

    def build_extension(self, ext):
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base


setup(
    ext_modules=[
        native("bms_native", []),
        native("bms_native_f64", [("BMS_REAL_DOUBLE", "1")]),
    ],
    cmdclass={"build_ext": BuildExt},
)
