"""argv -> the bodies the admin API takes: durations and rates parsed here, as numbers,
so a bad value is a usage error (exit 2) before anything is sent."""

from __future__ import annotations

from .. import config as config_module
from ..commands import CommandError, Cutover, TesterCookie, Weights


def cutover_command(args) -> Cutover:
    """The same Cutover the admin API parses from the body."""
    body: dict = {"to": args.pool}
    if args.force:
        body["force"] = True
    try:
        if args.steps:
            body["steps"] = [int(s.strip().rstrip("%")) for s in args.steps.split(",")]
        if args.interval:
            body["interval"] = config_module.parse_duration(args.interval)
        if args.max_error_rate:
            body["max_error_rate"] = config_module.parse_rate(args.max_error_rate)
        if args.max_p99:
            body["max_p99"] = config_module.parse_duration(args.max_p99)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.min_requests is not None:
        body["min_requests"] = args.min_requests
    return Cutover.from_json(body, [args.pool])


def drain_body(args) -> dict:
    body: dict = {"pool": args.pool}
    if args.upstream:
        body["upstream"] = args.upstream
    if args.force:
        body["force"] = True
    if args.timeout:
        try:
            body["timeout"] = config_module.parse_duration(args.timeout)
        except ValueError as exc:
            raise CommandError(f"--timeout: {exc}") from None
    return body


def pause_body(args) -> dict:
    if not args.timeout:
        return {}
    try:
        return {"timeout": config_module.parse_duration(args.timeout)}
    except ValueError as exc:
        raise CommandError(f"--timeout: {exc}") from None


def upstream_body(args) -> dict:
    body: dict = {"pool": args.pool, "address": args.address, "enabled": args.action == "enable"}
    if args.force:
        body["force"] = True
    return body


def weights_body(args) -> dict:
    return Weights.from_args(args.weights)


def tester_cookie_body(args) -> dict:
    try:
        ttl = config_module.parse_duration(args.ttl)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return TesterCookie(args.pool, ttl).to_json()
