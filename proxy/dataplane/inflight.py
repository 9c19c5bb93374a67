"""What a data plane has in flight, per pool: what `status` shows a drain waiting on."""

from __future__ import annotations


def in_flight(clients, tunnels) -> dict[str, list[tuple[str, float, bytes, bytes]]]:
    """Exchanges and tunnels open to each pool, oldest first, as
    (kind, started, method, target)."""
    out: dict[str, list] = {}
    for client in clients:
        exchange = client.current
        up = exchange.holds() if exchange is not None else None
        if up is not None:
            req = exchange.request
            out.setdefault(up.pool, []).append(("http", req.started, req.method, req.target))
    for tunnel in tunnels:
        req = tunnel.req
        out.setdefault(tunnel.pool.name, []).append(
            ("websocket", req.started, req.method, req.target))
    for items in out.values():
        items.sort(key=lambda item: item[1])
    return out
