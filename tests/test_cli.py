"""The `switchyard` command itself: check, help, exit codes, and the demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

from .support import ROOT, spawn_switchyard, switchyard, wait_for

VERBS = ("serve", "check", "status", "weights", "cutover", "rollback", "drain", "reload",
         "top", "demo")


def test_help_lists_every_command():
    result = switchyard("--help")
    assert result.returncode == 0
    for verb in VERBS:
        assert re.search(rf"\b{verb}\b", result.stdout), verb


def test_check_accepts_the_example_config():
    result = switchyard("check", "-c", os.path.join(ROOT, "config", "switchyard.example.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_names_key_path_and_line_and_exits_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "listen: ['127.0.0.1:8080']\n"
        "pools:\n"
        "  blue: {upstreams: ['127.0.0.1:9501']}\n"
        "  green:\n"
        "    upstreams:\n"
        "      - 127.0.0.1:9502\n"
        "      - 127.0.0.1:99999\n"
        "timeouts: {client_hedaer: 5s}\n")
    result = switchyard("check", "-c", str(path))
    assert result.returncode == 1
    assert re.search(r"bad\.yaml:7: pools\.green\.upstreams\[1\]: .*port", result.stderr), result.stderr
    assert re.search(r"bad\.yaml:8: timeouts\.client_hedaer: unknown key", result.stderr)


def test_usage_errors_exit_2():
    assert switchyard("serve").returncode == 2            # -c is required
    assert switchyard("weights").returncode == 2          # POOL=WEIGHT required
    assert switchyard("weights", "blue").returncode == 2  # malformed
    assert switchyard("frobnicate").returncode == 2


def test_unreachable_admin_socket_exits_3(tmp_path):
    result = switchyard("status", "--socket", str(tmp_path / "nope.sock"))
    assert result.returncode == 3
    assert "cannot reach" in result.stderr


def test_socket_is_found_from_the_environment(tmp_path):
    result = switchyard("status", env={"SWITCHYARD_SOCKET": str(tmp_path / "env.sock")})
    assert result.returncode == 3 and "env.sock" in result.stderr


def _start_demo(tmp_path, *args: str, port: int = 18490,
                until: str = "--fresh") -> tuple[subprocess.Popen, str, str]:
    """`switchyard demo` in `tmp_path`, its banner read up to the line with `until`:
    (process, banner, its admin socket)."""
    proc = spawn_switchyard("demo", "--port", str(port), *args, cwd=str(tmp_path))
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(until in line for line in lines):
        lines.append(proc.stdout.readline())
    banner = "".join(lines)
    found = re.search(r"SWITCHYARD_SOCKET=(\S+) switchyard status", banner)
    if found is None:
        _stop_demo(proc)
        raise AssertionError(f"no admin socket in the demo's banner: {banner!r}")
    return proc, banner, found.group(1)


def _stop_demo(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=40)


def test_demo_serves_prints_the_status_line_and_stops_on_ctrl_c(tmp_path):
    proc, banner, sock = _start_demo(tmp_path, port=18480, until="switchyard status")
    try:
        url = re.search(r"proxy\s+(http://127\.0\.0\.1:\d+/)", banner).group(1)
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Server"] == "Hyperf"
            assert resp.headers["X-Pool"] == "blue"
            assert any(c.startswith("switchyard_pool=") for c in resp.headers.get_all("Set-Cookie"))
        status = switchyard("status", env={"SWITCHYARD_SOCKET": sock})
        assert status.returncode == 0 and "blue" in status.stdout
    finally:
        out, err = _stop_demo(proc)
    assert proc.returncode == 0, err[-2000:]
    # Everything it wrote is under ./run/.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    wait_for(lambda: not os.path.exists(sock), what="admin socket removed")


def test_demo_shows_an_automatic_rollback_and_its_banner_matches_the_state(tmp_path):
    proc, banner, sock = _start_demo(tmp_path, "--bad-green", "50%", "--load", "100", "--fresh")
    env = {"SWITCHYARD_SOCKET": sock}
    try:
        assert re.search(r"blue .* release 1\.0, all traffic", banner), banner
        assert re.search(r"green .* release 2\.0, no traffic, fails 50% of requests", banner)
        rollout = switchyard("cutover", "green", "--steps", "50,100", "--interval", "3s",
                             "--max-error-rate", "5%", "--min-requests", "10", "--wait", env=env)
        assert rollout.returncode == 1, rollout.stdout + rollout.stderr  # it rolled back
        assert "rolled back" in rollout.stdout
        status = json.loads(switchyard("status", "--json", env=env).stdout)
        assert status["weights"] == {"blue": 100, "green": 0}
        assert status["pools"]["green"]["errors"] > 0  # the load found green broken
        assert switchyard("weights", "blue=0", "green=100", env=env).returncode == 0
    finally:
        _stop_demo(proc)
    # The next run restores that state, and says so.
    proc, banner, _ = _start_demo(tmp_path, "--load", "0")
    _stop_demo(proc)
    assert re.search(r"blue .* release 1\.0, no traffic", banner), banner
    assert re.search(r"green .* release 2\.0, all traffic", banner), banner
    proc, banner, _ = _start_demo(tmp_path, "--load", "0", "--fresh")
    _stop_demo(proc)
    assert re.search(r"blue .* release 1\.0, all traffic", banner), banner


def test_if_match_is_offered_only_by_commands_that_change_something():
    def help_of(command: str) -> str:
        return switchyard(command, "--help").stdout

    for command in ("weights", "cutover", "rollback", "drain", "reload", "upstream", "pause",
                    "resume"):
        assert "--if-match" in help_of(command), command
    for command in ("status", "top", "events", "check", "serve", "demo"):
        assert "--if-match" not in help_of(command), command
    cutover = " ".join(help_of("cutover").split())
    assert "(default: rollout.interval, 30s)" in cutover
    assert "(default: rollout.max_error_rate, 1%)" in cutover
