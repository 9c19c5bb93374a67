"""Human-readable text from the admin API's answers, shared by the commands."""

from __future__ import annotations


def table(rows: list[tuple[str, ...]], right_from: int | None = None,
          min_widths: tuple[int, ...] = ()) -> list[str]:
    """Rows as columns two spaces apart.  Right-aligned are the columns from
    `right_from` on, headers too; without it, each cell but the first column's
    that starts with a digit."""
    widths = [max(min_widths[i] if i < len(min_widths) else 0, *(len(r[i]) for r in rows))
              for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = []
        for i, (c, w) in enumerate(zip(row, widths)):
            right = i >= right_from if right_from is not None else i > 0 and c[:1].isdigit()
            cells.append(c.rjust(w) if right else c.ljust(w))
        out.append("  ".join(cells).rstrip())
    return out


def weights_text(weights: dict) -> str:
    return " ".join(f"{p}={w}" for p, w in weights.items())


def render_status(data: dict) -> str:
    """`switchyard status` as a table a person can read at a glance."""
    lines = [f"generation {data['generation']}   weights {weights_text(data['weights'])}   "
             f"previous {data.get('previous') or '-'}"]
    if data.get("hot_path") == "pure python":
        lines.append("data plane: pure Python (not compiled; it costs more CPU per request)")
    if data.get("draining"):
        lines.append("proxy is shutting down (draining)")
    pause = data.get("pause")
    if pause:
        lines.append(f"PAUSED for {pause['seconds']:.0f}s: {pause['waiting']} requests wait "
                     f"(resume, or they go on by themselves in {pause['remaining']:.0f}s)")
    rows = [("POOL", "WEIGHT", "HEALTH", "IN-FLIGHT", "REQUESTS", "ERRORS", "ERROR RATE")]
    for name, pool in data["pools"].items():
        rate = pool["errors"] / pool["requests"] if pool["requests"] else 0.0
        rows.append((name, str(pool["weight"]), "healthy" if pool["healthy"] else "UNHEALTHY",
                     str(pool["inflight"]), str(pool["requests"]), str(pool["errors"]),
                     f"{rate:.2%}"))
    lines += table(rows)
    lines.append("")
    rows = [("POOL", "UPSTREAM", "STATE", "IN-FLIGHT", "CLOSED UNDER A REQUEST")]
    for name, pool in data["pools"].items():
        for up in pool["upstreams"]:
            state = ("up" if up["healthy"] else "DOWN") + \
                ("" if up.get("enabled", True) else ", disabled")
            closes = up.get("closes", 0)
            rows.append((name, up["address"], state, str(up["inflight"]),
                         f"{closes} ({up.get('resent', 0)} resent)" if closes else "-"))
    lines += table(rows)
    if data.get("workers"):
        lines.append("")
        rows = [("WORKER", "PID", "IN-FLIGHT", "REQUESTS", "CONNECTIONS", "RESTARTS")]
        for w in data["workers"]:
            rows.append((str(w.get("slot", "-")), str(w["pid"]), str(w["inflight"]),
                         str(w["requests"]), str(w.get("clients", "-")),
                         str(w.get("restarts", 0))))
        lines += table(rows)
    if data.get("cluster"):
        lines.append("")
        lines += fleet_lines(data["cluster"])
    if data.get("grace"):
        lines.append("")
        lines.append("grace: " + ", ".join(f"{p} honours cookies for {s}s more"
                                           for p, s in data["grace"].items()))
    if data.get("rollout"):
        lines.append("")
        lines.append("rollout: " + rollout_line(data["rollout"], data))
    return "\n".join(lines)


def fleet_lines(fleet: dict) -> list[str]:
    """The fleet this host is part of: etcd's reachability, then every live host."""
    if fleet["reachable"]:
        head = f"fleet {fleet['key']}: this host is {fleet['host']}, etcd reachable"
    else:
        head = (f"fleet {fleet['key']}: this host is {fleet['host']}, ETCD UNREACHABLE since "
                f"{fleet['unreachable_since']} ({fleet['unreachable_for']:.0f}s): routing on the "
                "last known state, changes refused")
    rows = [("HOST", "GENERATION", "UNHEALTHY POOLS", "ROLE")]
    for h in fleet["hosts"]:
        sick = [p for p, v in h["pools"].items() if not v["healthy"]]
        role = ("leader" if h["leader"] else "") + (" (this host)" if h["self"] else "")
        rows.append((h["host"], str(h["generation"]), ", ".join(sick) or "-",
                     role.strip() or "-"))
    return [head, *table(rows)]


def reload_summary(data: dict) -> str:
    applied = ", ".join(data.get("applied") or []) or "nothing changed"
    lines = [f"reloaded: {applied}"]
    if data.get("restart_needed"):
        lines.append("NOT applied until a restart (systemctl restart switchyard): "
                     + ", ".join(data["restart_needed"]))
    return "\n".join(lines)


def rollout_line(rollout: dict | None, status: dict) -> str:
    if rollout is None:
        return f"no rollout; weights {weights_text(status['weights'])}"
    state = rollout.get("state")
    if state == "rolled_back":
        return f"rolled back: {rollout.get('reason')}"
    step = rollout.get("step_index", 0) + 1
    steps = rollout.get("steps", [])
    window = rollout.get("window") or {}
    line = (f"{state}: step {step}/{len(steps)} ({rollout.get('percent')}% to "
            f"{rollout.get('to')}), {window.get('requests', 0)} requests, "
            f"error rate {window.get('error_rate', 0):.2%}")
    if state != "running":
        return line + (f": {rollout['reason']}" if rollout.get("reason") else "")
    line += f", next in {rollout.get('next_step_in', 0):.0f}s"
    # Waiting for traffic looks like being stuck unless it says so.
    return line + (f"; waiting: {rollout['reason']}" if rollout.get("reason") else "")


def holders(holding: list[dict]) -> str:
    """The oldest exchanges in flight, as `GET /sse (12s)`; ages rounded so a
    plain listing changes only when something does."""
    return ", ".join(f"{'WebSocket ' if h['kind'] == 'websocket' else h['method'] + ' '}"
                     f"{h['path']} ({int(h['age'])}s)" for h in holding[:3])


def drain_progress(name: str, inflight: int, peak: int, held_by: str, tty: bool) -> str:
    """A line per change, or on a terminal a bar redrawn in place (no newline)."""
    held = f"; oldest: {held_by}" if held_by else ""
    if not tty:
        return f"{name}: {inflight} in flight{held}"
    width = 30
    filled = 0 if peak == 0 else round(width * inflight / peak)
    bar = "#" * filled + "." * (width - filled)
    return f"\r{name}: [{bar}] {inflight:>5} in flight{held[:80]}\033[K"
