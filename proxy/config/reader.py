"""Walking yaml.compose()'s node tree: values with their key path and line, and
every problem recorded instead of raised, so all of them are reported at once."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True)
class Problem:
    key: str  # dotted path with [i] for list items; "" for the whole file
    line: int | None  # 1-based
    message: str

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one configuration; str() prints one line per problem."""

    def __init__(self, problems: list[Problem], source: str = "<string>") -> None:
        super().__init__(problems, source)
        self.problems = list(problems)
        self.source = source

    def __str__(self) -> str:
        return "\n".join(problem.format(self.source) for problem in self.problems)


BAD = object()  # a value that failed validation; its problem is already recorded
_NULL_TAG = "tag:yaml.org,2002:null"
Convert = Callable[["Reader", Node, str], Any]


def line_of(node: Node) -> int:
    return node.start_mark.line + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def shown(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "null" if is_null(node) else repr(node.value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


class Reader:
    """Converts nodes to values and records every problem with its key path and line."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, key: str, node: Node, message: str) -> None:
        self.problems.append(Problem(key, line_of(node), message))

    def field(self, key: str, node: Node, convert: Convert) -> Any:
        try:
            return convert(self, node, key)
        except ValueError as error:
            self.problem(key, node, str(error))
            return BAD

    def value(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise ValueError(f"expected a single value, got {shown(node)}")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as error:
            raise ValueError(f"unreadable value: {getattr(error, 'problem', error)}") from None

    def sequence(self, node: Node) -> list[Node]:
        if is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            raise ValueError(f"expected a list, got {shown(node)}")
        return list(node.value)

    def mapping(self, node: Node, key: str) -> Iterator[tuple[str, Node, Node]]:
        """(name, key node, value node) per entry; duplicates and odd keys are reported."""
        if is_null(node):  # `health:` with nothing under it means all defaults
            return
        if not isinstance(node, MappingNode):
            raise ValueError(f"expected a mapping, got {shown(node)}")
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(key, key_node, "keys must be plain names")
            elif key_node.value in first_line:
                message = f"duplicate key (first set on line {first_line[key_node.value]})"
                self.problem(_join(key, key_node.value), key_node, message)
            else:
                first_line[key_node.value] = line_of(key_node)
                yield key_node.value, key_node, value_node


def section(reader: Reader, node: Node, key: str, fields: dict[str, Convert],
            required: tuple[str, ...] = ()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    seen = set()
    for name, key_node, value_node in reader.mapping(node, key):
        seen.add(name)
        if name not in fields:
            reader.problem(_join(key, name), key_node, _unknown_key(name, fields))
            continue
        value = reader.field(_join(key, name), value_node, fields[name])
        if value is not BAD:
            values[name] = value
    for name in required:
        if name not in seen:
            reader.problem(_join(key, name), node, "required")
    return values


def _unknown_key(name: str, fields: dict[str, Convert]) -> str:
    close = difflib.get_close_matches(name, fields, n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"
