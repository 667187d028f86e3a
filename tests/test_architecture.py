"""The package's structure: no import cycle, suites reach the plugin only through fixtures and plain helpers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_llama4"
SUITES = PACKAGE.parent / "suites"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, modules: set[str]) -> set[str]:
    """Every module of the package that `path` imports, at any depth of its body (lazy imports count too)."""
    name = _module_name(path) if path.is_relative_to(PACKAGE) else ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {t for t in (target, *(f"{target}.{a.name}" for a in node.names)) if t in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found - {name}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:`: imports for type hints only never run, so they make no
    cycle."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imported(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_registered_engine_implements_the_protocol():
    from pytest_llama4.deploy.engines import ENGINES
    from pytest_llama4.deploy.engines.base import Engine

    members = {name for name in vars(Engine) if not name.startswith("_")} | set(Engine.__annotations__)
    for name, engine in ENGINES.items():
        assert engine.name == name
        missing = sorted(m for m in members if not hasattr(engine, m))
        assert missing == [], f"engine {name} lacks {missing}"


def _name_comparisons(pattern: str, allowed: tuple[str, ...]) -> list[str]:
    found = []
    for path in [*PACKAGE.rglob("*.py"), *SUITES.glob("*.py")]:
        if path.is_relative_to(PACKAGE) and path.relative_to(PACKAGE).as_posix().startswith(allowed):
            continue
        found += [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
                  if re.search(pattern, line)]
    return found


def test_only_the_engine_registry_compares_engine_names():
    assert _name_comparisons(r"\bengine\s*(==|!=|in\b)|\.engine\s*(==|!=)", ("deploy/engines/",)) == []


def test_only_the_launcher_registry_compares_launcher_names_or_types():
    """config/settings.py validates the option itself (an --endpoint sets launcher=endpoint); the engine registry
    checks which launchers an engine can be started by."""
    allowed = ("deploy/launchers/", "deploy/engines/__init__.py", "config/settings.py")
    assert _name_comparisons(r"\blauncher\s*(==|!=)|isinstance\([^)]*Launcher\)", allowed) == []
@pytest.mark.parametrize("suite", sorted(SUITES.glob("test_*.py")), ids=lambda p: p.name)
def test_suites_import_nothing_from_launchers_engines_or_session_state(suite):
    graph_modules = set(import_graph())
    reached = {m for m in _imported(suite, graph_modules)}
    forbidden = sorted(m for m in reached if m.startswith(("pytest_llama4.deploy.launchers",
                                                           "pytest_llama4.deploy.engines",
                                                           "pytest_llama4.plugin")))
    assert forbidden == [], f"{suite.name} must use fixtures instead of {forbidden}"


STAGES = ("config", "api", "deploy", "measure", "report", "plugin")  # the flow: each imports only earlier ones


def _stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None


def backward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if None not in (_stage(module), _stage(target)) and _stage(target) > _stage(module))


def test_imports_point_only_up_the_flow():
    assert backward_imports(import_graph()) == []


def test_a_backward_import_is_found():
    graph = {"pytest_llama4.config.settings": {"pytest_llama4.deploy.wiring"},
             "pytest_llama4.plugin.hooks": {"pytest_llama4.report.summary"}}
    assert backward_imports(graph) == ["pytest_llama4.config.settings -> pytest_llama4.deploy.wiring"]
