"""The control plane end to end: the CLI and the admin API against a real proxy.

Two demo pools (blue, green) run as processes behind `switchyard serve`; the
tests drive it with the real `switchyard` command and with raw HTTP over the
admin Unix socket, and watch the effect with real client connections, often
while a load client (tests/loadclient.py) keeps requests flowing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings

import pytest

from .loadclient import LoadClient
from .support import (
    BLUE_ONLY,
    ROOT,
    PoolProcess,
    ProxyProcess,
    RecordingUpstream,
    UnixHTTPConnection,
    admin,
    answering,
    cookie_for,
    edit_config,
    get,
    open_conn,
    parse_responses,
    spawn_switchyard,
    sticky_cookie,
    switchyard,
    wait_for,
)

NOBODY = 65534


# -- fixtures and helpers -------------------------------------------------------------------

@pytest.fixture
def proxy(start_proxy):
    return start_proxy()


def status_now(proxy: ProxyProcess) -> dict:
    """GET /status straight over the socket: fast enough to poll (the CLI starts Python)."""
    status, _, body = admin(proxy, "GET", "/status")
    assert status == 200, body
    return body


def routing(status: dict) -> tuple:
    """The part of /status that a refused command must leave alone."""
    return status["generation"], status["weights"], status["previous"]


def still_serves(proxy: ProxyProcess) -> None:
    assert proxy.proc.poll() is None, "the proxy exited"
    resp, body = get(open_conn(proxy.port))
    assert resp.status == 200 and body.startswith(b"Hello from"), (resp.status, body)


# -- the load client itself: it must see what goes wrong -------------------------------------

def _truncated(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Pool: a\r\n\r\nabc")
    conn.shutdown(socket.SHUT_RDWR)


def test_load_client_counts_every_failure_and_retries_only_a_reused_connection():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pool: a\r\n\r\nok"
    script = iter([
        ok,
        None,  # a reused connection closed before the answer: sent again
        ok,
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
        _truncated,
        None,  # the same on a new connection: a failure
        ok,
        ok,
    ])
    upstream = RecordingUpstream(lambda req: next(script))
    try:
        with LoadClient(upstream.port, connections=1, max_requests=7) as load:
            wait_for(lambda: load.result().requests >= 7, what="7 outcomes")
            result = load.stop()
    finally:
        upstream.close()
    assert result.failures == ["status 502", "truncated body: connection closed",
                               "closed before the response on a new connection"]
    assert result.ok == 4 and result.by_pool == {"a": 4} and result.retries == 1


def test_load_client_counts_refused_connections(dead_port):
    with LoadClient(dead_port.getsockname()[1], connections=2, max_requests=4) as load:
        wait_for(lambda: len(load.result().failures) >= 4, what="4 refusals")
        result = load.stop()
    assert result.failures == ["connect refused"] * 4 and result.ok == 0


# -- cutover and rollback under load --------------------------------------------------------

def test_cutover_and_rollback_flip_under_load_without_a_failed_request(proxy):
    probe = open_conn(proxy.port)
    with LoadClient(proxy.port, connections=8, duration=90, max_requests=300_000) as load:
        wait_for(lambda: load.count("blue") >= 100, what="load on blue")
        for _ in range(3):
            for command, pool in (("cutover", "green"), ("rollback", "blue")):
                args = (command, "green") if command == "cutover" else (command,)
                result = proxy.cli(*args)
                assert result.returncode == 0, result.stderr
                # The very next request after the command returned goes to the new pool.
                resp, _ = get(probe)
                assert resp.getheader("X-Pool") == pool
                seen = load.count(pool)
                wait_for(lambda: load.count(pool) >= seen + 100, 30, what=f"load on {pool}")
        result = load.stop()
    assert result.failures == [], result.failures[:20]
    assert result.by_pool["blue"] > 0 and result.by_pool["green"] > 0
    assert set(result.by_pool) == {"blue", "green"}


# -- the health gate ------------------------------------------------------------------------

def test_cutover_to_an_unhealthy_pool_is_refused_with_409_and_changes_nothing(start_proxy,
                                                                             dead_port):
    port = dead_port.getsockname()[1]
    proxy = start_proxy(green=[f"127.0.0.1:{port}"], extra="timeouts: {cutover_wait: 1s}\n")
    before = proxy.status()
    assert before["pools"]["green"]["healthy"] is False

    result = proxy.cli("cutover", "green")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "409" in result.stderr
    status, _, body = admin(proxy, "POST", "/cutover", {"to": "green"})
    assert status == 409 and isinstance(body["error"], str)
    assert routing(proxy.status()) == routing(before)
    still_serves(proxy)

    result = proxy.cli("cutover", "green", "--force")
    assert result.returncode == 0, result.stderr
    after = proxy.status()
    assert after["weights"] == {"blue": 0, "green": 100}
    assert after["generation"] == before["generation"] + 1
    assert after["previous"] == "blue"


def test_cutover_waits_until_the_target_becomes_healthy(start_proxy, dead_port):
    port = dead_port.getsockname()[1]
    proxy = start_proxy(green=[f"127.0.0.1:{port}"], extra="timeouts: {cutover_wait: 60s}\n")
    cmd = spawn_switchyard("cutover", "green", "--socket", proxy.admin)
    green = None
    try:
        dead_port.close()
        green = PoolProcess("green", port=port)
        out, err = cmd.communicate(timeout=60)
        assert cmd.returncode == 0, err
        assert proxy.status()["weights"] == {"blue": 0, "green": 100}
        resp, _ = get(open_conn(proxy.port))
        assert resp.getheader("X-Pool") == "green"
    finally:
        if cmd.poll() is None:
            cmd.kill()
            cmd.communicate()
        if green is not None:
            green.stop()


# -- rollback and stickiness ----------------------------------------------------------------

def test_rollback_with_nothing_to_roll_back_to_is_refused_with_409(proxy):
    before = proxy.status()
    assert before["previous"] is None
    result = proxy.cli("rollback")
    assert result.returncode == 1, (result.stdout, result.stderr)
    status, _, body = admin(proxy, "POST", "/rollback")
    assert status == 409 and isinstance(body["error"], str)
    assert routing(proxy.status()) == routing(before)


def test_rollback_disowns_the_cookies_of_the_pool_left(proxy):
    proxy.cli("weights", "blue=50", "green=50", check=True)
    green_cookie = cookie_for(proxy, "green")
    assert proxy.status()["previous"] == "blue"

    proxy.cli("rollback", check=True)
    assert proxy.status()["weights"] == BLUE_ONLY
    conn = open_conn(proxy.port)
    resp, _ = get(conn, headers={"Cookie": green_cookie})
    assert resp.getheader("X-Pool") == "blue"
    new_cookie = sticky_cookie(resp)
    assert new_cookie is not None and new_cookie != green_cookie

    # Green gets weight again: the old cookie belongs to an epoch that has ended.
    proxy.cli("weights", "blue=50", "green=50", check=True)
    served = set()
    for _ in range(200):
        resp, _ = get(conn, headers={"Cookie": green_cookie})
        assert sticky_cookie(resp) is not None  # a new visitor every time
        served.add(resp.getheader("X-Pool"))
    assert served == {"blue", "green"}  # drawn by weight, not pinned to green


GRACE = "sticky: {cookie: switchyard_pool, max_age: 1h, grace: 30s}\n"


def test_grace_keeps_cookies_after_weight_zero_and_rollback_ends_it(start_proxy):
    proxy = start_proxy(extra=GRACE)
    proxy.cli("weights", "blue=50", "green=50", check=True)
    green_cookie = cookie_for(proxy, "green")
    conn = open_conn(proxy.port)

    proxy.cli("weights", "blue=100", "green=0", check=True)
    for _ in range(50):
        resp, _ = get(conn, headers={"Cookie": green_cookie})
        assert resp.getheader("X-Pool") == "green"  # within the grace period
        assert sticky_cookie(resp) is None
    resp, _ = get(conn)
    assert resp.getheader("X-Pool") == "blue"  # new visitors only see blue

    result = proxy.cli("rollback")
    assert result.returncode == 0, (proxy.status(), result.stderr)
    resp, _ = get(conn, headers={"Cookie": green_cookie})
    assert resp.getheader("X-Pool") == "blue"
    assert sticky_cookie(resp) is not None


# -- testers' override ----------------------------------------------------------------------

TESTER_HEADER = "tester: {header: X-Switchyard-Pool}\n"


def _pools_seen(proxy, headers: dict, n: int = 20) -> set[str]:
    conn = open_conn(proxy.port)
    return {get(conn, headers=headers)[0].getheader("X-Pool") for _ in range(n)}


def test_tester_header_from_a_trusted_address_reaches_a_pool_of_weight_zero(start_proxy):
    proxy = start_proxy(extra=TESTER_HEADER)
    assert _pools_seen(proxy, {"X-Switchyard-Pool": "green"}) == {"green"}
    assert _pools_seen(proxy, {}) == {"blue"}  # only the testers see green


def test_tester_header_is_off_unless_configured(proxy):
    assert _pools_seen(proxy, {"X-Switchyard-Pool": "green"}) == {"blue"}


def test_tester_header_from_an_untrusted_address_is_ignored(start_proxy):
    proxy = start_proxy(extra='tester: {header: X-Switchyard-Pool, trusted: ["10.0.0.0/8"]}\n')
    assert _pools_seen(proxy, {"X-Switchyard-Pool": "green"}) == {"blue"}


def test_tester_header_through_a_trusted_proxy_is_judged_by_the_real_client(start_proxy):
    """nginx on the same host: every request comes from 127.0.0.1, a trusted proxy.
    The tester's address is what nginx put in X-Forwarded-For."""
    proxy = start_proxy(extra=TESTER_HEADER + "trusted_proxies: [127.0.0.1/32]\n")
    visitor = {"X-Switchyard-Pool": "green", "X-Forwarded-For": "203.0.113.7"}
    assert _pools_seen(proxy, visitor) == {"blue"}
    # A visitor's own claim to be local, left of what nginx appended, proves nothing.
    spoofed = {"X-Switchyard-Pool": "green", "X-Forwarded-For": "127.0.0.1, 203.0.113.7"}
    assert _pools_seen(proxy, spoofed) == {"blue"}
    tester = {"X-Switchyard-Pool": "green", "X-Forwarded-For": "127.0.0.1"}
    assert _pools_seen(proxy, tester) == {"green"}


def test_tester_cookie_from_the_cli_reaches_a_pool_of_weight_zero(proxy):
    result = proxy.cli("tester-cookie", "green", check=True)
    cookie = result.stdout.strip().splitlines()[0]
    assert cookie.startswith("switchyard_pool_tester=")
    conn = open_conn(proxy.port)
    for _ in range(20):
        resp, _ = get(conn, headers={"Cookie": cookie})
        assert resp.getheader("X-Pool") == "green"


def _later_expiry(real: str) -> str:
    name, value = real.split("=", 1)
    tag, pool, expires, mac = value.split(".")
    return f"{name}={tag}.{pool}.{int(expires) + 86400}.{mac}"


@pytest.mark.parametrize("forge", [
    lambda real: "switchyard_pool_tester=t.green.99999999999.AAAAAAAAAAAAAAAAAAAAAA",
    _later_expiry,
    lambda real: real[:-2] + ("BB" if real.endswith("AA") else "AA"),
    lambda real: real.replace("switchyard_pool_tester=t.", "switchyard_pool="),
], ids=["made-up", "later-expiry", "bad-mac", "passed-off-as-sticky"])
def test_a_forged_tester_cookie_does_not_reach_green(proxy, forge):
    real = proxy.cli("tester-cookie", "green", check=True).stdout.strip().splitlines()[0]
    forged = forge(real)
    assert forged != real
    conn = open_conn(proxy.port)
    for _ in range(20):
        resp, _ = get(conn, headers={"Cookie": forged})
        assert resp.getheader("X-Pool") == "blue"


# -- If-Match -------------------------------------------------------------------------------

def test_status_etag_is_the_generation(proxy):
    for weights in ({"blue": 90, "green": 10}, {"blue": 80, "green": 20}):
        status, headers, body = admin(proxy, "GET", "/status")
        assert status == 200 and headers["etag"] == f'"{body["generation"]}"'
        admin(proxy, "PUT", "/weights", weights)
    status, headers, body = admin(proxy, "PUT", "/weights", {"blue": 70, "green": 30})
    assert status == 200 and headers["etag"] == f'"{body["generation"]}"'


@pytest.mark.parametrize("method, path, body", [
    ("PUT", "/weights", {"blue": 50, "green": 50}),
    ("POST", "/cutover", {"to": "green", "force": True}),
    ("POST", "/rollback", None),
    ("POST", "/drain", {"pool": "blue"}),
    ("POST", "/reload", None),
])
def test_a_stale_if_match_is_refused_with_412_and_changes_nothing(proxy, method, path, body):
    admin(proxy, "PUT", "/weights", {"blue": 90, "green": 10})  # now there is a previous
    before = proxy.status()
    stale = before["generation"] - 1
    status, _, answer = admin(proxy, method, path, body, {"If-Match": f'"{stale}"'})
    assert status == 412 and isinstance(answer["error"], str)
    assert routing(proxy.status()) == routing(before)


def test_a_current_if_match_is_accepted(proxy):
    generation = proxy.status()["generation"]
    status, _, body = admin(proxy, "PUT", "/weights", {"blue": 60, "green": 40},
                            {"If-Match": f'"{generation}"'})
    assert status == 200 and body["generation"] == generation + 1


def test_cli_if_match_with_a_stale_generation_exits_1(proxy):
    generation = proxy.status()["generation"]
    proxy.cli("weights", "blue=90", "green=10", check=True)
    result = proxy.cli("weights", "blue=50", "green=50", "--if-match", str(generation))
    assert result.returncode == 1 and "412" in result.stderr
    assert proxy.status()["weights"] == {"blue": 90, "green": 10}


def test_two_writers_with_the_same_generation_exactly_one_wins(proxy):
    for round_ in range(5):
        generation = proxy.status()["generation"]
        barrier = threading.Barrier(2)
        answers: dict[str, int] = {}
        bodies = {"a": {"blue": 10 + round_, "green": 90}, "b": {"blue": 90, "green": 10 + round_}}

        def write(name: str) -> None:
            conn = UnixHTTPConnection(proxy.admin)
            conn.connect()
            barrier.wait(timeout=10)
            conn.request("PUT", "/weights", body=json.dumps(bodies[name]),
                         headers={"If-Match": f'"{generation}"'})
            answers[name] = conn.getresponse().status
            conn.close()

        threads = [threading.Thread(target=write, args=(name,)) for name in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(answers.values()) == [200, 412], answers
        winner = next(name for name, code in answers.items() if code == 200)
        status = proxy.status()
        assert status["generation"] == generation + 1
        assert status["weights"] == bodies[winner]


# -- who may use the admin socket -----------------------------------------------------------

def as_nobody(path: str, request: bytes) -> bytes:
    """Connect to the socket at `path` from a child that setuid()s to nobody; what it read.

    The socket's directory is made searchable (0711); the child changes into
    it while still root and connects by the relative name, so only that
    directory and the socket file itself are checked, not private (0700)
    directories further up such as pytest's.
    """
    directory, name = os.path.split(path)
    os.chmod(directory, 0o711)
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:
        try:
            os.chdir(directory)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(name)
                s.sendall(request)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            os.write(w, b"ok\n" + data)
        except BaseException as exc:
            os.write(w, f"error\n{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


STATUS_REQUEST = b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def world_open_admin(text: str) -> str:
    return re.sub(r"admin: \{socket: ([^}]*)\}", r'admin: {socket: \1, mode: "0666"}', text)


def test_a_foreign_uid_is_refused_with_403_and_logged(start_proxy):
    proxy = start_proxy(edit=world_open_admin)
    assert stat.S_IMODE(os.stat(proxy.admin).st_mode) == 0o666

    out = as_nobody(proxy.admin, STATUS_REQUEST)
    assert out.startswith(b"ok\n"), out
    (status, headers, body), = parse_responses(out[3:])
    assert status == 403
    assert isinstance(json.loads(body)["error"], str)
    refused = wait_for(lambda: proxy.events("admin_refused"), what="admin_refused log")
    assert refused[0]["uid"] == NOBODY
    assert proxy.status()["generation"] == 0  # and root still gets in


def test_a_configured_uid_is_let_in(start_proxy):
    proxy = start_proxy(edit=lambda text: world_open_admin(text).replace(
        'mode: "0666"', f'mode: "0666", uids: [{NOBODY}]'))
    out = as_nobody(proxy.admin, STATUS_REQUEST)
    (status, _, body), = parse_responses(out[3:])
    assert status == 200 and json.loads(body)["weights"] == BLUE_ONLY


def test_admin_socket_defaults_to_0600_and_others_cannot_connect(proxy):
    assert stat.S_IMODE(os.stat(proxy.admin).st_mode) == 0o600
    out = as_nobody(proxy.admin, STATUS_REQUEST)
    assert out.startswith(b"error\nPermissionError"), out


# -- bad admin input ------------------------------------------------------------------------

BAD_INPUTS = [
    ("PUT", "/weights", b'{"blue": 1' + b"0" * 400 + b', "green": 0}', {}),
    ("PUT", "/weights", b"[" * 60000, {}),
    ("POST", "/cutover", b'{"to": "green", "steps": [50, 100], "max_error_rate": NaN}', {}),
    ("POST", "/cutover", b'{"to": "green", "steps": [50, 100], "interval": Infinity}', {}),
    ("POST", "/tester-cookie", b'{"pool": "green", "ttl": NaN}', {}),
    ("PUT", "/weights", b"not json", {}),
    ("PUT", "/weights", b"[100, 0]", {}),
    ("PUT", "/weights", b'"blue=100"', {}),
    ("PUT", "/weights", b"", {}),
    ("PUT", "/weights", {"blue": 50, "green": 50, "red": 0}, {}),
    ("PUT", "/weights", {"blue": 100}, {}),
    ("PUT", "/weights", {"blue": -1, "green": 101}, {}),
    ("PUT", "/weights", {"blue": 50.5, "green": 49.5}, {}),
    ("PUT", "/weights", {"blue": 100.0, "green": 0}, {}),
    ("PUT", "/weights", {"blue": "100", "green": 0}, {}),
    ("PUT", "/weights", {"blue": True, "green": 0}, {}),
    ("PUT", "/weights", {"blue": None, "green": 100}, {}),
    ("PUT", "/weights", {"blue": 0, "green": 0}, {}),
    ("PUT", "/weights", b'{"blue": 0, "green": 100, "blue": 100}', {}),  # blue named twice
    ("PUT", "/weights", b'{"blue": 1e400, "green": 0}', {}),
    ("PUT", "/weights", json.dumps({"blue": 50, "green": 50, "pad": "x" * 200_000}), {}),
    ("PUT", "/weights", b"\xff\xfe{}", {}),
    ("PUT", "/weights", {"blue": 50, "green": 50}, {"If-Match": "yesterday"}),
    ("PUT", "/weights", {"blue": 50, "green": 50}, {"If-Match": '"-1"'}),
    ("POST", "/cutover", {"to": "red"}, {}),
    ("POST", "/cutover", {}, {}),
    ("POST", "/cutover", {"to": None}, {}),
    ("POST", "/cutover", {"to": "green", "steps": [50, 25, 100]}, {}),
    ("POST", "/cutover", {"to": "green", "steps": "5,25,50,100"}, {}),
    ("POST", "/cutover", {"to": "green", "steps": [0, 100]}, {}),
    ("POST", "/cutover", {"to": "green", "steps": [5, 50]}, {}),
    ("POST", "/cutover", {"to": "green", "steps": []}, {}),
    ("POST", "/cutover", {"to": "green", "force": "yes"}, {}),
    ("POST", "/cutover", {"to": "green", "interval": -5}, {}),
    ("POST", "/cutover", {"to": "green", "max_error_rate": 5}, {}),
    ("POST", "/cutover", {"to": "green", "hurry": True}, {}),
    ("POST", "/drain", {"pool": "red"}, {}),
    ("POST", "/drain", {}, {}),
    ("POST", "/drain", b"blue", {}),
    ("POST", "/drain", {"pool": "blue", "timeout": -1}, {}),
    ("POST", "/drain", {"pool": "blue", "timeout": "soon"}, {}),
    ("POST", "/drain", {"pool": "blue", "upstream": 9501}, {}),
    ("POST", "/drain", {"pool": "blue", "upstream": "127.0.0.1:1"}, {}),
    ("POST", "/upstream", {"pool": "blue", "address": "127.0.0.1:1", "enabled": False}, {}),
    ("POST", "/upstream", {"pool": "red", "address": "127.0.0.1:1", "enabled": False}, {}),
    ("POST", "/upstream", {"pool": "blue", "enabled": False}, {}),
    ("POST", "/upstream", {"pool": "blue", "address": "", "enabled": False}, {}),
    ("POST", "/upstream", {"pool": "blue", "address": "127.0.0.1:1", "enabled": "no"}, {}),
    ("POST", "/upstream", {"pool": "blue", "address": "127.0.0.1:1"}, {}),
    ("POST", "/upstream", {"pool": "blue", "address": "x", "enabled": True, "extra": 1}, {}),
    ("POST", "/rollback", b"{{{", {}),
    ("POST", "/tester-cookie", {"pool": "red"}, {}),
    ("POST", "/tester-cookie", {"pool": "green", "ttl": -1}, {}),
    ("GET", "/nope", None, {}),
    ("GET", "/status/../weights", None, {}),
    ("DELETE", "/weights", None, {}),
    ("GET", "/weights", None, {}),
    ("POST", "/status", None, {}),
    ("PUT", "/rollback", None, {}),
]


def _case_id(case) -> str:
    method, path, body, headers = case
    shown = body if isinstance(body, (bytes, str)) else json.dumps(body)
    shown = (shown[:40] + (b"..." if isinstance(shown, bytes) else "...")) \
        if shown and len(shown) > 40 else shown
    return f"{method} {path} {shown!r} {headers or ''}".strip()


@pytest.mark.parametrize("method, path, body, headers", BAD_INPUTS,
                         ids=[_case_id(c) for c in BAD_INPUTS])
def test_bad_admin_input_is_a_json_4xx_and_changes_nothing(proxy, method, path, body, headers):
    before = proxy.status()
    status, _, answer = admin(proxy, method, path, body, headers)
    assert 400 <= status < 500, (status, answer)
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer
    assert routing(proxy.status()) == routing(before)
    still_serves(proxy)


def test_garbage_bytes_on_the_admin_socket_do_not_crash_the_proxy(proxy):
    for garbage in (b"\x00\x01\x02 hello\r\n\r\n", b"GET /status HTTP/1.1\r\nHost: \x00\r\n\r\n",
                    b"PUT /weights HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(proxy.admin)
            s.sendall(garbage)
            answer = s.recv(65536)
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer
    still_serves(proxy)
    assert proxy.status()["generation"] == 0


# -- state ----------------------------------------------------------------------------------

def test_kill_9_and_restart_restore_weights_generation_and_previous(start_proxy):
    proxy = start_proxy()
    proxy.cli("weights", "blue=70", "green=30", check=True)
    proxy.cli("weights", "blue=60", "green=40", check=True)
    before = proxy.status()
    assert before["previous"] == "blue" and before["generation"] == 2
    proxy.kill()

    again = start_proxy(weights={"blue": 0, "green": 100})  # config weights lose to the state
    assert routing(again.status()) == routing(before)
    assert again.cli("rollback").returncode == 0  # previous survived, usable
    assert again.status()["weights"] == BLUE_ONLY


def test_cookies_survive_a_restart_and_disowned_ones_stay_disowned(start_proxy):
    proxy = start_proxy()
    proxy.cli("weights", "blue=50", "green=50", check=True)
    disowned = cookie_for(proxy, "green")
    proxy.cli("rollback", check=True)
    proxy.cli("weights", "blue=50", "green=50", check=True)
    current = cookie_for(proxy, "green")
    assert current != disowned
    proxy.kill()

    again = start_proxy()
    conn = open_conn(again.port)
    for _ in range(20):
        resp, _ = get(conn, headers={"Cookie": current})
        assert resp.getheader("X-Pool") == "green" and sticky_cookie(resp) is None
    served = set()
    for _ in range(100):
        resp, _ = get(conn, headers={"Cookie": disowned})
        assert sticky_cookie(resp) is not None
        served.add(resp.getheader("X-Pool"))
    assert served == {"blue", "green"}


def test_a_state_file_naming_other_pools_is_reported_and_the_config_weights_used(
        start_proxy, tmp_path, pools):
    proxy = start_proxy()
    proxy.cli("weights", "blue=10", "green=90", check=True)
    proxy.stop()

    blue, green = pools
    renamed = ProxyProcess(tmp_path, {"blue": [blue.address], "teal": [green.address]},
                           {"blue": 30, "teal": 70}).start()
    try:
        assert renamed.status()["weights"] == {"blue": 30, "teal": 70}
        assert renamed.events("state_not_restored")
    finally:
        renamed.stop()


def _limit_file_size(proxy, state_dir):
    soft, hard = resource.prlimit(proxy.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proxy.proc.pid, resource.RLIMIT_FSIZE, (0, hard))  # like a full disk
    return lambda: resource.prlimit(proxy.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))


def _replace_dir_with_file(proxy, state_dir):
    shutil.rmtree(state_dir)  # root ignores modes: make the directory impossible instead
    with open(state_dir, "w") as f:
        f.write("not a directory\n")

    def repair():
        os.unlink(state_dir)
        os.mkdir(state_dir)
    return repair


@pytest.mark.parametrize("break_disk", [_limit_file_size, _replace_dir_with_file],
                         ids=["file-size-limit", "state-dir-is-a-file"])
def test_a_failed_state_save_answers_5xx_and_changes_nothing(start_proxy, tmp_path, break_disk):
    state_dir = tmp_path / "state"
    state_file = state_dir / "state.json"
    proxy = start_proxy(edit=lambda text: re.sub(r"state_file: .*", f"state_file: {state_file}",
                                                 text))
    before = proxy.status()
    saved = state_file.read_bytes()
    repair = break_disk(proxy, state_dir)

    status, _, answer = admin(proxy, "PUT", "/weights", {"blue": 0, "green": 100})
    assert 500 <= status < 600 and isinstance(answer["error"], str), (status, answer)
    assert proxy.cli("cutover", "green", "--force").returncode != 0
    assert routing(proxy.status()) == routing(before)
    resp, _ = get(open_conn(proxy.port))
    assert resp.getheader("X-Pool") == "blue"  # the old weights are still in force
    if state_file.exists():
        assert state_file.read_bytes() == saved
        assert sorted(os.listdir(state_dir)) == sorted(["state.json", "secret"])  # no temp left

    repair()
    proxy.cli("weights", "blue=0", "green=100", check=True)
    assert json.loads(state_file.read_text())["weights"] == {"blue": 0, "green": 100}


# -- reload ---------------------------------------------------------------------------------

def test_an_invalid_reload_is_refused_naming_the_key_and_changes_nothing(proxy):
    proxy.cli("weights", "blue=50", "green=50", check=True)
    before = proxy.status()
    text = edit_config(proxy, lambda text: text.replace("green: {upstreams:",
                                                         "green: {weight: 5, upstreams:"))
    line = next(n for n, l in enumerate(text.splitlines(), 1) if "weight: 5" in l)

    result = proxy.cli("reload")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "pools.green.weight" in result.stderr and f":{line}:" in result.stderr, result.stderr
    after = proxy.status()
    assert routing(after) == routing(before)
    assert after["pools"]["green"]["upstreams"] == before["pools"]["green"]["upstreams"]
    still_serves(proxy)


def test_a_reload_that_adds_an_upstream_fails_no_request_in_flight(start_proxy, pools):
    second = PoolProcess("green")
    third = RecordingUpstream(answering("green"))
    try:
        proxy = start_proxy(weights={"blue": 50, "green": 50},
                            green=[pools[1].address, second.address])
        before = proxy.status()
        with LoadClient(proxy.port, connections=6, duration=60) as load, \
                LoadClient(proxy.port, connections=2, duration=60, path="/slow?s=0.5") as slow:
            wait_for(lambda: load.count("green") >= 100 and slow.ok >= 2, what="load")
            edit_config(proxy, lambda text: text.replace(
                f'"{second.address}"]', f'"{second.address}", "{third.address}"]'))
            result = proxy.cli("reload")
            assert result.returncode == 0, result.stderr
            wait_for(lambda: len(third.requests) >= 20, 30, what="traffic on the new upstream")
            wait_for(lambda: slow.ok >= 10, 30, what="slow requests across the reload")
            fast, slowed = load.stop(), slow.stop()
        assert fast.failures == [], fast.failures[:20]
        assert slowed.failures == [], slowed.failures[:20]
        after = proxy.status()
        assert [u["address"] for u in after["pools"]["green"]["upstreams"]] == [
            pools[1].address, second.address, third.address]
        assert routing(after) == routing(before)
    finally:
        second.stop()
        third.close()


def test_a_reload_names_the_keys_that_need_a_restart_and_keeps_them_as_they_were(proxy):
    edit_config(proxy, lambda text: text.replace('listen: ["127.0.0.1:0"]',
                                                 'listen: ["127.0.0.1:1"]')
                + "timeouts: {client_idle: 5s}\n")
    result = proxy.cli("reload")
    assert result.returncode == 0, result.stderr
    assert "NOT applied until a restart" in result.stdout and "listen" in result.stdout
    assert "reloaded: timeouts" in result.stdout
    status, _, body = admin(proxy, "POST", "/reload")
    assert status == 200
    assert body["restart_needed"] == ["listen"] and body["applied"] == []  # recorded as not applied
    assert get(open_conn(proxy.port))[0].status == 200  # still on the port it had
    assert proxy.event("reload_needs_restart")["keys"] == ["listen"]


# -- drain ----------------------------------------------------------------------------------

def test_drain_wait_follows_in_flight_requests_down_and_they_finish_on_blue(start_proxy):
    proxy = start_proxy(weights={"blue": 50, "green": 50})
    blue_cookie = cookie_for(proxy, "blue")
    answers: list[tuple[int, str | None, bytes]] = []

    def slow(seconds: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        resp, body = get(conn, f"/slow?s={seconds}", {"Cookie": blue_cookie})
        answers.append((resp.status, resp.getheader("X-Pool"), body))
        conn.close()

    threads = [threading.Thread(target=slow, args=(s,)) for s in (1.5, 2, 3)]
    for t in threads:
        t.start()
    wait_for(lambda: status_now(proxy)["pools"]["blue"]["inflight"] == 3, what="3 in flight")

    result = proxy.cli("drain", "blue", "--wait")
    for t in threads:
        t.join(timeout=30)
    assert result.returncode == 0, result.stderr
    counts = [int(n) for n in re.findall(r"blue: (\d+) in flight", result.stdout)]
    assert counts and counts[0] >= 1 and counts[-1] == 0, result.stdout
    assert counts == sorted(counts, reverse=True), result.stdout
    assert "drained" in result.stdout.splitlines()[-1]
    assert sorted(answers) == [(200, "blue", b"slow answer from blue\n")] * 3

    status = proxy.status()
    assert status["weights"] == {"blue": 0, "green": 50}
    assert status["pools"]["blue"]["inflight"] == 0
    resp, _ = get(open_conn(proxy.port), headers={"Cookie": blue_cookie})
    assert resp.getheader("X-Pool") == "green"  # no new requests to a drained pool


def test_drain_wait_ends_at_its_timeout_cutting_a_stream_and_shows_what_held_it(start_proxy):
    proxy = start_proxy(weights={"blue": 50, "green": 50})
    blue_cookie = cookie_for(proxy, "blue")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    # Server-sent events for 50 s: longer than any drain should wait.
    sock.sendall(b"GET /events?n=100&delay=0.5 HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n"
                 % blue_cookie.encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: status_now(proxy)["pools"]["blue"]["inflight"] == 1, what="the stream open")
    held = status_now(proxy)["pools"]["blue"]["holding"]
    assert [(h["kind"], h["method"], h["path"]) for h in held] == \
        [("http", "GET", "/events?n=100&delay=0.5")]

    started = time.monotonic()
    result = proxy.cli("drain", "blue", "--wait", "--timeout", "2s")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "oldest: GET /events?n=100&delay=0.5" in result.stdout
    assert "drained" in result.stdout.splitlines()[-1] and "1 cut" in result.stdout, result.stdout
    assert took < 20  # ends by its timeout, not the stream's 50 s
    sock.settimeout(5)
    rest = b""
    while chunk := sock.recv(65536):  # the client connection is cut (never a clean end)
        rest += chunk
    assert not rest.endswith(b"0\r\n\r\n")
    sock.close()
    assert proxy.status()["pools"]["blue"]["drain_cut"] == 1
    assert proxy.event("drain_deadline")["cut"] == 1
    line = wait_for(lambda: [x for x in proxy.events("request") if x["path"].startswith("/events")],
                    what="the stream's access line")[0]
    assert line["error"] == "drain_cut"


def test_drain_timeout_must_be_a_duration(proxy):
    result = proxy.cli("drain", "blue", "--timeout", "soon")
    assert result.returncode == 2 or result.returncode == 1, result
    assert "--timeout" in result.stderr
    assert proxy.status()["weights"]["blue"] == 100  # nothing changed


# -- pause and resume -----------------------------------------------------------------------

def _send_later(port: int, answers: list, n: int) -> list[threading.Thread]:
    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        resp, body = get(conn, "/")
        answers.append((resp.status, resp.getheader("X-Pool")))
        conn.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_pause_holds_new_requests_and_resume_sends_them_where_routing_says_then(start_proxy):
    proxy = start_proxy()
    served = status_now(proxy)["pools"]["blue"]["requests"]
    assert proxy.cli("pause", "--timeout", "60s").returncode == 0
    answers: list = []
    threads = _send_later(proxy.port, answers, 5)
    wait_for(lambda: status_now(proxy)["pause"]["waiting"] == 5, what="5 requests held")
    time.sleep(0.3)
    assert answers == [] and status_now(proxy)["pools"]["blue"]["requests"] == served
    assert "5 requests wait" in proxy.cli("status").stdout
    # The migration ran; the new release takes the held requests.
    assert proxy.cli("cutover", "green").returncode == 0
    assert proxy.cli("resume").returncode == 0
    for t in threads:
        t.join(10)
    assert answers == [(200, "green")] * 5
    assert status_now(proxy)["pause"] is None
    assert proxy.event("resumed")["released"] == 5
    assert status_now(proxy)["pools"]["blue"]["requests"] == served  # nothing failed or leaked


def test_a_pause_ends_by_itself_at_its_timeout_and_nothing_fails(start_proxy):
    proxy = start_proxy()
    status, _, body = admin(proxy, "POST", "/pause", {"timeout": "1s"})
    assert status == 200 and body["pause"]["remaining"] <= 1.0
    answers: list = []
    started = time.monotonic()
    for t in _send_later(proxy.port, answers, 3):
        t.join(15)
    assert answers == [(200, "blue")] * 3
    assert time.monotonic() - started >= 0.5
    assert proxy.event("pause_expired")["waiting"] >= 1
    assert status_now(proxy)["pause"] is None


def test_stopping_the_proxy_while_paused_answers_the_held_requests(start_proxy):
    proxy = start_proxy()
    assert proxy.cli("pause").returncode == 0
    answers: list = []
    threads = _send_later(proxy.port, answers, 3)
    wait_for(lambda: status_now(proxy)["pause"]["waiting"] == 3, what="3 requests held")
    assert proxy.stop() == 0
    for t in threads:
        t.join(10)
    assert answers == [(200, "blue")] * 3


@pytest.mark.parametrize("body", [{"timeout": "soon"}, {"timeout": -1}, {"timeout": 0},
                                  {"timeout": 86400}, {"timeout": True}, {"for": "30s"}, [1]])
def test_pause_refuses_a_bad_timeout_and_stays_unpaused(proxy, body):
    status, _, answer = admin(proxy, "POST", "/pause", body)
    assert status == 400 and "error" in answer, answer
    assert status_now(proxy)["pause"] is None


# -- the access log in a file ------------------------------------------------------------

def test_the_access_log_goes_to_its_file_and_is_reopened_on_sigusr1(start_proxy, tmp_path):
    path = tmp_path / "access.log"
    proxy = start_proxy(edit=lambda text: text.replace(
        "log: {access: true, format: json}", f"log: {{access: true, format: json, "
                                             f"access_file: {path}}}"))
    conn = open_conn(proxy.port)
    for i in range(5):
        get(conn, f"/before-{i}")
    wait_for(lambda: path.exists() and path.read_text().count("\n") >= 5, what="5 lines")
    assert proxy.events("request") == []  # not on stdout any more
    rotated = tmp_path / "access.log.1"
    path.rename(rotated)  # what logrotate does, then its postrotate:
    proxy.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: proxy.event("access_log_reopened"), what="the reopen")
    for i in range(3):
        get(conn, f"/after-{i}")
    wait_for(lambda: path.exists() and path.read_text().count("\n") >= 3, what="3 new lines")
    old = [json.loads(x)["path"] for x in rotated.read_text().splitlines()]
    new = [json.loads(x)["path"] for x in path.read_text().splitlines()]
    assert old == [f"/before-{i}" for i in range(5)]
    assert new == [f"/after-{i}" for i in range(3)]


# -- events -------------------------------------------------------------------------------

def test_events_lists_routing_changes_and_follows_them_across_a_restart(start_proxy):
    proxy = start_proxy()
    assert proxy.cli("weights", "blue=90", "green=10").returncode == 0
    listed = proxy.cli("events")
    assert listed.returncode == 0 and "weights_changed" in listed.stdout
    assert "blue=90,green=10" in listed.stdout
    follow = spawn_switchyard("events", "-f", "--json", "--socket", proxy.admin)
    seen: list[str] = []

    def read_until(event: str) -> None:
        deadline = time.monotonic() + 20
        while event not in seen and time.monotonic() < deadline:
            line = follow.stdout.readline()
            if line:
                seen.append(json.loads(line)["event"])

    try:
        read_until("weights_changed")
        assert proxy.cli("cutover", "green").returncode == 0
        read_until("cutover")
        proxy.restart()  # the follower keeps trying
        assert proxy.cli("rollback").returncode == 0
        read_until("rolled_back")
    finally:
        follow.terminate()
        _, err = follow.communicate(timeout=10)
    assert seen.count("weights_changed") == 1 and "cutover" in seen and "rolled_back" in seen
    assert "restarted" in err or "reconnected" in err, err


def test_events_piped_into_head_end_quietly(proxy):
    # The reader starts late, so every line is already in the pipe and no later write
    # fails: `events -f` has to notice by itself that the reader left.
    for i in range(30):
        assert admin(proxy, "PUT", "/weights", {"blue": 100 - i, "green": i})[0] == 200
    out = subprocess.run(f"{sys.executable} -m proxy.cli events -f --socket {proxy.admin} "
                         "| (sleep 1; head -1)", shell=True, capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert len(out.stdout.splitlines()) == 1
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_top_keeps_trying_while_the_proxy_restarts(start_proxy):
    proxy = start_proxy()
    top = spawn_switchyard("top", "--socket", proxy.admin, "--interval", "0.3")
    try:
        time.sleep(1.5)
        proxy.stop()
        time.sleep(1.5)
        proxy.lines.clear()
        proxy.start()
        time.sleep(1.5)
        assert top.poll() is None, top.stderr.read()  # still running
    finally:
        top.terminate()
        out, _ = top.communicate(timeout=10)
    screens = out.split("switchyard top")
    assert any("unreachable" in s for s in screens), out[-2000:]
    assert "generation" in screens[-1] or "generation" in screens[-2]
    assert "Nonems" not in out and "p99 None" not in out


# -- the command line -----------------------------------------------------------------------

@pytest.mark.parametrize("args", [("status",), ("weights", "blue=1", "green=0"),
                                  ("cutover", "green"), ("rollback",)])
def test_cli_exits_3_when_the_admin_socket_does_not_exist(tmp_path, args):
    result = switchyard(*args, "--socket", str(tmp_path / "missing.sock"))
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "missing.sock" in result.stderr


def test_cli_exits_3_when_nobody_listens_on_the_socket(tmp_path):
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)  # a socket file left behind by a dead process
    assert switchyard("status", "--socket", path).returncode == 3


@pytest.mark.parametrize("args", [
    ("weights", "blue"),
    ("weights",),
    ("cutover",),
    ("drain",),
    ("frobnicate",),
    ("status", "--bogus"),
])
def test_cli_usage_errors_exit_2(proxy, args):
    before = proxy.status()
    result = proxy.cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert routing(proxy.status()) == routing(before)


def test_cli_refusals_exit_1(proxy):
    assert proxy.cli("weights", "blue=0", "green=0").returncode == 1
    assert proxy.cli("weights", "blue=1", "red=1").returncode == 1
    assert proxy.cli("cutover", "red").returncode == 1


def test_human_status_is_a_table(proxy):
    result = proxy.cli("status", check=True)
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("POOL"))
    assert header.split()[:3] == ["POOL", "WEIGHT", "HEALTH"]
    body = lines[lines.index(header) + 1:]
    body = body[:body.index("")] if "" in body else body  # the pool table ends at a blank line
    rows = {line.split()[0]: line.split() for line in body}
    assert set(rows) == {"blue", "green"}
    assert rows["blue"][1] == "100" and rows["green"][1] == "0"


def test_json_status_and_mutations_print_the_admin_answer(proxy):
    data = json.loads(proxy.cli("status", "--json", check=True).stdout)
    assert {"generation", "weights", "previous", "pools", "rollout"} <= set(data)
    pool = data["pools"]["blue"]
    assert {"healthy", "weight", "inflight", "requests", "errors", "upstreams"} <= set(pool)
    assert set(pool["upstreams"][0]) >= {"address", "healthy", "inflight"}

    changed = json.loads(proxy.cli("weights", "blue=90", "green=10", "--json", check=True).stdout)
    assert changed["weights"] == {"blue": 90, "green": 10}
    assert changed["generation"] == data["generation"] + 1
    refused = proxy.cli("weights", "blue=0", "green=0", "--json")
    assert refused.returncode == 1 and "error" in json.loads(refused.stdout)


def test_cli_finds_the_socket_by_env_then_config(proxy):
    assert switchyard("status", "--json", env={"SWITCHYARD_SOCKET": proxy.admin}).returncode == 0
    result = switchyard("status", "--json", "-c", proxy.config_path,
                        env={"SWITCHYARD_SOCKET": None})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weights"] == BLUE_ONLY
