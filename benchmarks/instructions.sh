#!/bin/sh
# Instructions per proxied request, counted by callgrind on hotpath.py: noise-free, so
# a change of a few percent is visible on a shared machine where wall time is not.
# The count is the difference between two run lengths divided by the extra requests,
# which cancels start-up and import costs.
#   benchmarks/instructions.sh            # browser-like request, access log on
#   benchmarks/instructions.sh --no-log   # access log off
#   benchmarks/instructions.sh --wrk      # run.py's messages (wrk's request, nginx's answer)
# PYTHON overrides the interpreter (default: the `python3` on PATH, resolved to the real
# executable so valgrind does not trace a pyenv shim or a venv wrapper script).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
ir() {
    n=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$python" "$here/hotpath.py" -n "$n" "$@" 2>&1 |
        awk '/Collected/ {print $4}'
}
short=$(ir 2000 "$@")
long=$(ir 6000 "$@")
echo "instructions/request: $(( (long - short) / 4000 ))"
