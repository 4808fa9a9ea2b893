"""Builds scenelab's compiled CPU kernels: the Gaussian renderer (projection + tile rasterizer),
`fields._raster_cpu`, and the NeRF's hash encoding and ray marcher, `fields._nerf_cpu`;
metadata is in pyproject.toml.

The extension is plain C++17 over float buffers (pybind11 + OpenMP, no libtorch), so the isolated
build environment needs only setuptools and pybind11. AVX2/FMA code paths are selected at run
time (function target attributes plus a CPU check), so no -march flag ties the wheel to the build
machine.
"""

from __future__ import annotations

import shutil
import sys

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

COMPILER_HINT = (
    "scenelab needs a C++ compiler with OpenMP to build its CPU renderer "
    "(fields._raster_cpu).\n"
    "  Debian/Ubuntu: sudo apt-get install g++\n"
    "  Fedora/RHEL:   sudo dnf install gcc-c++\n"
    "  macOS:         xcode-select --install && brew install libomp\n"
    "then run `pip install -e .` again."
)

if sys.platform == "win32":
    COMPILE_ARGS = ["/O2", "/openmp", "/fp:precise"]
    LINK_ARGS: list[str] = []
else:
    # -ffp-contract=off: the forward and backward passes must make bit-identical alpha decisions,
    # so only the explicit FMAs in the kernels fuse. No -ffast-math: NaN/inf handling matters.
    COMPILE_ARGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-g0", "-Wno-psabi"]
    LINK_ARGS = ["-fopenmp"]


class BuildExt(build_ext):
    """build_ext that turns a missing or failing compiler into an actionable message."""

    def build_extensions(self) -> None:
        compiler_cmd = getattr(self.compiler, "compiler_so", None) or getattr(
            self.compiler, "compiler_cxx", None
        )
        if compiler_cmd and shutil.which(compiler_cmd[0]) is None:
            raise SystemExit(
                f"error: no C++ compiler found ({compiler_cmd[0]!r}).\n{COMPILER_HINT}"
            )
        try:
            super().build_extensions()
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError) as err:
            raise SystemExit(
                f"error: building fields._raster_cpu failed: {err}\n{COMPILER_HINT}"
            ) from err


# The three translation units (bindings + driver, AVX2 kernels, portable kernels) compile in
# parallel; NPY_NUM_BUILD_JOBS overrides the job count.
ParallelCompile("NPY_NUM_BUILD_JOBS").install()

CSRC = "fields/_csrc"
ext_modules = [
    Pybind11Extension(
        "fields._raster_cpu",
        [f"{CSRC}/raster_cpu.cpp", f"{CSRC}/raster_avx2.cpp", f"{CSRC}/raster_generic.cpp"],
        depends=[
            f"{CSRC}/{name}"
            for name in (
                "raster_core.h",
                "raster_types.h",
                "raster_tile.h",
                "raster_simd.h",
                "project.h",
                "query.h",
            )
        ],
        cxx_std=17,
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    ),
    Pybind11Extension(
        "fields._nerf_cpu",
        [f"{CSRC}/nerf_cpu.cpp"],
        cxx_std=17,
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
