"""Reading a configuration file: one Config, or a ConfigError with every problem."""

from __future__ import annotations

import dataclasses
import os
import socket

import yaml
from yaml.nodes import MappingNode

from .model import DEFAULT_LISTEN, DEFAULT_STATE_FILE, Config
from .reader import ConfigError, Problem, Reader, is_null, line_of, section, shown
from .schema import SECTIONS, TOP_FIELDS


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([Problem("", None, f"cannot read: {error}")], path) from error
    return from_text(text, path)


def from_text(text: str, source: str = "<string>") -> Config:
    root = _compose(text, source)
    reader = Reader()
    config = _build(reader, root, source)
    if reader.problems:  # in file order, however the walk happened to find them
        problems = sorted(reader.problems, key=lambda problem: problem.line or 0)
        raise ConfigError(problems, source)
    return config


def _compose(text: str, source: str) -> MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else None
        raise ConfigError([Problem("", line, f"invalid YAML: {error.problem}")], source) from error
    except yaml.YAMLError as error:
        raise ConfigError([Problem("", None, f"invalid YAML: {error}")], source) from error
    if root is None or is_null(root):
        raise ConfigError([Problem("", None, "the file is empty; at least `pools` must be set")], source)
    if not isinstance(root, MappingNode):
        message = f"the top level must be a mapping of settings, got {shown(root)}"
        raise ConfigError([Problem("", line_of(root), message)], source)
    return root


def _build(reader: Reader, root: MappingNode, source: str) -> Config:
    values = section(reader, root, "", TOP_FIELDS, required=("pools",))
    pools = values.get("pools", {})
    state_file = values.get("state_file", DEFAULT_STATE_FILE)
    sections = {name: values.get(name, kind()) for name, kind in SECTIONS.items()}
    return Config(
        listen=values.get("listen", DEFAULT_LISTEN),
        state_file=state_file,
        secret_file=values.get("secret_file", os.path.join(os.path.dirname(state_file), "secret")),
        pools=pools,
        weights=_resolve_weights(reader, pools, values.get("weights")),
        trusted_proxies=values.get("trusted_proxies", ()),
        workers=values.get("workers", 1),
        source=source,
        cluster=_cluster_named(values.get("cluster")),
        **sections,
    )


def _cluster_named(cluster):
    """The fleet settings with this host's name filled in (the hostname unless given)."""
    if cluster is None or cluster.host:
        return cluster
    return dataclasses.replace(cluster, host=socket.gethostname())


def _resolve_weights(reader: Reader, pools: dict, given: dict | None) -> dict[str, int]:
    if given is None:  # a fresh install sends everything to the first pool
        return {name: 100 if index == 0 else 0 for index, name in enumerate(pools)}
    weights = dict.fromkeys(pools, 0)
    for name, (weight, key_node) in given.items():
        if name in pools:
            weights[name] = weight
        elif pools:  # with no valid pools the pools error already says it all
            reader.problem(f"weights.{name}", key_node, f"no such pool (pools are: {', '.join(pools)})")
    return weights
