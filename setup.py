"""Build the compiled DeepCABAC core of nnc_core.

Every ``nnc_core/cabac/*.pyx`` becomes a C++ extension. ``NNC_DEBUG=1`` compiles with
bounds/wraparound checks and assertions on, for hunting memory errors; the default build
is optimised (-O3) with checks off.
"""
import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("NNC_DEBUG", "0") not in ("", "0")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
}
compile_args = ["-std=c++17"] + (["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])

extensions = [
    Extension(
        name=path[:-4].replace(os.sep, "."),
        sources=[path],
        language="c++",
        include_dirs=[numpy.get_include()],
        extra_compile_args=compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for path in sorted(glob(os.path.join("nnc_core", "cabac", "*.pyx")))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
