"""The switchyard configuration: one frozen object built from a YAML file, validated once.

Loading has no side effects: it reads one file and never logs or exits. Every problem
found is collected with its key path and line, then raised together as one ConfigError,
so `switchyard check` shows all of them at once and a bad `reload` changes nothing.
We walk yaml.compose()'s node tree instead of yaml.safe_load()'s dicts because only
the nodes know their line numbers and only they reveal duplicate keys.

values (durations, sizes, rates, addresses) <- model (the dataclasses) <- reader (the
node walk, Problem, ConfigError) <- schema (keys and checks) <- loader (load, from_text).
"""

from .loader import from_text, load
from .model import (
    DEFAULT_LISTEN,
    DEFAULT_STATE_FILE,
    AdminConfig,
    ClusterConfig,
    Config,
    HealthConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    PoolConfig,
    RolloutConfig,
    StickyConfig,
    TesterConfig,
    TimeoutsConfig,
)
from .reader import ConfigError, Problem
from .values import Address, parse_address, parse_duration, parse_rate, parse_size

__all__ = [
    "DEFAULT_LISTEN", "DEFAULT_STATE_FILE", "Address", "AdminConfig", "ClusterConfig", "Config",
    "ConfigError",
    "HealthConfig", "LimitsConfig", "LogConfig", "MetricsConfig", "PoolConfig", "Problem",
    "RolloutConfig", "StickyConfig", "TesterConfig", "TimeoutsConfig", "from_text", "load",
    "parse_address", "parse_duration", "parse_rate", "parse_size",
]
