#!/bin/sh
# Instructions per request (instructions.sh) of the data plane as pure Python and as
# the compiled build `pip install .` makes (setup.py: Cython, typed by the .pxd files
# beside the .py files), both from this tree: it copies the tree to a temp directory,
# counts the pure copy, builds the copy in place, and counts it again.
#   benchmarks/compiled.sh [--wrk|--no-log]     needs Cython and a C compiler
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$here/proxy" "$here/vendor" "$here/benchmarks" "$here/setup.py" "$here/pyproject.toml" \
    "$here/README.md" "$tmp/"
find "$tmp/proxy" \( -name '*.so' -o -name '*.c' \) -delete
pure=$(sh "$tmp/benchmarks/instructions.sh" "$@")
( cd "$tmp" && python3 setup.py -q build_ext --inplace -j 2 >/dev/null 2>&1 )
compiled_modules=$(find "$tmp/proxy/dataplane" -name "*.so" | wc -l)
compiled=$(sh "$tmp/benchmarks/instructions.sh" "$@")
echo "pure python:  $pure"
echo "compiled ($compiled_modules extension modules in proxy/dataplane): $compiled"
