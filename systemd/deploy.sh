#!/usr/bin/env bash
# Example blue/green deploy of a Hyperf release on one host, through switchyard.
#
#   deploy.sh [--steps 5,25,50,100 [--interval 30s] [--max-error-rate 1%]] RELEASE_DIR
#   deploy.sh --rollback                     traffic back to the previous color
#
# A deploy: ask switchyard which color is live -> point the idle color at the
# new release -> restart it -> cut over (switchyard refuses an unhealthy pool)
# -> watch -> drain the old color -> stop it. The old color keeps running until
# the very end, so a rollback during the watch is instant.
#
# Without --steps the cutover moves all new traffic at once. With --steps it is
# progressive: `switchyard cutover IDLE --steps ... --wait`, run by the proxy
# itself, which holds each step for --interval and rolls back by itself when
# the new color's error rate goes over --max-error-rate (both default to the
# config's `rollout:` section). If it does, this script drains and stops the
# new color and exits 1 with the proxy's reason; the old color never stopped.
#
# Run as root: it calls systemctl and rewrites /etc/switchyard/hyperf-*.env.
# Adapt it freely; the switchyard commands and exit codes are the stable part
# (0 done, 1 refused, 2 usage, 3 admin socket unreachable).
set -euo pipefail

# Settings, each overridable from the environment. (sudo does not pass the
# caller's environment on: under sudo these are the values below.)
SWITCHYARD=${SWITCHYARD:-/opt/switchyard/bin/switchyard}
ENV_DIR=${ENV_DIR:-/etc/switchyard}                  # holds hyperf-<color>.env
HEALTH_WAIT_SECONDS=${HEALTH_WAIT_SECONDS:-120}      # Hyperf's boot (annotation scan) can be slow
WATCH_SECONDS=${WATCH_SECONDS:-60}                   # watch the new color before retiring the old
POLL_SECONDS=${POLL_SECONDS:-5}
# How long `switchyard drain` lets the old color's open requests, server-sent
# event streams and WebSockets finish; whatever is still open then is cut, so
# the drain (and the deploy) always ends.
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30s}

usage() {
    sed -n '4,5p' "$0" >&2
    exit 2
}

log() { printf '%s deploy: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

# status_get PATH...: fields of one `switchyard status --json`, one line each,
# e.g. `status_get pools.green.healthy rollout.reason` -> "true" and the text.
# null, and a key that is not there (no rollout), print an empty line.
# JSON is parsed with python3, which the host has anyway, rather than jq.
status_get() {
    local json
    json=$("$SWITCHYARD" status --json)
    python3 -c '
import json, sys
status = json.load(sys.stdin)
for path in sys.argv[1:]:
    value = status
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    print(" ".join(text.splitlines()))' "$@" <<<"$json"
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
# every other line (the ports, app settings). Written next to the original
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
        healthy=$(status_get "pools.$1.healthy")
        [[ $healthy == true ]] && return 0
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# watch_new NEW OLD: show the status for WATCH_SECONDS, and past that for as
# long as OLD still has weight (someone split the traffic by hand: OLD is not
# retired while it serves). Gives up if NEW lost all its weight: someone rolled
# back, and OLD must keep running.
watch_new() {
    local new=$1 old=$2 deadline=$((SECONDS + WATCH_SECONDS))
    while ((SECONDS < deadline)) || [[ $(status_get "weights.$old") != 0 ]]; do
        [[ $(status_get "weights.$new") != 0 ]] ||
            die "$new has no weight any more (rolled back?); leaving both colors running"
        "$SWITCHYARD" status
        sleep "$POLL_SECONDS"
    done
    [[ $(status_get "weights.$new") != 0 ]] ||
        die "$new has no weight any more (rolled back?); leaving both colors running"
}

# retire COLOR: no new requests to it, what it still serves finishes (or is cut
# at DRAIN_TIMEOUT), then stop it. Only for a color without weight or whose
# weight the drain may take (another color serves).
retire() {
    "$SWITCHYARD" drain "$1" --timeout "$DRAIN_TIMEOUT" --wait ||
        log "switchyard drain $1 failed; stopping it all the same"
    systemctl stop "hyperf@$1"
}

# rollout_failed NEW OLD BEFORE: `cutover NEW --steps ... --wait` exited 1.
# Either the cutover was refused before any step (no rollout of ours: BEFORE is
# the started_at of the rollout status showed before we began), or the rollout
# ended otherwise than completed. Always exits 1.
rollout_failed() {
    local new=$1 old=$2 before=$3 fields f started to state reason step
    # One status for all of them (and a failed one ends the script, set -e).
    fields=$(status_get rollout.started_at rollout.to rollout.state rollout.step_index \
        rollout.percent rollout.reason)
    mapfile -t f <<<"$fields"
    started=${f[0]:-} to=${f[1]:-} state=${f[2]:-} reason=${f[5]:-}
    if [[ -z $started || $started == "$before" || $to != "$new" ]]; then
        systemctl stop "hyperf@$new"
        die "switchyard refused the cutover to $new; stopped it, $old still serves"
    fi
    step="step $((${f[3]:-0} + 1)) (${f[4]:-?}% to $new)"
    case $state in
        rolled_back)
            # `switchyard rollback` by hand: as after a plain cutover, NEW is
            # left running for whoever rolled back to look at.
            [[ $reason != "rolled back by hand" ]] ||
                die "rolled back by hand at $step; $old serves, $new left running for inspection"
            # The proxy's own verdict: all weight is back on OLD already.
            [[ $(status_get "weights.$new") == 0 ]] ||
                die "rollout to $new rolled back ($reason) but $new still has weight; both left running"
            retire "$new"
            die "the rollout to $new rolled back by itself: $reason; stopped $new, $old still serves"
            ;;
        held)
            # A proxy restart mid-rollout: both colors carry traffic.
            die "the rollout to $new is held at $step: $reason; both colors left running." \
                "Continue with '$SWITCHYARD cutover $new --steps ...' or roll back with" \
                "'switchyard-deploy --rollback'"
            ;;
        *)
            # cancelled (new weights or a drain by hand), or anything newer.
            die "the rollout to $new ended '$state' at $step: $reason; both colors left running"
            ;;
    esac
}

deploy() {
    local release=$1 pair live idle fields f before="" rc=0
    shift
    # Placeholder for your build: unpack the artifact into $release, run
    # `composer install --no-dev -o` and your migrations there (README.md,
    # "Deploying from CI")... This example expects the release in place.
    [[ $release == /* && $release != *[[:space:]]* ]] ||
        die "release dir must be an absolute path without spaces: $release"
    [[ -f $release/bin/hyperf.php ]] || die "$release/bin/hyperf.php not found"

    pair=$(colors)
    read -r live idle <<<"$pair"
    # Two pools in one directory would share runtime/ (pid file, proxy cache).
    [[ $(release_of "$live") != "$release" ]] || die "$release is what $live runs already"
    # Restarting the idle color is only safe while it serves nobody.
    fields=$(status_get rollout.state "weights.$idle")
    mapfile -t f <<<"$fields"
    [[ ${f[0]:-} != running && ${f[0]:-} != held ]] ||
        die "a rollout is not finished (${f[0]}); see switchyard status"
    [[ ${f[1]:-} == 0 ]] || die "$idle still has weight ${f[1]:-?}; finish that switch first"
    log "$live is live; starting $release on $idle"

    set_release "$idle" "$release"
    systemctl restart "hyperf@$idle" # restart: it may still run the release before last
    if ! wait_healthy "$idle"; then
        systemctl stop "hyperf@$idle"
        die "$idle not healthy after ${HEALTH_WAIT_SECONDS}s; stopped it, $live still serves"
    fi

    # "$@": the progressive options (--steps ... [--interval ...]
    # [--max-error-rate ...]), or nothing for an all-at-once cutover.
    if (($#)); then
        # Which rollout status shows now, to tell ours from an older one.
        before=$(status_get rollout.started_at)
        "$SWITCHYARD" cutover "$idle" "$@" --wait || rc=$?
    else
        "$SWITCHYARD" cutover "$idle" || rc=$?
    fi
    case $rc in
        0) log "traffic is on $idle; watching" ;;
        1)
            (($#)) && rollout_failed "$idle" "$live" "$before"
            systemctl stop "hyperf@$idle"
            die "switchyard refused the cutover to $idle; stopped it, $live still serves"
            ;;
        2)
            # A usage error: nothing was sent to the proxy.
            systemctl stop "hyperf@$idle"
            die "switchyard cutover rejected its arguments: $*; stopped $idle, $live still serves"
            ;;
        *) die "switchyard cutover exited $rc; $idle left running for inspection (switchyard status)" ;;
    esac

    watch_new "$idle" "$live"
    # Requests already sent to the old color finish there; wait for them, and
    # cut long-lived ones (event streams, WebSockets) at DRAIN_TIMEOUT.
    "$SWITCHYARD" drain "$live" --timeout "$DRAIN_TIMEOUT" --wait
    systemctl stop "hyperf@$live"
    # A reboot must bring up the color that serves, not the one that used to.
    systemctl enable --quiet "hyperf@$idle"
    systemctl disable --quiet "hyperf@$live"
    log "done: $idle serves $release; the next release goes to $live"
}

rollback() {
    local previous pair live idle current
    previous=$(status_get previous)
    [[ -n $previous ]] || die "switchyard has no previous pool to roll back to"
    pair=$(colors)
    read -r live idle <<<"$pair"
    # The color traffic leaves. Not simply the live one: in the middle of a
    # rollout the pool rolled back to may still have the most weight.
    current=$live
    [[ $current != "$previous" ]] || current=$idle
    # Start the previous color before moving traffic: a deploy stops it at the
    # end, and a rollback onto a stopped pool would have nowhere to send requests.
    if ! systemctl is-active --quiet "hyperf@$previous"; then
        log "starting hyperf@$previous"
        systemctl start "hyperf@$previous"
    fi
    wait_healthy "$previous" ||
        die "$previous not healthy after ${HEALTH_WAIT_SECONDS}s; traffic stays on $current"
    "$SWITCHYARD" rollback
    # A reboot brings up the color that serves now, and only that one: $current
    # keeps running (to be looked at) but does not come back at boot.
    systemctl enable --quiet "hyperf@$previous"
    systemctl disable --quiet "hyperf@$current"
    log "rolled back to $previous; stop $current once you are done with it:"
    log "  $SWITCHYARD drain $current --wait && systemctl stop hyperf@$current"
}

# Options come before the release directory; --steps turns the progressive
# cutover on, --interval and --max-error-rate tune it.
main() {
    local progressive=() steps=""
    while (($#)); do
        case $1 in
            --rollback) (($# == 1 && ${#progressive[@]} == 0)) || usage; rollback; return ;;
            --steps | --interval | --max-error-rate)
                if (($# < 2)) || [[ -z $2 || $2 == -* ]]; then usage; fi
                [[ $1 == --steps ]] && steps=$2
                progressive+=("$1" "$2")
                shift 2
                ;;
            --steps=* | --interval=* | --max-error-rate=*)
                [[ -n ${1#*=} ]] || usage
                [[ $1 == --steps=* ]] && steps=${1#*=}
                progressive+=("${1%%=*}" "${1#*=}")
                shift
                ;;
            -*) usage ;;
            *) break ;;
        esac
    done
    (($# == 1)) || usage
    # --interval or --max-error-rate alone would be a plain cutover that
    # silently ignored them.
    ((${#progressive[@]} == 0)) || [[ -n $steps ]] || usage
    deploy "$1" "${progressive[@]}"
}

main "$@"
