"""The documentation's code parses: gallery scripts and the Python blocks of the pages.

The site itself is built in CI (``.ci/run``); this only catches a syntax slip early. Warnings
are errors here (pytest configuration), so an invalid escape in a gallery docstring fails too.
"""

import ast
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
GALLERY = sorted((DOCS / "gallery").glob("*.py"))
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(page):
    return FENCE.findall(page.read_text(encoding="utf-8"))


def test_the_gallery_and_the_getting_started_page_exist():
    assert len(GALLERY) >= 5
    assert len(python_blocks(DOCS / "getting_started.md")) >= 2


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.name)
def test_gallery_example_parses(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))  # SyntaxError (or SyntaxWarning, an error here)
    compile(source, str(path), "exec")
    assert path.name.startswith("plot_"), "sphinx-gallery runs only plot_*.py"
    doc = ast.get_docstring(tree)
    assert doc and "\n===" in doc, "a gallery example starts with a docstring with a title"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_of_the_pages_parse(page):
    for i, block in enumerate(python_blocks(page)):
        compile(block, f"{page.name}, python block {i + 1}", "exec")


def test_the_dask_page_runs_the_readme_example():
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## From a laptop to a cluster.*?```python\n(.*?)```", readme, re.S)
    assert code.group(1) in python_blocks(DOCS / "guide" / "dask.md")
