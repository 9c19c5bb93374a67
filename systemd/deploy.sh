#!/usr/bin/env bash
# Example blue/green deploy of a Hyperf release on one host, through switchyard.
#
#   deploy.sh /srv/app/releases/2024-06-01-abc123   put this release live
#   deploy.sh --rollback                            traffic back to the previous color
#
# A deploy: ask switchyard which color is live -> point the idle color at the
# new release -> restart it -> cut over (switchyard refuses an unhealthy pool)
# -> watch -> drain the old color -> stop it. The old color keeps running until
# the very end, so a rollback during the watch is instant.
#
# Run as root: it calls systemctl and rewrites /etc/switchyard/hyperf-*.env.
# Adapt it freely; the switchyard commands and exit codes are the stable part
# (0 done, 1 refused, 2 usage, 3 admin socket unreachable).
set -euo pipefail

# Settings, each overridable from the environment.
SWITCHYARD=${SWITCHYARD:-/opt/switchyard/bin/switchyard}
ENV_DIR=${ENV_DIR:-/etc/switchyard}                  # holds hyperf-<color>.env
HEALTH_WAIT_SECONDS=${HEALTH_WAIT_SECONDS:-120}      # Hyperf's boot (annotation scan) can be slow
WATCH_SECONDS=${WATCH_SECONDS:-60}                   # watch the new color before retiring the old
POLL_SECONDS=${POLL_SECONDS:-5}

usage() {
    sed -n '4,5p' "$0" >&2
    exit 2
}

log() { printf '%s deploy: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

# status_get KEY...: one field of `switchyard status --json`, e.g.
# `status_get pools green healthy` -> true. null prints as an empty line.
# JSON is parsed with python3, which the host has anyway, rather than jq.
status_get() {
    local json
    json=$("$SWITCHYARD" status --json)
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value[key]
print("" if value is None else json.dumps(value).strip("\""))' "$@" <<<"$json"
}

# colors: prints "LIVE IDLE". The live color is the pool with the most weight,
# the idle one is the other; anything but two pools is not this script's setup.
colors() {
    local json
    json=$("$SWITCHYARD" status --json)
    python3 -c '
import json, sys
weights = json.load(sys.stdin)["weights"]
if len(weights) != 2:
    sys.exit(f"deploy.sh expects exactly two pools, not {sorted(weights)}")
live = max(weights, key=weights.get)
print(live, next(pool for pool in weights if pool != live))' <<<"$json"
}

# release_of COLOR: the RELEASE_DIR its env file currently names.
release_of() {
    sed -n 's/^RELEASE_DIR=//p' "$ENV_DIR/hyperf-$1.env" | tail -n 1
}

# set_release COLOR DIR: rewrite RELEASE_DIR in the color's env file and keep
# every other line (HYPERF_PORT, app settings). Written next to the original
# and renamed over it, so hyperf@COLOR never reads a half-written file.
set_release() {
    local file="$ENV_DIR/hyperf-$1.env" tmp
    [[ -f $file ]] || die "$file is missing; copy it from hyperf-$1.env.example"
    tmp=$(mktemp "$file.XXXXXX")
    grep -v '^RELEASE_DIR=' "$file" >"$tmp" || true   # no other line is fine
    printf 'RELEASE_DIR=%s\n' "$2" >>"$tmp"
    chmod --reference="$file" "$tmp"
    chown --reference="$file" "$tmp"
    mv -f "$tmp" "$file"
}

# wait_healthy COLOR: until switchyard's health checks pass for it, or fail
# after HEALTH_WAIT_SECONDS. `cutover` waits for health too, but only for its
# own (shorter) wait time, which a cold Hyperf boot can exceed.
wait_healthy() {
    local deadline=$((SECONDS + HEALTH_WAIT_SECONDS)) healthy
    while :; do
        healthy=$(status_get pools "$1" healthy)
        [[ $healthy == true ]] && return 0
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# watch_new NEW OLD: show the status for WATCH_SECONDS, and past that for as long
# as OLD still has weight (a progressive rollout configured as the default
# is still moving). Gives up if NEW lost all its weight: someone, or the
# rollout's error-rate guard, rolled back, and OLD must keep running.
watch_new() {
    local new=$1 old=$2 deadline=$((SECONDS + WATCH_SECONDS))
    while ((SECONDS < deadline)) || [[ $(status_get weights "$old") != 0 ]]; do
        [[ $(status_get weights "$new") != 0 ]] ||
            die "$new has no weight any more (rolled back?); leaving both colors running"
        "$SWITCHYARD" status
        sleep "$POLL_SECONDS"
    done
    [[ $(status_get weights "$new") != 0 ]] ||
        die "$new has no weight any more (rolled back?); leaving both colors running"
}

deploy() {
    local release=$1 pair live idle rc=0
    # Placeholder for your build: unpack the artifact into $release, run
    # `composer install --no-dev -o`, warm Hyperf's scan cache... This
    # example expects the release already in place.
    [[ $release == /* && $release != *[[:space:]]* ]] ||
        die "release dir must be an absolute path without spaces: $release"
    [[ -f $release/bin/hyperf.php ]] || die "$release/bin/hyperf.php not found"

    pair=$(colors)
    read -r live idle <<<"$pair"
    # Two pools in one directory would share runtime/ (pid file, proxy cache).
    [[ $(release_of "$live") != "$release" ]] || die "$release is what $live runs already"
    log "$live is live; starting $release on $idle"

    set_release "$idle" "$release"
    systemctl restart "hyperf@$idle" # restart: it may still run the release before last
    if ! wait_healthy "$idle"; then
        systemctl stop "hyperf@$idle"
        die "$idle not healthy after ${HEALTH_WAIT_SECONDS}s; stopped it, $live still serves"
    fi

    "$SWITCHYARD" cutover "$idle" || rc=$?
    case $rc in
        0) log "traffic is on $idle; watching" ;;
        1)
            systemctl stop "hyperf@$idle"
            die "switchyard refused the cutover to $idle; stopped it, $live still serves"
            ;;
        *) die "switchyard cutover exited $rc; $idle left running for inspection" ;;
    esac

    watch_new "$idle" "$live"
    # Requests already sent to the old color finish there; wait for them.
    "$SWITCHYARD" drain "$live" --wait
    systemctl stop "hyperf@$live"
    # A reboot must bring up the color that serves, not the one that used to.
    systemctl enable --quiet "hyperf@$idle"
    systemctl disable --quiet "hyperf@$live"
    log "done: $idle serves $release; the next release goes to $live"
}

rollback() {
    local previous pair current
    previous=$(status_get previous)
    [[ -n $previous ]] || die "switchyard has no previous pool to roll back to"
    pair=$(colors)
    current=${pair%% *}
    # Start the previous color before moving traffic: a deploy stops it at the
    # end, and a rollback onto a stopped pool would have nowhere to send requests.
    if ! systemctl is-active --quiet "hyperf@$previous"; then
        log "starting hyperf@$previous"
        systemctl start "hyperf@$previous"
    fi
    wait_healthy "$previous" ||
        die "$previous not healthy after ${HEALTH_WAIT_SECONDS}s; traffic stays on $current"
    "$SWITCHYARD" rollback
    systemctl enable --quiet "hyperf@$previous"
    log "rolled back to $previous; stop $current once you are done with it:"
    log "  $SWITCHYARD drain $current --wait && systemctl stop hyperf@$current"
}

case ${1:-} in
    --rollback) (($# == 1)) || usage; rollback ;;
    "" | -*) usage ;;
    *) (($# == 1)) || usage; deploy "$1" ;;
esac
