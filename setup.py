"""Builds the compiled matcher `boruta._matcher`.

The extension is optional at run time: `boruta.core.matching` falls back to
the plain-Python matcher when it is absent (or when BORUTA_PUREPYTHON=1).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "boruta._matcher",
        ["boruta/_matcher.pyx"],
        extra_compile_args=["-O3"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
