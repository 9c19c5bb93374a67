#!/usr/bin/env bash
# Rolling restart of one pool, one upstream at a time, through switchyard.
#
#   rolling.sh POOL                 restart every instance of POOL in turn
#
# For a pool that runs as several Swoole instances (two ports, or Unix
# sockets), each a systemd unit of its own: for each upstream of the pool,
# take it out of rotation and drain it (`switchyard drain POOL --upstream
# ADDRESS --wait`), restart its instance, wait until switchyard sees it
# healthy, put it back (`switchyard upstream enable`). The pool keeps serving
# from its other instances the whole time, and a request already sent to an
# instance finishes there. On any failure the instance being restarted is
# put back into rotation if it is healthy (an unhealthy one stays out, named),
# and the script exits 1 with the reason; the instances not reached yet were
# never touched.
#
# Settings, each overridable from the environment:
#   SWITCHYARD   the switchyard command
#   RESTART      how to restart one instance; {pool}, {address} and {port} are
#                replaced (default: systemctl restart hyperf@{pool}-{port}, a unit
#                per port, its env file /etc/switchyard/hyperf-{pool}-{port}.env)
#   HEALTH_WAIT_SECONDS  how long a restarted instance may take to be healthy
#   HEALTH_SETTLE_SECONDS  wait this long after a restart before trusting the health
#                checks: at least health.fall x health.interval, so that an answer
#                from before the restart cannot pass for the new instance's
#   DRAIN_TIMEOUT        cut what is still open to an instance after this long
set -euo pipefail

SWITCHYARD=${SWITCHYARD:-/opt/switchyard/bin/switchyard}
RESTART=${RESTART:-"systemctl restart hyperf@{pool}-{port}"}
HEALTH_WAIT_SECONDS=${HEALTH_WAIT_SECONDS:-120}
HEALTH_SETTLE_SECONDS=${HEALTH_SETTLE_SECONDS:-3}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30s}

log() { printf '%s rolling: %s\n' "$(date +%T)" "$*" >&2; }

# upstream_field POOL ADDRESS KEY: one field of that upstream in `status --json`.
upstream_field() {
    "$SWITCHYARD" status --json | python3 -c '
import json, sys
pool, address, key = sys.argv[1:]
for up in json.load(sys.stdin)["pools"][pool]["upstreams"]:
    if up["address"] == address:
        print(json.dumps(up[key]))' "$@"
}

# upstreams POOL: its addresses, one a line.
upstreams() {
    "$SWITCHYARD" status --json | python3 -c '
import json, sys
pools = json.load(sys.stdin)["pools"]
if sys.argv[1] not in pools:
    sys.exit(f"no pool {sys.argv[1]!r} (pools: {sorted(pools)})")
for up in pools[sys.argv[1]]["upstreams"]:
    print(up["address"])' "$1"
}

wait_healthy() {
    local deadline=$((SECONDS + HEALTH_WAIT_SECONDS))
    sleep "$HEALTH_SETTLE_SECONDS"
    until [[ $(upstream_field "$1" "$2" healthy) == true ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# The upstream this run has out of rotation now (one at a time), if any.
current=""
recover() {
    [[ -n $current ]] || return 0
    [[ $(upstream_field "$pool" "$current" enabled) == false ]] || return 0
    if [[ $(upstream_field "$pool" "$current" healthy) == true ]]; then
        "$SWITCHYARD" upstream enable "$pool" "$current" >/dev/null &&
            log "put $current back into rotation"
    else
        log "left $current out of rotation: it is not healthy"
    fi
}

fail() {
    log "$*"
    recover
    exit 1
}

restart_one() {
    local address=$1 port command
    port=${address##*:}
    port=${port##*/}  # unix:/run/hyperf/blue-1.sock -> blue-1.sock
    command=${RESTART//\{pool\}/$pool}
    command=${command//\{address\}/$address}
    command=${command//\{port\}/$port}

    log "$address: out of rotation, draining"
    current=$address  # from here a failure puts it back (if it was taken out at all)
    "$SWITCHYARD" drain "$pool" --upstream "$address" --timeout "$DRAIN_TIMEOUT" --wait ||
        fail "$address: the drain failed (refused as the pool's last healthy one?)"
    log "$address: restarting ($command)"
    bash -c "$command" || fail "$address: restart failed: $command"
    wait_healthy "$pool" "$address" ||
        fail "$address: not healthy ${HEALTH_WAIT_SECONDS}s after its restart"
    "$SWITCHYARD" upstream enable "$pool" "$address" >/dev/null ||
        fail "$address: switchyard refused to enable it again"
    current=""
    log "$address: back in rotation"
}

if (($# != 1)) || [[ $1 == -* ]]; then
    sed -n '4p' "$0" >&2
    exit 2
fi
pool=$1
mapfile -t addresses < <(upstreams "$pool")
((${#addresses[@]} > 1)) ||
    { log "pool $pool has ${#addresses[@]} upstream(s): a rolling restart needs two or more"; exit 1; }
for address in "${addresses[@]}"; do
    restart_one "$address"
done
log "done: every upstream of $pool restarted and back in rotation"
