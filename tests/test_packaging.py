"""`pip install .` (README's first command) installs every module of the proxy:
the installed copy, not this source tree, is what `switchyard` runs."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

from .support import ROOT


def test_pip_install_ships_every_module_and_the_server_imports(tmp_path):
    # From a clean copy: setuptools reuses a build/ directory left in a tree,
    # which would hide a package the config no longer names.
    src, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", ".git", "__pycache__", "tests", "benchmarks", "*.so", "*.c"))
    # SWITCHYARD_PURE: which files are shipped is the question here, not the
    # compiled build (test_hot_path.py and CI's two runs are about that).
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(src)], check=True, capture_output=True,
                   timeout=300, env={**os.environ, "SWITCHYARD_PURE": "1"})
    source = pathlib.Path(ROOT) / "proxy"
    wanted = {p.relative_to(source.parent).as_posix() for p in source.rglob("*.py")}
    installed = {p.relative_to(target).as_posix() for p in (target / "proxy").rglob("*.py")}
    assert wanted - installed == set()
    # The installed copy alone (not this tree) starts the whole program's imports.
    probe = subprocess.run(
        [sys.executable, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(target)!r}); import proxy.server, proxy.cli.main;"
         "print(proxy.server.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(target))


def test_the_sdist_carries_what_a_compiled_build_needs(tmp_path):
    # MANIFEST.in: the .pxd types, the modules written for Cython and the vendored
    # llhttp are not Python packages, so setuptools leaves them out without it.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", ".git", "__pycache__", "*.so"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")],
                   cwd=src, check=True, capture_output=True, timeout=300,
                   env={**os.environ, "SWITCHYARD_PURE": "1"})
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    dataplane = pathlib.Path(ROOT) / "proxy" / "dataplane"
    wanted = {f"proxy/dataplane/{p.name}" for p in dataplane.iterdir()
              if p.suffix in (".pxd", ".pyx")}
    wanted |= {"vendor/llhttp/include/llhttp.h", "vendor/llhttp/LICENSE-MIT",
               *(f"vendor/llhttp/src/{name}.c" for name in ("llhttp", "api", "http"))}
    assert len(wanted) > 20 and wanted - shipped == set()
