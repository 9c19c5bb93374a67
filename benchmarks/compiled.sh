#!/bin/sh
# What compiling the data plane with Cython (pure-Python mode: the same .py files, no
# annotations added) would buy, before anything is adopted: copies the tree to a temp
# directory, cythonizes proxy/dataplane/*.py in place there, and counts instructions per
# request (instructions.sh) on the pure and the compiled copy.
#   benchmarks/compiled.sh [--wrk|--no-log]     needs cython and a C compiler
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$here/proxy" "$here/benchmarks" "$tmp/"
pure=$(sh "$tmp/benchmarks/instructions.sh" "$@")
( cd "$tmp" && cythonize -q -3 -i -j 2 proxy/dataplane/*.py >/dev/null 2>&1 )
compiled_modules=$(find "$tmp/proxy/dataplane" -name "*.so" | wc -l)
compiled=$(sh "$tmp/benchmarks/instructions.sh" "$@")
echo "pure python:  $pure"
echo "cython ($compiled_modules modules of proxy/dataplane compiled): $compiled"
