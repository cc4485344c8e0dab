# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The package's layering, read from its source with ``ast`` (imports inside functions count): no import points up
and no module imports itself through a cycle.

Top to bottom: front doors (cli, handlers, transforms, inferers, report) -> pipelines (files, nnunet) -> outputs ->
the explainer contract (explainers) -> explainers' engines (cam, perturbation; cam imports no perturbation) ->
metrics, visualize, data -> utils."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_segcam"

LEVELS = {
    "cli": 5, "handlers": 5, "transforms": 5, "inferers": 5, "report": 5,
    "files": 4, "nnunet": 4,
    "outputs": 3,
    "explainers": 2.5,
    "cam": 2, "perturbation": 2,
    "metrics": 1, "visualize": 1, "data": 1,
    "utils": 0,
}  # fmt: skip
FORBIDDEN = {("cam", "perturbation")}  # same level, one direction only


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import name`` resolves to ``pkg.name`` when a module)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
                targets |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LEVELS) else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_subpackage_has_a_level():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= set(LEVELS), f"give {sorted(subpackages - set(LEVELS))} a level in LEVELS"


def test_no_import_points_up():
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            a, b = part(module), part(target)
            if not a or not b or a == b:
                continue
            if LEVELS[b] > LEVELS[a] or (a, b) in FORBIDDEN:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    assert not cycles(import_graph()), cycles(import_graph())


@pytest.mark.parametrize(
    "graph, expected",
    [({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]), ({"a": {"b"}, "b": set()}, [])],
)
def test_cycle_finder(graph, expected):
    """The checker itself finds a cycle (so the test above can fail)."""
    assert cycles(graph) == expected


def test_layer_check_sees_function_level_imports(tmp_path, monkeypatch):
    """An import inside a function counts: a cam module importing a front door lazily is found (so the layering test
    can fail)."""
    fake = tmp_path / "monai_segcam"
    (fake / "cam").mkdir(parents=True)
    (fake / "inferers").mkdir()
    for folder in (fake, fake / "cam", fake / "inferers"):
        (folder / "__init__.py").write_text("")
    (fake / "inferers" / "door.py").write_text("X = 1\n")
    (fake / "cam" / "engine.py").write_text("def f():\n    from ..inferers.door import X\n    return X\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert "monai_segcam.inferers.door" in import_graph()["monai_segcam.cam.engine"]
    with pytest.raises(AssertionError, match=r"cam\.engine -> monai_segcam\.inferers\.door"):
        test_no_import_points_up()
