"""Where the instructions of one proxied request go, by function: callgrind on
hotpath.py at two run lengths, the difference divided by the extra requests (as
instructions.sh does for the total), so start-up and imports cancel out.

    python benchmarks/callgrind_profile.py [--wrk] [--no-log] [--top N]

Prints the data plane's functions by inclusive cost per request (what a call
costs with everything it calls), then every function by its own cost.  Needs
valgrind; takes a minute or two.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHORT, LONG = 2000, 6000
_ROW = re.compile(r"^\s*([\d,]+)\s+\([ \d.]+%\)\s+(\S.*)$")
_NOISE = re.compile(r"\s*\[[^\]]*\]$|/tmp/python-build[^ ]*?/Python-\d+\.\d+\.\d+/")


def _readable(symbol: str) -> str | None:
    """`module.Class.method` for a compiled data-plane function (Cython names it
    __pyx_f_ + length-prefixed parts), else None: Cython's argument-parsing
    wrappers and the interpreter's frames repeat what they call."""
    match = re.match(r"__pyx_(?:f|pf|pw)_5proxy_9dataplane_(\d+)", symbol)
    if match is None:
        return None
    at = match.end()
    module = symbol[at:at + int(match[1])]
    rest = symbol[at + int(match[1]) + 1:]  # after the "_" that follows the module
    owner = re.match(r"(\d+)", rest)
    if owner:  # a method: the class's length and (CamelCase) name, "_", the method
        size, length = len(owner[1]), int(owner[1])
        cls = rest[size:size + length]
        if re.match(r"_?[A-Z]", cls) and rest[size + length:size + length + 1] == "_":
            method = re.sub(r"^\d+", "", rest[size + length + 1:])  # a def's index
            return f"{module}.{cls}.{method}"
    return module + "." + re.sub(r"^\d+", "", rest)  # a function (a def's index first)


def _costs(out_file: str, inclusive: bool) -> collections.Counter:
    text = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
         "--threshold=100", out_file], capture_output=True, text=True, check=True).stdout
    costs: collections.Counter = collections.Counter()
    started = False
    for line in text.splitlines():
        if "file:function" in line:
            started = True
            continue
        match = _ROW.match(line) if started else None
        if match is None or "=>" in line or "PROGRAM TOTALS" in line or ":" not in match[2]:
            continue  # only whole functions (file:function), not annotated source lines
        name, cost = _NOISE.sub("", match[2].strip()), int(match[1].replace(",", ""))
        if inclusive:  # by function: callgrind lists one under each file it inlined
            name = _readable(name.rsplit(":", 1)[-1])
            if name is None:
                continue
        # Inclusive: a function's cost is its largest entry (recursion repeats it).
        costs[name] = max(costs[name], cost) if inclusive else costs[name] + cost
    return costs


def _run(requests: int, flags: list[str], tmp: str) -> str:
    out = os.path.join(tmp, f"callgrind.{requests}")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, os.path.join(HERE, "hotpath.py"), "-n", str(requests),
                    *flags], capture_output=True, check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wrk", action="store_true", help="run.py's messages")
    parser.add_argument("--no-log", action="store_true", help="access log off")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    flags = [f for f, on in (("--wrk", args.wrk), ("--no-log", args.no_log)) if on]
    with tempfile.TemporaryDirectory() as tmp:
        short, long = _run(SHORT, flags, tmp), _run(LONG, flags, tmp)
        for title, inclusive, keep in (
                ("data plane functions, inclusive", True, ""),
                ("all functions, own cost", False, "")):
            before, after = _costs(short, inclusive), _costs(long, inclusive)
            rows = sorted(((after[k] - before.get(k, 0)) / (LONG - SHORT), k)
                          for k in after)
            print(f"== instructions per request: {title}")
            for cost, name in rows[::-1][:args.top]:
                print(f"{cost:9.0f}  {name}")


if __name__ == "__main__":
    main()
