"""The `switchyard` command: arguments, then serve/check/demo here or a command
over the admin socket (console).  The only module that exits; the codes are in exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import config as config_module
from ..commands import CommandError
from .client import Unreachable
from .console import run
from .exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE

DEFAULT_SOCKET = "/run/switchyard/admin.sock"


# -- argument parsing ------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help="admin socket (default: $SWITCHYARD_SOCKET, admin.socket of -c, "
                             f"{DEFAULT_SOCKET})")
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="configuration file")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the admin API's JSON answer")
    # Only commands that change something take --if-match.
    mutating = argparse.ArgumentParser(add_help=False, parents=[common])
    mutating.add_argument("--if-match", metavar="GENERATION", type=int,
                          default=argparse.SUPPRESS,
                          help="refuse (exit 1) if the state moved past this generation")

    parser = argparse.ArgumentParser(
        prog="switchyard", parents=[common],
        description="Zero-downtime traffic switcher for Hyperf blue/green pools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add = lambda name, help: sub.add_parser(name, help=help, parents=[common])  # noqa: E731
    change = lambda name, help: sub.add_parser(name, help=help, parents=[mutating])  # noqa: E731

    add("serve", "run the proxy (what the systemd unit runs)")
    add("check", "validate a configuration file")
    add("status", "pools, weights, health, in-flight, error rates")
    p = change("weights", "set weights, e.g. blue=90 green=10")
    p.add_argument("weights", nargs="+", metavar="POOL=WEIGHT")
    p = change("cutover", "health-gated switch of all new traffic to a pool")
    _cutover_args(p)
    change("rollback", "everything back to the previous pool, at once")
    p = change("drain", "stop new traffic to a pool; --wait shows in-flight falling to 0")
    p.add_argument("pool")
    p.add_argument("--wait", action="store_true", help="follow in-flight requests down to 0")
    p.add_argument("--timeout", help="cut what is still open after this long, e.g. 30s "
                   "(default: timeouts.drain)")
    p.add_argument("--upstream", metavar="ADDRESS",
                   help="drain one upstream of the pool (a rolling update), not the pool")
    p.add_argument("--force", action="store_true",
                   help="with --upstream: even the last enabled, healthy one of the pool")
    p = change("upstream", "take one upstream out of its pool's rotation, or put it back")
    p.add_argument("action", choices=["disable", "enable"])
    p.add_argument("pool")
    p.add_argument("address", help="as in the config, e.g. 127.0.0.1:9501 or unix:/path")
    p.add_argument("--force", action="store_true",
                   help="disable even the last enabled, healthy upstream of a pool with weight")
    p = change("pause", "hold new requests (while a migration runs); nothing fails")
    p.add_argument("--timeout", help="resume by itself after this long, e.g. 30s "
                   "(default: timeouts.pause)")
    change("resume", "let the held requests through, in order")
    p = add("events", "routing events: cutovers, rollbacks (with the reason), health changes")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    change("reload", "re-read the config file; an invalid file changes nothing")
    p = add("top", "live per-pool req/s, errors, p50/p99")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help="stop after N refreshes (0: never)")
    p = add("tester-cookie", "print a signed cookie that reaches a pool of weight 0")
    p.add_argument("pool")
    p.add_argument("--ttl", default="1h", help="validity (default 1h)")
    p = add("demo", "two demo pools and the proxy on 127.0.0.1:8080")
    p.add_argument("--port", type=int, default=8080, help="first port to try (default 8080)")
    p.add_argument("--load", type=float, default=20.0, metavar="RATE",
                   help="requests per second sent through the proxy (default 20; 0: none)")
    p.add_argument("--bad-green", default="0%", metavar="RATE",
                   help="green answers 500 to this share of requests, e.g. 20%% (default 0%%)")
    p.add_argument("--fresh", action="store_true",
                   help="forget the last run's state (weights, generation) under ./run/")
    return parser


def _cutover_args(p: argparse.ArgumentParser) -> None:
    # The proxy fills in what is not given, from the config's rollout: section; the
    # defaults shown are that section's own.
    r, t = config_module.RolloutConfig(), config_module.TimeoutsConfig()
    p.add_argument("pool")
    p.add_argument("--force", action="store_true",
                   help=f"skip the health wait (default: wait up to timeouts.cutover_wait, "
                        f"{t.cutover_wait:g}s)")
    p.add_argument("--steps", help="progressive rollout, e.g. 5,25,50,100 (default: all at once)")
    p.add_argument("--interval", help=f"hold each step this long, e.g. 30s "
                                      f"(default: rollout.interval, {r.interval:g}s)")
    rate = f"{r.max_error_rate:.0%}".replace("%", "%%")  # argparse formats help with %
    p.add_argument("--max-error-rate", help=f"roll back above this error rate, e.g. 1%% "
                                            f"(default: rollout.max_error_rate, {rate})")
    p.add_argument("--max-p99", help="roll back above this p99 latency, e.g. 800ms "
                                     "(default: rollout.max_p99, none)")
    p.add_argument("--min-requests", type=int,
                   help=f"requests needed to judge a step (default: rollout.min_requests, "
                        f"{r.min_requests})")
    p.add_argument("--wait", action="store_true", help="follow a progressive rollout to its end")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        return _run(args)
    except CommandError as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:  # from the console, raised before any change
        print(f"switchyard: cannot reach the admin socket: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`switchyard events -f | head`): what it wanted it got.
        # Point stdout at /dev/null so the flush at exit does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _run(args) -> int:
    command = args.command
    if command in ("serve", "check"):
        return _serve_or_check(args)
    if command == "demo":
        from .demo import run_demo

        try:
            bad = config_module.parse_rate(args.bad_green)
        except ValueError as exc:
            raise CommandError(f"--bad-green: {exc}") from None
        if args.load < 0 or args.load > 10000:
            raise CommandError("--load: expected 0..10000 requests per second")
        return run_demo(args.port, args.load, bad, args.fresh)
    return run(args, socket_path(args))


def socket_path(args) -> str:
    """--socket, else $SWITCHYARD_SOCKET, else admin.socket of -c FILE, else the default."""
    explicit = getattr(args, "socket", None) or os.environ.get("SWITCHYARD_SOCKET")
    if explicit:
        return explicit
    path = getattr(args, "config", None)
    if path:
        try:
            return config_module.load(path).admin.socket
        except config_module.ConfigError as exc:
            raise CommandError(f"{path}: {exc}") from None
    return DEFAULT_SOCKET


def _serve_or_check(args) -> int:
    path = getattr(args, "config", None)
    if not path:
        print(f"switchyard {args.command}: -c/--config FILE is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = config_module.load(path)
    except config_module.ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_REFUSED
    if args.command == "check":
        if getattr(args, "json", False):
            print(json.dumps({"ok": True, "source": cfg.source, "pools": list(cfg.pools)}))
        else:
            print(f"{path}: OK ({len(cfg.pools)} pools, listen {', '.join(map(str, cfg.listen))})")
        return EXIT_OK
    from ..dataplane.accesslog import configure
    from ..server import serve
    from ..control.state import StateError

    configure(cfg.log.format, cfg.log.level)
    try:
        return serve(cfg)
    except (OSError, ValueError, StateError, RuntimeError) as exc:  # socket, secret, state, parser
        print(f"switchyard serve: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
