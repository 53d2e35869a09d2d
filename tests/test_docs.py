"""The README and the documentation site (docs/, mkdocs.yml) stay true to the code: the
README stays a short front door with the two commands CI runs, every page is in the
site's navigation, the configuration reference names exactly the keys the config
accepts, and every file, module and test the pages cite, and every name their Python
examples import, exists. (`make docs` builds the site with --strict, which catches broken
links between pages; this catches the rest.)"""

import ast
import importlib
import importlib.util
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from configs.schema import Config

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))
TEXTS = [README, *PAGES]
SPAN = re.compile(r"`([^`\n]+)`")
# a path into the repository, as the pages cite them: `tasks/registry/`, `bench/gate.py`
REPO_PATH = re.compile(
    r"^(?:models|tasks|flows|configs|tests|bench|dashboards|docs)/[\w./-]*$"
    r"|^(?:prefect\.yaml|docker-compose\.yml|mkdocs\.yml|Makefile|pyproject\.toml)$"
)
TEST_REF = re.compile(r"(tests/[\w/]+\.py)?::(\w+)")
MODULE = re.compile(r"^(?:models|tasks|flows|configs)(?:\.\w+)+$")  # `tasks.registry.promotion`
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _exists(cited: str) -> bool:
    """A file or folder of the checkout; `bench/gate` names the module bench/gate.py, and
    what the benchmarks write (`bench/out/`) is not in a checkout."""
    path = REPO / cited
    return cited.startswith("bench/out/") or path.exists() or path.with_suffix(".py").exists()


def _nav_pages(nav: list) -> list[str]:
    pages: list[str] = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        types = [field.annotation, *typing.get_args(field.annotation)]
        section = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        keys |= _config_keys(section, f"{prefix}{name}.") if section else {prefix + name}
    return keys


def _reference_keys() -> set[str]:
    """The keys the reference's tables name in their first column. `.b` after `a.x` is
    `a.b`; in the labeling-function table, keys are relative to `weak_labeling.functions`."""
    named: set[str] = set()
    prefix = ""
    for line in (DOCS / "configuration.md").read_text().splitlines():
        if line.startswith("## A labeling function"):
            prefix = "weak_labeling.functions."
        if not line.startswith("| `"):
            continue
        last = None
        for key in SPAN.findall(line.split("|")[1]):
            key = last.rsplit(".", 1)[0] + key if key.startswith(".") and last else prefix + key
            named.add(key)
            last = key
    return named


def test_the_readme_is_a_short_front_door_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "README.md grew past 300 lines: move detail to docs/"
    # .ci/run and the first-time user run exactly these
    assert "make run    # " in text and "make test   # " in text


def test_every_page_is_in_the_site_navigation_and_every_nav_entry_exists():
    nav = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])
    pages = {str(p.relative_to(DOCS)) for p in PAGES}
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(nav) - pages) == [], "nav entries without a page"


def test_the_configuration_reference_names_exactly_the_keys_the_config_accepts():
    schema, named = _config_keys(Config), _reference_keys()
    wildcards = {k[:-1] for k in named if k.endswith(".*")}
    missing = {k for k in schema - named if not any(k.startswith(w) for w in wildcards)}
    assert sorted(missing) == [], "keys docs/configuration.md does not describe"
    sections = {k.rsplit(".", 1)[0] for k in schema}
    unknown = named - schema - sections - {w + "*" for w in wildcards}
    assert sorted(unknown) == [], "keys docs/configuration.md names that the config rejects"


@pytest.mark.parametrize("page", TEXTS, ids=_rel)
def test_every_file_a_page_cites_exists(page):
    cited = {s for s in SPAN.findall(page.read_text()) if REPO_PATH.match(s)}
    missing = sorted(s for s in cited if not _exists(s.split("::")[0]))
    assert missing == [], f"{_rel(page)} cites files that do not exist"


@pytest.mark.parametrize("page", TEXTS, ids=_rel)
def test_every_test_a_page_cites_exists(page):
    missing = []
    for line in page.read_text().splitlines():
        file = None
        for path, name in TEST_REF.findall(" ".join(SPAN.findall(line))):
            file = path or file  # `::name` after a path on the same line: a test of that file
            source = REPO / file if file else None
            if source and not (source.exists() and re.search(rf"def {name}\(", source.read_text())):
                missing.append(f"{file}::{name}")
    assert missing == [], f"{_rel(page)} cites tests that do not exist"


@pytest.mark.parametrize("page", TEXTS, ids=_rel)
def test_every_module_a_page_names_exists(page):
    named = {s for s in SPAN.findall(page.read_text()) if MODULE.match(s)}
    missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
    assert missing == [], f"{_rel(page)} names modules that do not exist"


@pytest.mark.parametrize("page", TEXTS, ids=_rel)
def test_what_the_python_examples_import_from_semilabel_exists(page):
    missing = []
    for block in PYTHON_BLOCK.findall(page.read_text()):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and MODULE.match(node.module or ""):
                module = importlib.import_module(node.module)
                missing += [
                    f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                ]
    assert missing == [], f"{_rel(page)} has examples importing names that do not exist"


def test_the_readme_links_to_files_that_exist():
    # mkdocs --strict checks the links between pages; the README is not one of them
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert local, "the README links nowhere: its 'where to read more' is gone"
    assert sorted(link for link in local if not (REPO / link).exists()) == []
