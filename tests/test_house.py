"""The package's shape: imports run one way, and the process-wide state has one home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "zenmetry"
START_UP = {"zenmetry._configurator", "zenmetry._distro"}
"""The modules that build the parts and hand each what it needs."""


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """The zenmetry modules ``module`` imports, anywhere in it (inside functions and
    ``TYPE_CHECKING`` blocks too: a cycle is a cycle to a reader)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _without_parents(module: str, imported: set[str]) -> set[str]:
    """What ``module`` imports, less the packages it sits in (importing ``a.b.c`` runs ``a.b``
    first, which is no import of theirs by this module)."""
    return {name for name in imported if not module.startswith(name + ".")}


def test_the_package_has_no_import_cycle() -> None:
    """Depth-first over the import graph: no module reaches itself again."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(_without_parents(module, GRAPH[module])):
            if state.get(imported) == 1:
                cycles.append([*path[path.index(imported) :], imported] if imported in path else [module, imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_start_up_and_testing_read_the_processor_from_the_global_state() -> None:
    """Every other module is handed the processor; none looks it up in ``_state``."""
    readers = sorted(
        module
        for module, path in MODULES.items()
        if "_state.state.processor" in path.read_text() or "_state.processor" in path.read_text()
    )
    assert [m for m in readers if m not in START_UP and not m.startswith("zenmetry.testing")] == []
    assert "zenmetry._configurator" in readers


@pytest.mark.parametrize(
    ("room", "modules"),
    [
        ("config", {"_budgets", "_limits", "_settings"}),
        ("units", {"_processor", "_figures", "_shapes", "_callsite", "_memory", "_memtrace", "_no_timeout", "_spans"}),
        ("export", {"_gate", "_held_spans", "_scrub", "_sampler", "_outbox"}),
        ("outputs", {"_span_writer", "_metrics", "_console"}),
    ],
)
def test_each_room_holds_its_concern(room: str, modules: set[str]) -> None:
    """The rooms of the core, each a folder of private modules named by their job."""
    assert {path.stem for path in (PACKAGE / room).glob("_*.py")} - {"__init__"} == modules


def test_nothing_in_the_global_state_exits_the_process() -> None:
    source = (PACKAGE / "_state.py").read_text()
    assert "_exit" not in source
    assert "sys.exit" not in source
