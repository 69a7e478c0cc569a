"""The import graph: no cycles anywhere (package, benchmarks, scripts), and inference never imports
training code. Imports inside functions count too: a lazy import is still a dependency."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: modules that run at inference time: none of them may import training code
INFERENCE = ("faceage.core", "faceage.models", "faceage.checks.policy", "faceage.face", "faceage.runtime",
             "faceage.estimator", "faceage.engine", "faceage.serve", "faceage.batch", "faceage.video",
             "faceage.integrations", "faceage.cli.predict", "faceage.cli.serve", "faceage.cli.video")
#: research: preparing data, training, evaluating, fitting age checks, exporting
TRAINING = ("faceage.train", "faceage.data", "faceage.evaluate", "faceage.metrics", "faceage.experiments",
            "faceage.export", "faceage.checks.fitting", "faceage.models.write")


def _modules() -> dict[str, Path]:
    mods = {}
    for f in (ROOT / "src").rglob("*.py"):
        parts = f.relative_to(ROOT / "src").with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    for folder in ("benchmarks", "scripts"):  # packages, run as python -m FOLDER.NAME
        for f in (ROOT / folder).glob("*.py"):
            mods[folder if f.stem == "__init__" else f"{folder}.{f.stem}"] = f
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith(("faceage", "benchmarks", "scripts")):
                    deps.add(resolve(name))
        graph[mod] = {d for d in deps if d and d != mod and not mod.startswith(d + ".")}  # a parent package: implied
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                found.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_whole():
    graph = _graph()
    assert "faceage.serve.video" in graph["faceage.serve.app"]  # a lazy import inside a function counts
    assert "benchmarks._serve" in graph["benchmarks.serve_attacks"]  # a benchmark's import of another counts
    assert "scripts.hostile_videos" in graph["benchmarks.serve_attacks"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_inference_never_imports_training_code():
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith(TRAINING)) for m, deps in graph.items()
           if m.startswith(INFERENCE)}
    assert {m: d for m, d in bad.items() if d} == {}


@pytest.mark.parametrize("lower, upper", [
    ("faceage.batch", "faceage.cli"),  # batch/ once held the CLI's batch branch
    ("faceage.data", "faceage.train"),  # data/sets.py once imported the training config for a type hint
])
def test_lower_layers_never_import_upper_ones(lower, upper):
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith(upper)) for m, deps in graph.items() if m.startswith(lower)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_source_module_is_over_400_lines():
    """A module that grows past 400 lines does several jobs: split it by job (imageio, agecheck, face/detect,
    serve/app, video/io and train/loop once were)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "src").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("old, new", [("faceage.policy", "faceage.checks.policy"),
                                      ("faceage.agecheck", "faceage.checks.fitting")])
def test_moved_public_modules_keep_their_old_names_with_a_warning(old, new):
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        module = importlib.import_module(old)
    name = "AgeCheckPolicy" if new.endswith("policy") else "fit_policy"
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
