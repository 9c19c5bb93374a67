"""systemd integration: socket activation, sd_notify, the unit files, deploy.sh.

Everything runs for real: child processes that inherit a listening socket the
way systemd passes it, a datagram socket standing in for systemd's notify
socket, systemd-analyze on the units and deploy.sh against stub commands.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from proxy.systemd import Notifier, listen_fds

from . import support

pytestmark = pytest.mark.timeout(60)

ROOT = Path(support.ROOT)
UNIT_DIR = ROOT / "systemd"
DEPLOY = UNIT_DIR / "deploy.sh"

# Runs in the child: reports what listen_fds() found, then echoes one connection.
ACTIVATED_CHILD = """
import fcntl, json, os, socket
inheritable_before = not fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
from proxy.systemd import listen_fds
socks = listen_fds()
print(json.dumps({
    "count": len(socks),
    "family": [s.family.name for s in socks],
    "type": [s.type.name for s in socks],
    "inheritable_before": inheritable_before,
    "inheritable_after": [os.get_inheritable(s.fileno()) for s in socks],
    "env_left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}), flush=True)
if socks:
    conn, _ = socks[0].accept()
    with conn:
        conn.sendall(conn.recv(1024))
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env | extra


def _echo(address: tuple[str, int], payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall(payload)
        return conn.recv(1024)


# --- listen_fds -------------------------------------------------------------


def _spawn_activated(child: Path, listener: socket.socket) -> subprocess.Popen[str]:
    """Start child.py with the listener as fd 3, LISTEN_PID being its own pid.

    bash moves the descriptor to 3 and exports LISTEN_PID=$$ before exec, so the
    pid is the one python will run as, exactly as systemd does it.
    """
    fd = listener.fileno()
    move = "" if fd == 3 else f"3<&{fd} {fd}<&-"
    script = f'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec "$@" {move}'
    return subprocess.Popen(
        ["bash", "-c", script, "bash", sys.executable, str(child)],
        pass_fds=(fd,),
        env=_child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_listen_fds_adopts_the_inherited_socket_and_serves_on_it(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(ACTIVATED_CHILD)
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    with _spawn_activated(child, listener) as proc:
        listener.close()  # from here on only the child holds the socket
        report = json.loads(proc.stdout.readline())
        assert _echo(address, b"ping") == b"ping"
        assert proc.wait(timeout=10) == 0
    assert report == {
        "count": 1,
        "family": ["AF_INET"],
        "type": ["SOCK_STREAM"],
        "inheritable_before": True,
        "inheritable_after": [False],
        "env_left": [],
    }


def test_listen_fds_ignores_variables_meant_for_another_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "http")
    assert listen_fds() == []
    assert not [k for k in os.environ if k.startswith("LISTEN_")]


def test_listen_fds_keeps_variables_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "1"


@pytest.mark.parametrize("fds", [None, "", "two", "0", "-1"])
def test_listen_fds_is_empty_without_a_valid_count(monkeypatch: pytest.MonkeyPatch, fds: str | None) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    if fds is None:
        monkeypatch.delenv("LISTEN_FDS", raising=False)
    else:
        monkeypatch.setenv("LISTEN_FDS", fds)
    assert listen_fds() == []
    assert "LISTEN_PID" not in os.environ


def test_listen_fds_is_empty_when_not_activated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert listen_fds() == []


def test_listen_fds_under_real_systemd_socket_activate(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(ACTIVATED_CHILD)
    port = support.free_port()
    cmd = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", f"PYTHONPATH={ROOT}"]
    with subprocess.Popen(
        [*cmd, sys.executable, str(child)],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert "Listening on" in proc.stderr.readline()
        # Without --accept it waits for the first connection, then execs the
        # child in its own process, which keeps the pid LISTEN_PID names.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"ping")
            report = json.loads(proc.stdout.readline())
            assert conn.recv(1024) == b"ping"
        assert proc.wait(timeout=10) == 0
    assert report["count"] == 1
    assert report["inheritable_after"] == [False]
    assert report["env_left"] == []


# --- Notifier ---------------------------------------------------------------


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch):
    # A short directory: unix socket paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sy-") as directory:
        path = os.path.join(directory, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(path)
            receiver.settimeout(5)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield receiver


def _received(receiver: socket.socket) -> str:
    return receiver.recv(4096).decode()


def test_notifier_sends_ready_stopping_and_watchdog(notify_socket: socket.socket) -> None:
    with Notifier.from_environment() as notifier:
        notifier.ready()
        notifier.watchdog()
        notifier.stopping()
    assert [_received(notify_socket) for _ in range(3)] == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_status_stays_on_one_line(notify_socket: socket.socket) -> None:
    with Notifier.from_environment() as notifier:
        notifier.ready("serving on :80")
        notifier.status("draining\n12 in flight")
    assert _received(notify_socket) == "READY=1\nSTATUS=serving on :80"
    assert _received(notify_socket) == "STATUS=draining 12 in flight"


def test_notifier_reloading_carries_the_monotonic_clock(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with Notifier.from_environment() as notifier:
        notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = _received(notify_socket).split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=")
    assert before <= int(second.removeprefix("MONOTONIC_USEC=")) <= after


def test_notifier_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"switchyard-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        with Notifier.from_environment() as notifier:
            notifier.ready()
        assert _received(receiver) == "READY=1"


def test_notifier_without_notify_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    with Notifier.from_environment() as notifier, capture_logs() as logs:
        notifier.ready("x")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()
        assert not notifier.enabled
        assert notifier.watchdog_interval() is None
    assert logs == []


def test_notifier_logs_a_failed_send_and_carries_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with Notifier.from_environment() as notifier, capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
    assert [entry["event"] for entry in logs] == ["sd_notify_failed", "sd_notify_failed"]
    assert logs[0]["message"] == "READY=1"
    assert logs[0]["log_level"] == "warning"


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("10000000", None, 5.0),
        ("10000000", "ours", 5.0),
        ("10000000", "other", None),
        ("3000000", "ours", 1.5),
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    expected: float | None,
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        monkeypatch.delenv(name, raising=False)
        if value is not None:
            pids = {"ours": os.getpid(), "other": os.getppid()}
            monkeypatch.setenv(name, str(pids.get(value, value)))
    with Notifier.from_environment() as notifier:
        assert notifier.watchdog_interval() == expected


# --- unit files -------------------------------------------------------------


def _runnable(unit_text: str) -> str:
    """Point Exec*= lines whose program is not installed here at /bin/true.

    verify checks that each command exists; /opt/switchyard is not installed on
    a test machine, and everything else about the line stays as written.
    """

    def swap(match: re.Match[str]) -> str:
        path = match.group(3)
        return match.group(0) if os.access(path, os.X_OK) else match.group(1) + match.group(2) + "/bin/true"

    return re.sub(r"^(Exec\w+=)([-@:+!]*)(\S+)", swap, unit_text, flags=re.M)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # .ci/run installs systemd: a missing systemd-analyze fails here, never skips.
    for name in ("switchyard.socket", "switchyard.service", "hyperf@.service"):
        (tmp_path / name).write_text(_runnable((UNIT_DIR / name).read_text()))
    # verify instantiates a template from the instance name; no file needed for it.
    targets = ["switchyard.socket", "switchyard.service", "hyperf@blue.service", "hyperf@green.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / t) for t in targets)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    about_ours = [line for line in output.splitlines() if re.search(r"switchyard|hyperf|" + re.escape(str(tmp_path)), line)]
    assert about_ours == [], output
    assert result.returncode == 0, output


def _directives(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.M))


def test_journald_rate_limit_is_raised_for_the_proxy() -> None:
    # journald's default (10000 lines per 30s, times 4-6 for free disk space) would
    # drop access lines above ~2000 req/s; the unit allows more than one proxy
    # serves. The verify test above fails if systemd does not know either key.
    service = _directives((UNIT_DIR / "switchyard.service").read_text())
    interval = service["LogRateLimitIntervalSec"]
    assert re.fullmatch(r"\d+s", interval), interval
    assert int(service["LogRateLimitBurst"]) / int(interval[:-1]) >= 50_000  # lines a second


def _env_example(color: str) -> dict[str, str]:
    text = (UNIT_DIR / f"hyperf-{color}.env.example").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    # EnvironmentFile= syntax: VAR=value, nothing quoted, no trailing comment.
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^\s\"'#]+", line) for line in lines), lines
    values = dict(line.split("=", 1) for line in lines)
    assert len(values) == len(lines), "a variable is set twice"
    return values


def test_env_examples_give_every_port_per_color_and_own_release_dirs() -> None:
    blue, green = _env_example("blue"), _env_example("green")
    ports = {"HYPERF_PORT", "HYPERF_WS_PORT", "HYPERF_RPC_PORT", "HYPERF_METRIC_PORT"}
    assert {k for k in blue if k.endswith("_PORT")} == ports
    assert {k for k in green if k.endswith("_PORT")} == ports
    every = [int(env[k]) for env in (blue, green) for k in sorted(ports)]
    assert len(set(every)) == len(every), every  # no port wanted twice, within or across colors
    assert (blue["HYPERF_PORT"], green["HYPERF_PORT"]) == ("9501", "9502")  # pools.*.upstreams
    assert blue["RELEASE_DIR"] != green["RELEASE_DIR"]


def test_every_port_variable_is_documented_where_the_app_reads_it() -> None:
    unit = (UNIT_DIR / "hyperf@.service").read_text()
    readme = (UNIT_DIR / "README.md").read_text()
    for name in _env_example("blue"):
        if name.endswith("_PORT"):
            assert f"env('{name}'" in unit, name
            assert f"env('{name}'" in readme, name


def test_service_timeouts_leave_room_for_the_drain() -> None:
    service = (UNIT_DIR / "switchyard.service").read_text()
    hyperf = (UNIT_DIR / "hyperf@.service").read_text()
    assert re.search(r"^TimeoutStopSec=45s$", service, re.M)  # > timeouts.drain 30s
    assert re.search(r"^TimeoutStopSec=40s$", hyperf, re.M)  # > max_wait_time 30


# --- deploy.sh --------------------------------------------------------------


def test_deploy_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(DEPLOY)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [DEPLOY, UNIT_DIR / "rolling.sh"], ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script) -> None:
    # .ci/run installs shellcheck: a missing one fails here rather than passing silently.
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout


# A fake switchyard and systemctl that share one state file, so deploy.sh sees
# a pool become healthy when it is started, and a log of what it did. A
# progressive cutover (--steps) ends the way state["outcome"] says, as the
# proxy's rollout would: status --json then shows that rollout.
FAKE_SWITCHYARD = """
import json, os, sys, time
path, args = os.environ["FAKE_STATE"], sys.argv[1:]
state = json.load(open(path))
weights = state["weights"]
live = max(weights, key=weights.get)
if args[0] == "status":
    pools = {p: {"healthy": p in state["running"], "weight": w} for p, w in weights.items()}
    status = {"generation": 1, "weights": weights, "previous": state["previous"], "pools": pools,
              "rollout": state.get("rollout")}
    print(json.dumps(status) if "--json" in args else f"weights: {weights}")
    sys.exit(0)
open(os.environ["FAKE_LOG"], "a").write("switchyard " + " ".join(args) + "\\n")
if args[0] == "cutover":
    target = args[1]
    if state.get("usage"):
        print("switchyard: --interval: 'soon' is not a duration", file=sys.stderr)
        sys.exit(2)
    if state.get("refuse") or target not in state["running"]:
        print(f"switchyard: refused (409): {target} is not healthy", file=sys.stderr)
        sys.exit(1)
    if "--steps" in args:
        outcome = state.get("outcome", "completed")
        steps = [int(s) for s in args[args.index("--steps") + 1].split(",")]
        index = {"completed": len(steps) - 1, "held": 1}.get(outcome, 0)
        reason = {
            "completed": f"all traffic on {target}",
            "rolled_back": f"step 1 ({steps[0]}% to {target}): error rate 12.50% over 1.00%",
            "by_hand": "rolled back by hand",
            "held": "the proxy restarted during this step",
        }[outcome]
        state["rollout"] = {
            "to": target, "from": live, "steps": steps, "step_index": index,
            "percent": steps[index], "reason": reason, "started_at": time.time(),
            "state": "rolled_back" if outcome == "by_hand" else outcome,
        }
        if outcome == "completed":
            state["previous"], state["weights"] = live, {p: int(p == target) * 100 for p in weights}
        elif outcome == "held":
            state["weights"] = {p: steps[index] if p == target else 100 - steps[index] for p in weights}
        json.dump(state, open(path, "w"))
        print("completed" if outcome == "completed" else f"{outcome}: {reason}")
        sys.exit(0 if outcome == "completed" else 1)
    state["previous"], state["weights"] = live, {p: int(p == target) * 100 for p in weights}
elif args[0] == "rollback":
    back = state["previous"]
    state["previous"], state["weights"] = live, {p: int(p == back) * 100 for p in weights}
json.dump(state, open(path, "w"))
"""

FAKE_SYSTEMCTL = """
import json, os, sys
path, args = os.environ["FAKE_STATE"], sys.argv[1:]
state = json.load(open(path))
color = args[-1].split("@")[1]
if args[0] == "is-active":
    sys.exit(0 if color in state["running"] else 3)
open(os.environ["FAKE_LOG"], "a").write("systemctl " + " ".join(args) + "\\n")
if args[0] in ("start", "restart"):
    state["running"] = sorted(set(state["running"]) | {color})
elif args[0] == "stop":
    state["running"] = [c for c in state["running"] if c != color]
json.dump(state, open(path, "w"))
"""


def _example_env(color: str) -> str:
    """The shipped env example, as installed for a color that ran an older release."""
    text = (UNIT_DIR / f"hyperf-{color}.env.example").read_text()
    return re.sub(r"^RELEASE_DIR=.*$", f"RELEASE_DIR=/srv/app/releases/old-{color}", text, flags=re.M)


class FakeHost:
    def __init__(self, root: Path, weights: dict[str, int], running: list[str], previous: str | None,
                 **extra) -> None:
        self.root = root
        (root / "bin").mkdir()
        (root / "etc").mkdir()
        # -S: no site-packages to import, for speed; the fakes and deploy.sh's
        # python3 snippets need only the standard library.
        python3 = f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n'
        for name, code in (("switchyard", f"#!{sys.executable} -S\n{FAKE_SWITCHYARD}"),
                           ("systemctl", f"#!{sys.executable} -S\n{FAKE_SYSTEMCTL}"),
                           ("python3", python3)):
            (root / "bin" / name).write_text(code)
            (root / "bin" / name).chmod(0o755)
        for color in ("blue", "green"):
            (root / "etc" / f"hyperf-{color}.env").write_text(_example_env(color))
        self.save({"weights": weights, "running": running, "previous": previous, **extra})

    def save(self, state: dict) -> None:
        (self.root / "state.json").write_text(json.dumps(state))

    def state(self) -> dict:
        return json.loads((self.root / "state.json").read_text())

    def release(self, name: str) -> Path:
        release = self.root / "releases" / name
        (release / "bin").mkdir(parents=True)
        (release / "bin" / "hyperf.php").write_text("<?php\n")
        return release

    def run(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "DRAIN_TIMEOUT"} | {
            "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}",
            "SWITCHYARD": str(self.root / "bin" / "switchyard"),
            "ENV_DIR": str(self.root / "etc"),
            "FAKE_STATE": str(self.root / "state.json"),
            "FAKE_LOG": str(self.root / "calls.log"),
            "HEALTH_WAIT_SECONDS": "2",
            "WATCH_SECONDS": "0",
            "POLL_SECONDS": "0",
        } | settings
        return subprocess.run(["bash", str(DEPLOY), *args], env=env, capture_output=True, text=True, timeout=30)

    def calls(self) -> list[str]:
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []


def test_deploy_puts_the_release_on_the_idle_color_then_retires_the_old(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None)
    release = host.release("r2")
    result = host.run(str(release))
    assert result.returncode == 0, result.stderr
    assert host.calls() == [
        "systemctl restart hyperf@green",
        "switchyard cutover green",
        "switchyard drain blue --timeout 30s --wait",
        "systemctl stop hyperf@blue",
        "systemctl enable --quiet hyperf@green",
        "systemctl disable --quiet hyperf@blue",
    ]
    # Only RELEASE_DIR changed: every port and comment of the example is kept.
    kept = [line for line in _example_env("green").splitlines() if not line.startswith("RELEASE_DIR=")]
    assert (tmp_path / "etc" / "hyperf-green.env").read_text().splitlines() == [*kept, f"RELEASE_DIR={release}"]
    assert host.state()["weights"] == {"blue": 0, "green": 100}


def test_deploy_passes_the_drain_deadline(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 0, "green": 100}, ["green"], "blue")
    result = host.run(str(host.release("r2")), DRAIN_TIMEOUT="2m")
    assert result.returncode == 0, result.stderr
    assert "switchyard drain green --timeout 2m --wait" in host.calls()


PROGRESSIVE = "switchyard cutover green --steps 5,25,50,100 --interval 30s --max-error-rate 1% --wait"


@pytest.mark.parametrize(
    "options",
    [
        ["--steps", "5,25,50,100", "--interval", "30s", "--max-error-rate", "1%"],
        ["--max-error-rate=1%", "--steps=5,25,50,100", "--interval=30s"],
    ],
    ids=["separate", "equals"],
)
def test_progressive_deploy_completes_then_retires_the_old(tmp_path: Path, options: list[str]) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None)
    result = host.run(*options, str(host.release("r2")))
    assert result.returncode == 0, result.stderr
    cutover = next(call for call in host.calls() if call.startswith("switchyard cutover"))
    assert sorted(cutover.split()) == sorted(PROGRESSIVE.split())
    assert cutover.endswith(" --wait")
    assert [call for call in host.calls() if call != cutover] == [
        "systemctl restart hyperf@green",
        "switchyard drain blue --timeout 30s --wait",
        "systemctl stop hyperf@blue",
        "systemctl enable --quiet hyperf@green",
        "systemctl disable --quiet hyperf@blue",
    ]
    assert host.state()["running"] == ["green"]
    assert host.state()["weights"] == {"blue": 0, "green": 100}


def test_progressive_deploy_with_only_steps_leaves_the_rest_to_the_config(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None)
    result = host.run("--steps", "10,100", str(host.release("r2")))
    assert result.returncode == 0, result.stderr
    assert "switchyard cutover green --steps 10,100 --wait" in host.calls()


def test_progressive_deploy_stops_the_new_color_when_the_proxy_rolls_back(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None, outcome="rolled_back")
    result = host.run("--steps", "5,25,50,100", "--interval", "30s", "--max-error-rate", "1%",
                      str(host.release("r2")), DRAIN_TIMEOUT="10s")
    assert result.returncode == 1
    assert "rolled back by itself: step 1 (5% to green): error rate 12.50% over 1.00%" in result.stderr
    assert host.calls() == [
        "systemctl restart hyperf@green",
        PROGRESSIVE,
        "switchyard drain green --timeout 10s --wait",
        "systemctl stop hyperf@green",
    ]
    assert host.state()["running"] == ["blue"]
    assert host.state()["weights"] == {"blue": 100, "green": 0}


def test_progressive_deploy_leaves_the_new_color_to_whoever_rolled_back_by_hand(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None, outcome="by_hand")
    result = host.run("--steps", "5,25,50,100", str(host.release("r2")))
    assert result.returncode == 1
    assert "rolled back by hand at step 1 (5% to green)" in result.stderr
    assert host.calls() == ["systemctl restart hyperf@green", "switchyard cutover green --steps 5,25,50,100 --wait"]
    assert host.state()["running"] == ["blue", "green"]


def test_progressive_deploy_held_by_a_proxy_restart_leaves_both_colors_serving(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None, outcome="held")
    result = host.run("--steps", "5,25,50,100", str(host.release("r2")))
    assert result.returncode == 1
    assert "held at step 2 (25% to green): the proxy restarted during this step" in result.stderr
    assert host.calls() == ["systemctl restart hyperf@green", "switchyard cutover green --steps 5,25,50,100 --wait"]
    assert host.state()["running"] == ["blue", "green"]


@pytest.mark.parametrize("older", [None, {"to": "green", "from": "blue", "state": "completed", "step_index": 1,
                                          "percent": 100, "reason": "all traffic on green", "started_at": 1.5}],
                         ids=["no-rollout-before", "older-rollout"])
def test_progressive_deploy_refused_before_any_step_stops_the_new_color(tmp_path: Path, older) -> None:
    # An older rollout in status (the last deploy's) is not mistaken for this one.
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None, refuse=True, rollout=older)
    result = host.run("--steps", "5,25,50,100", str(host.release("r2")))
    assert result.returncode == 1
    assert "refused the cutover to green" in result.stderr
    assert host.calls() == [
        "systemctl restart hyperf@green",
        "switchyard cutover green --steps 5,25,50,100 --wait",
        "systemctl stop hyperf@green",
    ]
    assert host.state()["weights"] == {"blue": 100, "green": 0}


@pytest.mark.parametrize("state", [{"refuse": True}, {"usage": True}], ids=["refused", "usage-error"])
def test_deploy_stops_the_idle_color_when_cutover_changes_nothing(tmp_path: Path, state: dict) -> None:
    host = FakeHost(tmp_path, {"blue": 0, "green": 100}, ["green"], "blue", **state)
    result = host.run(str(host.release("r3")))
    assert result.returncode == 1
    assert "refused" in result.stderr or "rejected" in result.stderr
    assert host.calls() == [
        "systemctl restart hyperf@blue",
        "switchyard cutover blue",
        "systemctl stop hyperf@blue",
    ]
    assert host.state()["weights"] == {"blue": 0, "green": 100}


@pytest.mark.parametrize(
    ("weights", "rollout", "message"),
    [
        ({"blue": 95, "green": 5}, {"state": "running", "to": "green", "started_at": 1.0}, "not finished"),
        ({"blue": 75, "green": 25}, {"state": "held", "to": "green", "started_at": 1.0}, "not finished"),
        ({"blue": 90, "green": 10}, None, "green still has weight 10"),
    ],
    ids=["running", "held", "split-by-hand"],
)
def test_deploy_never_restarts_an_idle_color_that_serves(tmp_path: Path, weights, rollout, message) -> None:
    host = FakeHost(tmp_path, weights, ["blue", "green"], "blue", rollout=rollout)
    result = host.run(str(host.release("r2")))
    assert result.returncode == 1
    assert message in result.stderr
    assert host.calls() == []


def test_deploy_refuses_a_release_the_live_color_already_runs(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None)
    release = host.release("r1")
    (tmp_path / "etc" / "hyperf-blue.env").write_text(f"RELEASE_DIR={release}\nHYPERF_PORT=9501\n")
    result = host.run(str(release))
    assert result.returncode == 1
    assert host.calls() == []


def test_rollback_starts_the_previous_color_before_moving_traffic(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 0, "green": 100}, ["green"], "blue")
    result = host.run("--rollback")
    assert result.returncode == 0, result.stderr
    assert host.calls() == [
        "systemctl start hyperf@blue",
        "switchyard rollback",
        # Only the color that serves comes back at boot; green keeps running for now.
        "systemctl enable --quiet hyperf@blue",
        "systemctl disable --quiet hyperf@green",
    ]
    assert host.state()["weights"] == {"blue": 100, "green": 0}
    assert host.state()["running"] == ["blue", "green"]


def test_rollback_in_the_middle_of_a_rollout_keeps_the_pool_it_returns_to_enabled(tmp_path: Path) -> None:
    # At 25 % the pool being returned to still has the most weight.
    host = FakeHost(tmp_path, {"blue": 75, "green": 25}, ["blue", "green"], "blue")
    result = host.run("--rollback")
    assert result.returncode == 0, result.stderr
    assert host.calls() == [
        "switchyard rollback",
        "systemctl enable --quiet hyperf@blue",
        "systemctl disable --quiet hyperf@green",
    ]


def test_rollback_without_a_previous_pool_changes_nothing(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], None)
    result = host.run("--rollback")
    assert result.returncode == 1
    assert host.calls() == []


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--steps"],
        ["--steps", "--interval", "30s", "/srv/app/releases/r2"],
        ["--interval", "30s", "/srv/app/releases/r2"],  # no --steps: would be ignored
        ["/srv/app/releases/r2", "--steps", "5,100"],
        ["--steps", "5,100", "/srv/app/releases/r2", "/srv/app/releases/r3"],
        ["--max-p99", "800ms", "/srv/app/releases/r2"],
        ["--rollback", "/srv/app/releases/r2"],
        ["--steps", "5,100", "--rollback"],
        ["--steps=", "/srv/app/releases/r2"],
        ["--steps=5,100", "--interval=", "/srv/app/releases/r2"],
    ],
)
def test_deploy_usage_errors_change_nothing(tmp_path: Path, args: list[str]) -> None:
    host = FakeHost(tmp_path, {"blue": 100, "green": 0}, ["blue"], "green")
    result = host.run(*args)
    assert result.returncode == 2
    assert "deploy.sh [--steps 5,25,50,100" in result.stderr
    assert host.calls() == []
