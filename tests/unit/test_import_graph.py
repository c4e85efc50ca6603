"""The library's modules import each other without circles, and test doubles stay in `testing`.

The graph is read from the source with `ast`, nothing is imported. A node is a module of
`src/modelferry` (a package is its `__init__.py`). An edge A -> B is an import of B that
runs when A is imported:

- `import a.b` is an edge to `a.b`; `from a import b` is an edge to `a.b` when that is a
  module, else to `a` (the package whose `__init__` must have run to give `b`); relative
  imports are resolved against A's package first.
- Only statements run at import time count: the module's body, and the bodies of `if`,
  `try` and `with` blocks and class bodies in it. Imports inside functions run when the
  function is called, and those under `if TYPE_CHECKING:` never run; neither counts.
- Importing `a.b` also initialises the package `a` first, but that implicit step is no
  edge: Python finishes (or has started) `a/__init__.py` before it runs `a/b.py`, so a
  package whose `__init__` re-exports its children is not a circle with them. A child
  that imports a name from its own package (`from a import name`) does get an edge to
  `a`, and a circle through it is a real one: the name may not be bound yet.
- Re-exports through `lazy_exports` (PEP 562 `__getattr__`) import on first use and
  are no edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "modelferry"


def _module_names() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of `body` that run when the module is imported, blocks opened."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_statements(block)
            for handler in node.handlers:
                yield from _import_time_statements(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _import_time_statements(node.body)


def _imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                targets.add(child if child in modules else source)
    return {target for target in targets if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modelferry modules it imports at import time."""
    modules = _module_names()
    return {name: _imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as [a, b, ..., a], or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        # Depth-first with an explicit stack: (module, the imports still to visit).
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            module, pending = stack[-1]
            target = next(pending, None)
            if target is None:
                stack.pop()
                path.pop()
                on_path.discard(module)
                done.add(module)
            elif target in on_path:
                return [*path[path.index(target) :], target]
            elif target not in done:
                stack.append((target, iter(sorted(graph[target]))))
                path.append(target)
                on_path.add(target)
    return None


def test_the_reader_counts_what_runs_at_import_time_only(tmp_path: Path) -> None:
    source = tmp_path / "a" / "b.py"
    source.parent.mkdir()
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import a.plain\n"
        "from a import sub, name\n"
        "from .sibling import thing\n"
        "with guard():\n"
        "    from a.guarded import x\n"
        "try:\n"
        "    import a.tried\n"
        "except ImportError:\n"
        "    pass\n"
        "if TYPE_CHECKING:\n"
        "    import a.typing_only\n"
        "def later():\n"
        "    import a.in_function\n",
        encoding="utf-8",
    )
    known = ["a", "a.b", "a.plain", "a.sub", "a.sibling", "a.guarded", "a.tried"]
    known += ["a.typing_only", "a.in_function"]
    modules = dict.fromkeys(known, source)
    assert _imports_of("a.b", source, modules) == {
        "a",  # `name` is no module: the package's __init__ gives it
        "a.plain",
        "a.sub",
        "a.sibling",
        "a.guarded",
        "a.tried",
    }
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lazy_re_exports_are_no_edge() -> None:
    graph = import_graph()
    assert "modelferry.endpoints.azureml.backend" in graph["modelferry.endpoints.azureml"]
    assert "modelferry.testing.azureml.ml_client" not in graph["modelferry.testing.azureml"]


def test_modules_import_each_other_without_a_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_doubles_live_only_in_modelferry_testing() -> None:
    offenders = []
    for name, path in _module_names().items():
        if name == f"{ROOT}.testing" or name.startswith(f"{ROOT}.testing."):
            continue
        if any(part.startswith("fake") for part in name.split(".")):
            offenders.append(name)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders.extend(
            f"{name}.{node.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.name.startswith("Fake")
        )
    assert offenders == []
