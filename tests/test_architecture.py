"""docs/architecture.md shows which package imports which; this test derives that map
from the code and fails when the two differ. After a change that moves an import
between packages, rewrite the map with `python -m tests.test_architecture`."""

import re
import sys

from tests.test_layers import LAYERS, REPO, _graph

DOC = REPO / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- imports:begin -->\n```text\n)(.*?)(```\n<!-- imports:end -->)", re.S)


def _unit(module: str) -> str:
    """A package of the map: `models`, `configs` and `flows` whole, `tasks` by its
    sub-package or top-level module (tasks.registry, tasks.tracking)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 1 else parts[0]


def import_map() -> str:
    """One line per package, lowest layer first, then by name: the packages it imports."""
    edges: dict[str, set[str]] = {}
    for module, deps in _graph().items():
        unit = _unit(module)
        if unit != "tasks":  # tasks/__init__.py itself is empty
            edges.setdefault(unit, set()).update(
                _unit(d) for d in deps if _unit(d) not in (unit, "tasks")
            )
    order = sorted(edges, key=lambda u: (LAYERS.index(u.split(".")[0]), u))
    width = max(map(len, order))
    return "".join(
        f"{u:<{width}}  <- {', '.join(sorted(edges[u])) or '(nothing of ours)'}\n" for u in order
    )


def test_the_architecture_page_shows_the_imports_the_code_has():
    found = BLOCK.search(DOC.read_text())
    assert found, f"{DOC} has no <!-- imports:begin --> ... <!-- imports:end --> block"
    assert found.group(2) == import_map(), (
        "docs/architecture.md's import map is out of date: run "
        "`python -m tests.test_architecture` and review the change"
    )


if __name__ == "__main__":
    text = DOC.read_text()
    if not BLOCK.search(text):
        sys.exit(f"{DOC} has no <!-- imports:begin --> ... <!-- imports:end --> block")
    DOC.write_text(BLOCK.sub(lambda m: m.group(1) + import_map() + m.group(3), text))
    print(f"rewrote the import map in {DOC}")
