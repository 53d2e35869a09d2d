"""Imports run one way, models <- configs <- tasks <- flows, with no cycles between
modules, counted the way Python runs imports (imports inside functions count too, and
importing a.b.c runs the package a.b's __init__): the house rule, checked on every run."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("models", "configs", "tasks", "flows")


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in the file."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != here:
                found.add(t)
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: those packages are imported
    # too, except this module's own packages (already running when it imports).
    own = {".".join(here.split(".")[:i]) for i in range(1, here.count(".") + 1)}
    parents = {".".join(t.split(".")[:i]) for t in found for i in range(1, t.count(".") + 1)}
    return found | {p for p in parents if p in known and p not in own and p != here}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for layer in LAYERS for p in (REPO / layer).rglob("*.py")}
    return {m: _imports(p, set(files)) for m, p in files.items()}


def test_imports_never_run_against_the_layers():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        for d in deps
        if rank[d.split(".")[0]] > rank[m.split(".")[0]]
    ]
    assert not wrong


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path[path.index(d) :], d] if d in path else [m, d]
            if d not in state and (cycle := visit(d, [*path, d])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m, [m])
            assert cycle is None, " -> ".join(cycle)
