"""Fixtures of the test kit (tests/support.py): demo pools, proxies, upstreams, a dead port."""

from __future__ import annotations

import socket

import pytest

from .support import (BLUE_ONLY, PoolProcess, ProxyProcess, RecordingUpstream, close_connections,
                      edit_config)


@pytest.fixture(autouse=True)
def _close_client_connections():
    yield
    close_connections()


@pytest.fixture(scope="module")
def pools():
    """Two demo pool processes, blue and green, shared by the tests of a module."""
    blue, green = PoolProcess("blue"), PoolProcess("green")
    yield blue, green
    blue.stop()
    green.stop()


@pytest.fixture
def start_proxy(tmp_path, request):
    """start_proxy(blue=[...], green=[...], weights=..., extra=..., edit=..., health=...,
    listen=...) -> a started ProxyProcess; every one is stopped after the test.

    The upstreams default to the demo `pools` (started only when needed), the weights
    to all on blue.  `edit(text) -> text` rewrites the config before the start; `health`
    replaces its health settings.  The proxies of one test share tmp_path: a second one
    is the first one restarted, with its state file."""
    started: list[ProxyProcess] = []

    def start(blue: list[str] | dict | None = None, green: list[str] | dict | None = None,
              weights=None, extra: str = "", edit=None, health: str | None = None,
              listen: str = "127.0.0.1:0") -> ProxyProcess:
        if blue is None or green is None:
            demo_blue, demo_green = request.getfixturevalue("pools")
            blue = [demo_blue.address] if blue is None else blue
            green = [demo_green.address] if green is None else green
        proxy = ProxyProcess(tmp_path, {"blue": blue, "green": green},
                             dict(weights or BLUE_ONLY), extra=extra, health=health,
                             listen=listen)
        if edit is not None:
            edit_config(proxy, edit)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        if proxy.proc is not None and proxy.proc.poll() is None:
            proxy.stop()
        elif proxy.proc is not None:
            proxy.kill()  # already gone: only closes the log pipe


@pytest.fixture
def upstreams():
    """upstreams(kind=RecordingUpstream, **kwargs) -> a started upstream, closed after the test."""
    made = []

    def make(kind=RecordingUpstream, **kwargs):
        up = kind(**kwargs)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


@pytest.fixture
def dead_port():
    """A port that refuses connections: bound, never listening (nobody else can take it)."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        yield hole
