"""Which data plane runs, compiled (setup.py: Cython, typed by the .pxd files) or pure
Python, is said at start-up and in `status`; CI runs the suite in both modes and sets
SWITCHYARD_EXPECT_HOT_PATH, so a build that silently fell back cannot pass as compiled."""

from __future__ import annotations

import os
import pathlib

from proxy.cli.render import render_status

from .support import ROOT


def _tree_is_compiled() -> bool:
    return any((pathlib.Path(ROOT) / "proxy" / "dataplane").glob("exchange*.so"))


def test_status_and_the_start_up_line_say_which_data_plane_runs(start_proxy):
    proxy = start_proxy()
    mode = proxy.status()["hot_path"]
    assert mode == ("compiled" if _tree_is_compiled() else "pure python")
    assert proxy.event("server_started")["hot_path"] == mode
    expected = os.environ.get("SWITCHYARD_EXPECT_HOT_PATH")
    if expected:
        assert mode == expected
    text = proxy.cli("status", check=True).stdout
    assert ("data plane: pure Python" in text) == (mode == "pure python")


def test_a_pure_python_data_plane_is_named_in_the_status_table():
    status = {"generation": 1, "weights": {"blue": 100}, "previous": None, "pools": {},
              "hot_path": "pure python"}
    assert "data plane: pure Python (not compiled" in render_status(status)
    assert "data plane" not in render_status({**status, "hot_path": "compiled"})
