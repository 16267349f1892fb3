"""No import cycle among cifarlab's modules: each module's imports of cifarlab, read from its
source with ``ast`` (those inside functions too), form a graph without a loop."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """Every module of ``package`` under ``src`` and the modules of ``package`` it imports.

    ``from a.b import c`` is an import of ``a.b.c`` where that is a module, else of ``a.b``; a
    package's own ``__init__`` is a module like any other, imported only where it is named.
    """
    paths = {module_name(p, src): p for p in (src / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    inner = f"{node.module}.{alias.name}"
                    imported.add(inner if inner in paths else node.module)
        graph[name] = {m for m in imported if m in paths and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One loop of imports (its modules in import order, the first repeated at the end), or
    None when the graph has none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for imported in sorted(graph[name]):
            loop = visit(imported, [*path, name])
            if loop:
                return loop
        done.add(name)
        return None

    for name in sorted(graph):
        loop = visit(name, [])
        if loop:
            return loop
    return None


def test_cifarlab_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "cifarlab")
    assert "cifarlab.run.build" in graph["cifarlab.run.jobs"]  # the graph holds the imports
    loop = find_cycle(graph)
    assert loop is None, "import cycle: " + " -> ".join(loop or [])


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (package / "c.py").write_text("import pkg\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
