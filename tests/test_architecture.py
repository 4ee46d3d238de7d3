"""The package's dependency rules, checked on its import graph (read from the source, so a
violation fails here before it shows up as an import cycle at run time)."""

from __future__ import annotations

import ast
import os

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "stimulative")
# imported inside functions on purpose: optional extras ...
OPTIONAL = {"onnx", "onnxscript", "onnxruntime", "timm", "lightning", "submitit", "tensorboard"}
OPTIONAL |= {"torch.utils.tensorboard", "fcntl"}  # fcntl: POSIX only
# ... and two heavy imports needed by one path only: at module level torchvision added about
# 2.4 s of CPU to every command (`stimulative --help` included), scikit-learn about 0.5 s
OPTIONAL |= {"torchvision", "sklearn"}
STDLIB_OK_IN_CORE = {
    "__future__",
    "collections",
    "contextlib",
    "dataclasses",
    "functools",
    "itertools",
    "math",
    "re",
    "typing",
}


def _modules() -> dict[str, str]:
    """``{"stimulative.core.loss": path, ...}`` for every module of the package."""
    out = {}
    for folder, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(SRC))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return out


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute names a ``from ... import ...`` refers to (a submodule when it is one)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [f"{target}.{a.name}" for a in node.names]
    return [n for n in names if n in MODULES] or [target]


def _imports(module: str) -> list[tuple[str, bool]]:
    """``(imported module, at module level?)`` for every import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(open(path, encoding="utf-8").read())
    top = {id(n) for n in tree.body} | {id(n) for n in ast.walk(tree) if isinstance(n, ast.If) and n in tree.body}
    found = []
    for node in ast.walk(tree):
        if _inside_type_checking(tree, node):
            continue  # annotations only: not an import at run time
        at_top = id(node) in top
        if isinstance(node, ast.Import):
            found += [(a.name, at_top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(t, at_top) for t in _resolve(module, path.endswith("__init__.py"), node)]
    return found


def _inside_type_checking(tree: ast.Module, node: ast.AST) -> bool:
    for block in tree.body:
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING":
            if any(n is node for n in ast.walk(block)):
                return True
    return False


def _internal(name: str) -> str | None:
    """The package module ``name`` refers to, or None for another package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {m: {t for n, _ in _imports(m) if (t := _internal(n)) and t != m} for m in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _importers_of(layer: str) -> set[str]:
    return {m for m, targets in GRAPH.items() if any(_layer(t) == layer for t in targets)}


def test_no_import_cycles():
    seen, stack, cycles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if t != "stimulative":  # the package root re-exports the public API only
                visit(t)
        stack.pop()

    for m in sorted(MODULES):
        visit(m)
    assert not cycles, cycles[:3]


def test_core_imports_only_torch():
    for m in (m for m in MODULES if _layer(m) == "core"):
        for name, _ in _imports(m):
            inside = _internal(name)
            if inside:
                assert _layer(inside) == "core", f"{m} imports {name}"
            else:
                root = name.split(".")[0]
                assert root == "torch" or name in STDLIB_OK_IN_CORE or root in STDLIB_OK_IN_CORE, f"{m} imports {name}"


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("models", {"training", "evaluation", "studies", "reporting", "cli", "tools"}),
        ("analysis", {"training", "studies", "tools", "cli"}),
        ("reporting", {"training", "evaluation", "tools", "studies", "models", "cli"}),  # never runs a model
        ("evaluation", {"training", "studies", "tools", "reporting", "cli"}),
        ("runtime", {"training", "evaluation", "analysis", "studies", "tools", "reporting", "models", "cli"}),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: set[str]):
    for m in (m for m in MODULES if _layer(m) == layer):
        bad = sorted(t for t in GRAPH[m] if _layer(t) in forbidden)
        assert not bad, f"{m} imports {bad}"


def test_nothing_imports_the_cli():
    assert {m for m, targets in GRAPH.items() if "stimulative.cli" in targets} <= {"stimulative.__main__"}


def test_function_local_imports_are_optional_dependencies():
    local = sorted(
        f"{m}: {n}"
        for m in MODULES
        for n, at_top in _imports(m)
        if not at_top and not any(n == o or n.startswith(o + ".") for o in OPTIONAL)
    )
    assert not local, local


def test_the_graph_is_read():
    """The checks above see real edges (an empty graph would pass them all)."""
    assert "stimulative.core.sampling" in GRAPH["stimulative.core.spaces"]
    assert "stimulative.training.steps" in GRAPH["stimulative.training.loop"]
    assert "stimulative.evaluation.scores" in GRAPH["stimulative.evaluation.sharded"]
