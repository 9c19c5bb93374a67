"""The package layout is part of the design: these keep it from eroding.

The layers, bottom up: `config`/`commands` (shared), `dataplane` (the hot path),
`control` (decides what the data plane does), `server`/`systemd` (the process
that wires them), `cli` (the operator's side).  A module imports only from its
own layer or below, and no two modules import each other, even for type hints.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "proxy"
LAYERS = {"config": 0, "commands": 0, "dataplane": 1, "control": 2, "cluster": 2, "server": 3,
          "serving": 3, "systemd": 3, "workers": 3, "cli": 4}
MAX_LINES = 300


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: pathlib.Path, known) -> set[str]:
    """Every proxy module `name` imports, wherever the import statement is."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:  # `from . import config` names a module
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known and m != name}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            assert state.get(dep) != "open", " -> ".join([*path, node, dep])
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_imports_go_down_the_layers():
    upward = [f"{m} imports {d}" for m, deps in _graph().items() for d in deps
              if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)]
    assert not upward, upward


def test_every_module_is_in_a_layer():
    assert all(_layer(m) is not None for m in _modules() if m != "proxy"), \
        [m for m in _modules() if m != "proxy" and _layer(m) is None]


def test_modules_stay_small():
    big = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, big
