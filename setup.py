"""The data plane compiled, from the same source: where Cython and a C compiler are
there, `pip install .` builds proxy/dataplane/*.py as C extensions, typed by the .pxd
files beside them, with two modules written for Cython (the access lines, and llhttp
from vendor/llhttp driven directly); where either is missing, or a module does not
build, the same modules are installed as pure Python (with httptools and the Python
access-line renderer).  `switchyard status` says which one runs (`hot_path`).
SWITCHYARD_PURE=1 skips the build.

Everything else about the package is in pyproject.toml; MANIFEST.in, what an sdist
needs for the compiled build.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CompiledIfPossible(build_ext):
    """All of the data plane compiled, or none of it: a compiled module cimports the
    types of the others, so a mix of compiled and pure modules would not import."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler, or a module that fails
            self._pure(exc)

    def _pure(self, exc: Exception) -> None:
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.unlink(path)
        self.extensions = []
        print(f"switchyard: the data plane is not compiled ({exc}); installing it as pure "
              "Python, which works the same and costs more CPU per request", file=sys.stderr)


def extensions() -> list:
    if os.environ.get("SWITCHYARD_PURE"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("switchyard: Cython is not installed; the data plane stays pure Python",
              file=sys.stderr)
        return []
    modules = sorted(m for m in glob.glob("proxy/dataplane/*.py")
                     if not m.endswith("__init__.py"))
    # Written for Cython, with a Python twin beside it (_accessline.pyx: the
    # access lines, accesslog._render_lines)...
    modules += sorted(m for m in glob.glob("proxy/dataplane/*.pyx") if "_llhttp" not in m)
    # ... and llhttp itself, vendored at the version httptools 0.9.0 carries,
    # driven from compiled code (_llhttp.pyx; httptools where this is not built).
    llhttp = "vendor/llhttp"
    modules.append(Extension(
        "proxy.dataplane._llhttp",
        ["proxy/dataplane/_llhttp.pyx",
         *(f"{llhttp}/src/{name}.c" for name in ("llhttp", "api", "http"))],
        include_dirs=[f"{llhttp}/include"]))
    # The .pxd files say what is a C type; the annotations in the .py files stay
    # for readers and type checkers (Python's `int` there is not a C int).
    try:
        return cythonize(modules, language_level=3, quiet=True,
                         compiler_directives={"annotation_typing": False})
    except Exception as exc:  # noqa: BLE001 - a source missing, or another Cython's rules
        print(f"switchyard: the data plane is not compiled ({exc}); installing it as pure "
              "Python", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": CompiledIfPossible})
