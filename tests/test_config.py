"""The configuration loader: exact values, defaults, and errors that name key path and line."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import re
import textwrap

import pytest

from proxy import config as config_module
from proxy.config import (
    Address,
    AdminConfig,
    Config,
    ConfigError,
    HealthConfig,
    LimitsConfig,
    LogConfig,
    PoolConfig,
    Problem,
    RolloutConfig,
    StickyConfig,
    TimeoutsConfig,
    from_text,
    load,
    parse_address,
    parse_duration,
    parse_rate,
    parse_size,
)

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "config" / "switchyard.example.yaml"

# Lines 1-3; error cases below append after them, so their line numbers start at 4.
POOLS = """\
pools:
  blue: {upstreams: ["127.0.0.1:9501"]}
  green: {upstreams: ["127.0.0.1:9502"]}
"""

FULL = """\
listen: ["0.0.0.0:80", "[::]:8080", "unix:/run/switchyard/http.sock"]
admin:
  socket: /tmp/sy/admin.sock
  mode: "0660"
  group: deploy
  uids: [1000, 1001]
  max_connections: 4
  max_request: 16KB
  idle_timeout: 500ms
state_file: /tmp/sy/state.json
secret_file: /etc/switchyard/secret
pools:
  blue:
    upstreams: ["127.0.0.1:9501", "127.0.0.1:9511"]
    balance: round_robin
  green:
    upstreams: ["127.0.0.1:9502", "unix:/run/hyperf/green.sock"]
health: {path: /healthz, interval: 2s, timeout: 1500ms, rise: 3, fall: 1, eject_after: 5}
weights: {blue: 90, green: 10}
sticky: {cookie: sy, max_age: 2h, grace: 5m}
timeouts:
  client_header: 5s
  client_body: 20s
  client_idle: 75
  client_send: 1m
  upstream_connect: 0.5
  upstream_response: 2m
  upstream_idle: 15s
  drain: 0
  cutover_wait: 45s
limits: {max_body: 8MB, max_header: 16KB, max_connections: 500, body_memory: 0}
trusted_proxies: ["10.0.0.0/8", "192.168.1.7"]
tester: {header: X-Canary, trusted: ["10.1.2.0/24"]}
log: {access: false, format: json, level: debug}
rollout: {interval: 1m, max_error_rate: 2.5%, max_p99: 800ms, min_requests: 0}
"""


def problems_of(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        from_text(text)
    return [(problem.key, problem.line, problem.message) for problem in caught.value.problems]


def only_problem(text: str) -> tuple[str, int | None, str]:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- valid files ---------------------------------------------------------------------


def test_full_config_loads_with_exact_values():
    config = from_text(FULL, source="full.yaml")
    assert config.listen == (
        Address("tcp", host="0.0.0.0", port=80),
        Address("tcp", host="::", port=8080),
        Address("unix", path="/run/switchyard/http.sock"),
    )
    assert config.admin == AdminConfig(
        socket="/tmp/sy/admin.sock", mode=0o660, group="deploy", uids=(1000, 1001),
        max_connections=4, max_request=16384, idle_timeout=0.5,
    )
    assert config.state_file == "/tmp/sy/state.json"
    assert config.secret_file == "/etc/switchyard/secret"
    assert config.pools == {
        "blue": PoolConfig("blue", (Address("tcp", "127.0.0.1", 9501), Address("tcp", "127.0.0.1", 9511)),
                           balance="round_robin"),
        "green": PoolConfig("green", (Address("tcp", "127.0.0.1", 9502),
                                      Address("unix", path="/run/hyperf/green.sock"))),
    }
    assert config.health == HealthConfig("/healthz", 2.0, 1.5, 3, 1, 5)
    assert config.weights == {"blue": 90, "green": 10}
    assert config.sticky == StickyConfig("sy", 7200.0, 300.0)
    assert config.timeouts == TimeoutsConfig(5.0, 20.0, 75.0, 60.0, 0.5, 120.0, 15.0, 0.0, 45.0)
    assert config.limits == LimitsConfig(8 * 2**20, 16384, 500, 0)
    assert config.trusted_proxies == ("10.0.0.0/8", "192.168.1.7/32")
    assert config.tester == config_module.TesterConfig("X-Canary", ("10.1.2.0/24",))
    assert config.log == LogConfig(access=False, format="json", level="debug")
    assert config.rollout == RolloutConfig(60.0, 0.025, 0.8, 0)
    assert config.source == "full.yaml"


def test_minimal_config_gets_every_default():
    config = from_text(POOLS)
    assert config.listen == (Address("tcp", "127.0.0.1", 8080),)
    assert config.admin == AdminConfig()
    assert config.admin.mode == 0o600
    assert config.state_file == "/var/lib/switchyard/state.json"
    assert config.secret_file == "/var/lib/switchyard/secret"
    assert config.pools["blue"].balance == "least_inflight"
    assert (config.health, config.sticky, config.timeouts, config.limits) == (
        HealthConfig(), StickyConfig(), TimeoutsConfig(), LimitsConfig())
    assert (config.tester, config.log, config.rollout) == (config_module.TesterConfig(), LogConfig(), RolloutConfig())
    assert config.trusted_proxies == ()
    assert config.limits.max_body == 2 * 2**20 - 64 * 2**10  # fits Swoole's 2 MB


def test_without_weights_the_first_pool_gets_everything():
    assert from_text(POOLS).weights == {"blue": 100, "green": 0}


def test_pools_keep_file_order():
    config = from_text('pools:\n  green: {upstreams: ["127.0.0.1:9502"]}\n  blue: {upstreams: ["127.0.0.1:9501"]}\n')
    assert list(config.pools) == ["green", "blue"]
    assert config.weights == {"green": 100, "blue": 0}


def test_pools_missing_from_weights_get_zero():
    assert from_text(POOLS + "weights: {green: 5}\n").weights == {"blue": 0, "green": 5}


def test_secret_file_defaults_next_to_state_file():
    config = from_text(POOLS + "state_file: /srv/sy/state.json\n")
    assert config.secret_file == "/srv/sy/secret"


def test_empty_sections_mean_defaults():
    config = from_text(POOLS + "health:\nlimits: {}\n")
    assert config.health == HealthConfig()
    assert config.limits == LimitsConfig()


@pytest.mark.parametrize("written, mode", [('"0600"', 0o600), ('"0660"', 0o660), ("0640", 0o640),
                                           ('"755"', 0o755), ('"0o700"', 0o700)])
def test_admin_mode_is_read_as_octal_quoted_or_not(written, mode):
    assert from_text(POOLS + f"admin: {{mode: {written}}}\n").admin.mode == mode


def test_config_is_frozen():
    config = from_text(POOLS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listen = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.health.interval = 5  # type: ignore[misc]


def test_example_file_loads_without_errors():
    config = load(str(EXAMPLE))
    assert isinstance(config, Config)
    assert config.source == str(EXAMPLE)
    assert config.pools["blue"].upstreams == (Address("tcp", "127.0.0.1", 9501),)
    assert config.pools["green"].upstreams == (Address("tcp", "127.0.0.1", 9502),)
    assert config.weights == {"blue": 100, "green": 0}


def test_example_file_shows_every_key():
    text = EXAMPLE.read_text()
    sections = {"admin": AdminConfig, "health": HealthConfig, "sticky": StickyConfig,
                "timeouts": TimeoutsConfig, "limits": LimitsConfig, "tester": config_module.TesterConfig,
                "log": LogConfig, "rollout": RolloutConfig, "metrics": config_module.MetricsConfig}
    for section, kind in sections.items():
        for name in kind.__dataclass_fields__:
            assert f"\n  {name}:" in text, f"{section}.{name} missing from the example"
    for name in Config.__dataclass_fields__.keys() - {"source", "cluster"}:
        assert f"\n{name}:" in text, f"{name} missing from the example"
    # A fleet needs etcd: the example shows it commented out.
    assert "\n# cluster:" in text
    for name in config_module.ClusterConfig.__dataclass_fields__:
        assert f"\n#   {name}:" in text, f"cluster.{name} missing from the example"


SPEC_EXAMPLE = """
listen: ["127.0.0.1:8080"]
admin:
  socket: /run/switchyard/admin.sock
  mode: "0600"
state_file: /var/lib/switchyard/state.json
pools:
  blue:  {upstreams: ["127.0.0.1:9501"]}
  green: {upstreams: ["127.0.0.1:9502", "unix:/run/hyperf/green.sock"]}
health: {path: /health, interval: 1s, timeout: 1s}
weights: {blue: 100, green: 0}
sticky: {cookie: switchyard_pool, max_age: 1h}
timeouts: {client_header: 10s, client_body: 30s, upstream_connect: 2s, upstream_response: 60s, drain: 30s}
limits: {max_body: 100MB, max_header: 32KB}
workers: 1
metrics: {listen: "127.0.0.1:9145"}
"""


def test_the_specifications_example_loads():
    config = from_text(SPEC_EXAMPLE)  # docs/SPEC.md 2.2, but for `cluster` (below)
    assert config.workers == 1 and config.metrics.listen == Address("tcp", "127.0.0.1", 9145)


@pytest.mark.parametrize("value, count", [("1", 1), ("2", 2), ("16", 16)])
def test_workers_is_a_count_of_processes(value, count):
    text = f'pools: {{blue: {{upstreams: ["127.0.0.1:1"]}}}}\nworkers: {value}\n'
    assert from_text(text).workers == count


def test_workers_auto_is_one_per_usable_cpu():
    text = 'pools: {blue: {upstreams: ["127.0.0.1:1"]}}\nworkers: auto\n'
    assert from_text(text).workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, reason", [("0", "at least 1"), ("x", "an integer"),
                                           ("true", "an integer")])
def test_workers_must_be_a_positive_integer_or_auto(value, reason):
    key, _, message = only_problem(f'pools: {{blue: {{upstreams: ["127.0.0.1:1"]}}}}\n'
                                   f"workers: {value}\n")
    assert key == "workers" and reason in message


def test_the_specifications_cluster_example_loads_with_this_hosts_name():
    config = from_text(SPEC_EXAMPLE + 'cluster:\n  etcd: ["http://127.0.0.1:2379"]\n'
                       "  key: /switchyard/myapp\n")
    assert config.cluster == config_module.ClusterConfig(
        etcd=("http://127.0.0.1:2379",), key="/switchyard/myapp", host=socket.gethostname())
    assert from_text(SPEC_EXAMPLE).cluster is None


@pytest.mark.parametrize("body, key, reason", [
    ('{etcd: ["127.0.0.1:2379"], key: /a}', "cluster.etcd[0]", "http://127.0.0.1:2379"),
    ('{etcd: [], key: /a}', "cluster.etcd", "at least one endpoint"),
    ('{etcd: ["http://e:2379"], key: a/b}', "cluster.key", "key path"),
    ('{etcd: ["http://e:2379"]}', "cluster.key", "required"),
    ('{etcd: ["http://e:2379"], key: /a, host: "a b"}', "cluster.host", "host name"),
    ('{etcd: ["http://e:2379"], key: /a, lease: 1s}', "cluster.lease", "at least 2s"),
    ('{etcd: ["http://e:2379"], key: /a, leader: x}', "cluster.leader", "unknown key"),
])
def test_cluster_settings_are_checked(body, key, reason):
    problem_key, line, message = only_problem(SPEC_EXAMPLE + f"cluster: {body}\n")
    assert (problem_key, line) == (key, 17) and reason in message


def test_load_reads_a_file(tmp_path):
    path = tmp_path / "switchyard.yaml"
    path.write_text(POOLS)
    assert load(str(path)).source == str(path)


def test_unreadable_file_is_a_config_error_without_key(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load(str(missing))
    [problem] = caught.value.problems
    assert (problem.key, problem.line) == ("", None)
    assert str(caught.value).startswith(f"{missing}: cannot read: ")


# --- durations, sizes, rates ---------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [
    ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5),
    (" 2s ", 2.0), ("10", 10.0), (7, 7.0), (0.25, 0.25), (0, 0.0), ("0s", 0.0),
])
def test_parse_duration_accepts_units_and_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "s", "1d", "-1s", -1, -0.5, True, None, "1 h 2m",
                                   float("inf"), float("nan"), [1]])
def test_parse_duration_rejects_bad_and_negative_values(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value, size", [
    ("512B", 512), ("16KB", 16384), ("100MB", 100 * 2**20), ("1GB", 2**30), ("1gb", 2**30),
    ("4KiB", 4096), ("1.5MB", 3 * 2**19), ("2048", 2048), (1000, 1000), (0, 0),
])
def test_parse_size_accepts_units_and_bytes(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "16XB", "KB", "-1KB", -1, 1.5, True, None, "1 2KB"])
def test_parse_size_rejects_bad_and_negative_values(value):
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("value, rate", [("1%", 0.01), ("0%", 0.0), ("100%", 1.0), (0.05, 0.05),
                                         (1, 1.0), (" 2.5% ", 0.025)])
def test_parse_rate_accepts_percent_and_fraction(value, rate):
    assert parse_rate(value) == pytest.approx(rate)


@pytest.mark.parametrize("value", ["101%", "-1%", "x%", 1.5, -0.1, "0.01", True, None, "nan%"])
def test_parse_rate_rejects_values_outside_0_to_100_percent(value):
    with pytest.raises(ValueError):
        parse_rate(value)


# --- addresses -----------------------------------------------------------------------


@pytest.mark.parametrize("text, address", [
    ("127.0.0.1:9501", Address("tcp", host="127.0.0.1", port=9501)),
    ("localhost:80", Address("tcp", host="localhost", port=80)),
    ("[::1]:9501", Address("tcp", host="::1", port=9501)),
    ("[2001:db8::5]:65535", Address("tcp", host="2001:db8::5", port=65535)),
    ("unix:/run/hyperf/green.sock", Address("unix", path="/run/hyperf/green.sock")),
    ("unix:run/demo.sock", Address("unix", path="run/demo.sock")),
])
def test_parse_address_reads_tcp_ipv6_and_unix(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["127.0.0.1:9501", "[::1]:9501", "unix:/run/x.sock", "app.local:1"])
def test_address_str_round_trips(text):
    assert str(parse_address(text)) == text
    assert parse_address(str(parse_address(text))) == parse_address(text)


@pytest.mark.parametrize("text, reason", [
    ("127.0.0.1", "expected host:port"),
    (":9501", "expected host:port"),
    ("127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("127.0.0.1:65536", "port must be a number from 1 to 65535"),
    ("127.0.0.1:http", "port must be a number"),
    ("::1:9501", "IPv6 address needs brackets"),
    ("[::1]9501", "expected [IPv6]:port"),
    ("[::g]:9501", "not a valid IPv6 address"),
    ("300.0.0.1:80", "not a valid IPv4 address"),
    ("bad_host!:80", "not a valid host name"),
    ("http://127.0.0.1:9501", "without a scheme"),
    ("unix:", "needs a path"),
    ("unix:/" + "x" * 200, "longer than 107 bytes"),
    (9501, "expected an address"),
])
def test_parse_address_explains_what_is_wrong(text, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_address(text)


def test_port_zero_is_only_for_listen_addresses():
    assert parse_address("127.0.0.1:0", allow_port_zero=True).port == 0
    assert from_text(POOLS + 'listen: ["127.0.0.1:0"]\n').listen[0].port == 0
    key, line, _ = only_problem('pools:\n  blue: {upstreams: ["127.0.0.1:0"]}\n')
    assert (key, line) == ("pools.blue.upstreams[0]", 2)


# --- errors: key path and line -------------------------------------------------------

# (appended to POOLS, expected key path, expected line, words in the message)
SINGLE_ERRORS = [
    # unknown keys, at every depth
    ("timeouts:\n  client_hedaer: 5s\n", "timeouts.client_hedaer", 5, "unknown key (did you mean client_header?)"),
    ("listn: []\n", "listn", 4, "unknown key"),
    ("log: {colour: true}\n", "log.colour", 4, "unknown key"),
    # wrong types
    ('listen: "127.0.0.1:8080"\n', "listen", 4, "expected a list"),
    ("health: [1s]\n", "health", 4, "expected a mapping"),
    ("health: {interval: [1s]}\n", "health.interval", 4, "expected a single value"),
    ("health: {rise: 2.5}\n", "health.rise", 4, "expected an integer"),
    ("health: {rise: true}\n", "health.rise", 4, "expected an integer"),
    ("timeouts: {drain: yes}\n", "timeouts.drain", 4, "expected a duration"),
    ("limits: {max_body: 1.5}\n", "limits.max_body", 4, "expected a size"),
    ("log: {access: 1}\n", "log.access", 4, "expected true or false"),
    ("admin: {group: 1000}\n", "admin.group", 4, "expected a non-empty string"),
    ("state_file: 5\n", "state_file", 4, "expected a non-empty string"),
    ("trusted_proxies: [12]\n", "trusted_proxies[0]", 4, "expected a network"),
    ("admin: {socket: !!binary aGVsbG8=}\n", "admin.socket", 4, "expected a non-empty string"),
    ("admin: {socket: !custom x}\n", "admin.socket", 4, "unreadable value"),
    # out of range
    ("health: {interval: 0s}\n", "health.interval", 4, "must be greater than 0"),
    ("health: {timeout: -1}\n", "health.timeout", 4, "must not be negative"),
    ("health: {fall: 0}\n", "health.fall", 4, "must be at least 1"),
    ("health: {path: health}\n", "health.path", 4, 'starting with "/"'),
    ("sticky: {max_age: 0}\n", "sticky.max_age", 4, "must be greater than 0"),
    ("sticky: {grace: -5s}\n", "sticky.grace", 4, "must not be negative"),
    ("sticky: {cookie: 'a b'}\n", "sticky.cookie", 4, "HTTP token"),
    ("sticky: {cookie: 'pool;x'}\n", "sticky.cookie", 4, "HTTP token"),
    ("tester: {header: 'X Pool'}\n", "tester.header", 4, "HTTP token"),
    ("tester: {trusted: [10.0.0.0/33]}\n", "tester.trusted[0]", 4, "does not appear to be"),
    ("limits: {max_connections: 0}\n", "limits.max_connections", 4, "must be at least 1"),
    ("limits: {max_header: 0KB}\n", "limits.max_header", 4, "must be greater than 0"),
    ("log: {format: xml}\n", "log.format", 4, "must be one of auto, json, console"),
    ("log: {level: trace}\n", "log.level", 4, "must be one of debug, info, warning, error"),
    ("rollout: {max_error_rate: 150%}\n", "rollout.max_error_rate", 4, "between 0% and 100%"),
    ("rollout: {max_p99: 0}\n", "rollout.max_p99", 4, "must be greater than 0"),
    ("rollout: {min_requests: -1}\n", "rollout.min_requests", 4, "must be at least 0"),
    ("admin: {uids: [1000, -1]}\n", "admin.uids[1]", 4, "must be at least 0"),
    ("admin: {max_request: 0}\n", "admin.max_request", 4, "must be greater than 0"),
    # admin socket mode
    ('admin: {mode: "rw-------"}\n', "admin.mode", 4, "octal file mode"),
    ('admin: {mode: "0800"}\n', "admin.mode", 4, "octal file mode"),
    ('admin: {mode: "01777"}\n', "admin.mode", 4, "at most 0777"),
    ("admin: {mode: [6]}\n", "admin.mode", 4, "octal file mode"),
    # weights
    ("weights: {blue: -1, green: 5}\n", "weights.blue", 4, "must be at least 0"),
    ("weights: {blue: 0, green: 0}\n", "weights", 4, "at least one weight must be greater than 0"),
    ("weights: {}\n", "weights", 4, "at least one weight must be greater than 0"),
    ("weights: {blue: 50, red: 50}\n", "weights.red", 4, "no such pool (pools are: blue, green)"),
    ("weights: {blue: 1.5}\n", "weights.blue", 4, "expected an integer"),
    # addresses
    ('listen: ["127.0.0.1:8080", "8080"]\n', "listen[1]", 4, "expected host:port or unix:/path"),
    ("listen: [8080]\n", "listen[0]", 4, "expected an address"),
    ("listen: []\n", "listen", 4, "list at least one address"),
    ('listen: ["127.0.0.1:80", "127.0.0.1:80"]\n', "listen[1]", 4, "duplicate of listen[0]"),
    # odd keys and duplicate keys
    ("? [a, b]\n: 1\n", "", 4, "keys must be plain names"),
    ("<<: {log: {}}\n", "<<", 4, "unknown key"),
    ("log: {level: info}\nlog: {level: debug}\n", "log", 5, "duplicate key (first set on line 4)"),
    ("health:\n  rise: 2\n  rise: 3\n", "health.rise", 6, "duplicate key (first set on line 5)"),
]


@pytest.mark.parametrize("extra, key, line, message", SINGLE_ERRORS, ids=[case[1] for case in SINGLE_ERRORS])
def test_each_error_names_key_path_and_line(extra, key, line, message):
    got_key, got_line, got_message = only_problem(POOLS + extra)
    assert (got_key, got_line) == (key, line)
    assert message in got_message


POOL_ERRORS = [
    ('pools:\n  blue: {upstreams: ["127.0.0.1:9501"]}\n  green:\n    upstreams:\n      - 127.0.0.1:9502\n'
     '      - "9502"\n', "pools.green.upstreams[1]", 6, "expected host:port"),
    ('pools:\n  blue: {upstreams: []}\n', "pools.blue.upstreams", 2, "list at least one upstream"),
    ("pools:\n  blue: {upstreams:}\n", "pools.blue.upstreams", 2, "list at least one upstream"),
    ("pools:\n  blue: {balance: round_robin}\n", "pools.blue.upstreams", 2, "required"),
    ("pools:\n  blue:\n", "pools.blue.upstreams", 2, "required"),
    ('pools:\n  Blue: {upstreams: ["127.0.0.1:1"]}\n', "pools.Blue", 2, "pool name"),
    ('pools:\n  "1st": {upstreams: ["127.0.0.1:1"]}\n', "pools.1st", 2, "pool name"),
    ('pools:\n  ' + "a" * 33 + ': {upstreams: ["127.0.0.1:1"]}\n', "pools." + "a" * 33, 2, "pool name"),
    ('pools:\n  blue: {upstreams: ["127.0.0.1:1"], balance: random}\n', "pools.blue.balance", 2,
     "must be one of least_inflight, round_robin"),
    ('pools:\n  blue: {upstreams: ["127.0.0.1:1"], weight: 5}\n', "pools.blue.weight", 2, "unknown key"),
    ('pools:\n  blue: {upstreams: ["127.0.0.1:1", "127.0.0.1:1"]}\n', "pools.blue.upstreams[1]", 2,
     "duplicate of pools.blue.upstreams[0]"),
    ('pools:\n  blue: {upstreams: ["127.0.0.1:1"]}\n  blue: {upstreams: ["127.0.0.1:2"]}\n', "pools.blue", 3,
     "duplicate key (first set on line 2)"),
    ("pools: {}\n", "pools", 1, "define at least one pool"),
    ("pools:\n", "pools", 1, "define at least one pool"),
    ('pools: ["127.0.0.1:9501"]\n', "pools", 1, "expected a mapping"),
    ("listen: []\n".replace("[]", '["127.0.0.1:8080"]'), "pools", 1, "required"),
]


@pytest.mark.parametrize("text, key, line, message", POOL_ERRORS, ids=[case[1] for case in POOL_ERRORS])
def test_pool_errors_name_key_path_and_line(text, key, line, message):
    got_key, got_line, got_message = only_problem(text)
    assert (got_key, got_line) == (key, line)
    assert message in got_message


def test_all_problems_are_reported_at_once_in_file_order():
    text = textwrap.dedent("""\
        listen: ["127.0.0.1:8080", "nope"]
        pools:
          blue: {upstreams: []}
          green: {upstreams: ["127.0.0.1:9502"]}
        timeouts:
          client_hedaer: 5s
          drain: -1
        weights: {blue: 0, green: 0}
        """)
    assert [(key, line) for key, line, _ in problems_of(text)] == [
        ("listen[1]", 1),
        ("pools.blue.upstreams", 3),
        ("timeouts.client_hedaer", 6),
        ("timeouts.drain", 7),
        ("weights", 8),
    ]


def test_config_error_prints_one_line_per_problem_with_source_and_line():
    error = ConfigError([Problem("pools.green.upstreams[1]", 7, "bad address"), Problem("", None, "cannot read")],
                        source="/etc/switchyard/switchyard.yaml")
    assert str(error).splitlines() == [
        "/etc/switchyard/switchyard.yaml:7: pools.green.upstreams[1]: bad address",
        "/etc/switchyard/switchyard.yaml: cannot read",
    ]


def test_from_text_error_uses_its_source_name():
    with pytest.raises(ConfigError) as caught:
        from_text(POOLS + "bogus: 1\n", source="x.yaml")
    assert str(caught.value) == "x.yaml:4: bogus: unknown key"


@pytest.mark.parametrize("text, line, message", [
    ("", None, "the file is empty"),
    ("# only a comment\n", None, "the file is empty"),
    ("- a\n- b\n", 1, "top level must be a mapping"),
    ("just text\n", 1, "top level must be a mapping"),
    ("pools:\n  blue: {upstreams: [\n", 3, "invalid YAML"),
    ("pools:\n  blue: x\n   bad: y\n", 3, "invalid YAML"),
    ("a: 1\n---\nb: 2\n", 2, "invalid YAML"),
])
def test_broken_files_give_one_clear_problem(text, line, message):
    key, got_line, got_message = only_problem(text)
    assert (key, got_line) == ("", line)
    assert message in got_message


def test_problems_inside_an_aliased_node_point_at_the_anchor():
    text = POOLS + "health: &h {rise: 0}\nsticky: *h\n"
    assert [(key, line) for key, line, _ in problems_of(text)] == [
        ("health.rise", 4), ("sticky.rise", 4)]
