"""The documentation reads offline and its links hold: MathJax served from the site, code blocks
that wrap, and the link and anchor check of the built site (``tools/check_site.py``, run on the
real site by ``.ci/run``) catching what it should."""

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _tool():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_math_is_served_from_the_site():
    conf = (DOCS / "conf.py").read_text()
    assert '"sphinx-mathjax-offline"' in conf and "mathjax_path" not in conf
    # the extension comes with the docs extra (.ci/run builds the site and checks it offline)
    ext = pytest.importorskip("sphinx-mathjax-offline")
    assert (Path(ext.__file__).parent / "static" / "mathjax" / "tex-chtml.js").is_file()
    assert "sphinx-mathjax-offline" in (ROOT / "pyproject.toml").read_text()


def test_code_blocks_wrap():
    conf = (DOCS / "conf.py").read_text()
    css = re.search(r'html_css_files = \["([^"]+)"\]', conf).group(1)
    rule = (DOCS / "_static" / css).read_text()
    assert re.search(r"div\.highlight pre[^{]*\{[^}]*white-space: pre-wrap", rule, re.S)


def _site(tmp_path, pages):
    for name, body in pages.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>")
    return tmp_path


def test_the_site_check_passes_a_sound_site(tmp_path):
    tool = _tool()
    site = _site(tmp_path, {
        "index.html": '<a href="api/f.html#nqm_mc.f">f</a><a href="#top" id="top">top</a>'
                      '<a href="https://example.org/page">outside</a>'
                      '<script src="_static/mathjax/tex-chtml.js"></script>',
        "api/f.html": '<dt id="nqm_mc.f">f</dt><a href="../index.html">home</a>'
                      '<a href="../_modules/m.html#f">source</a>',
        "_modules/m.html": '<div id="f"></div><a href="../api/f.html#nqm_mc.f">[docs]</a>',
        "_static/mathjax/tex-chtml.js": "",
    })
    problems, counts = tool.check(site)
    assert problems == [] and counts["anchors"] == 4 and counts["outside"] == 1


def test_the_site_check_finds_broken_anchors_files_and_cdn_scripts(tmp_path):
    """Power check: each kind of defect is reported, once, naming the page and the link."""
    tool = _tool()
    site = _site(tmp_path, {
        "index.html": '<a href="api/f.html#nqm_mc.g">g</a><a href="api/missing.html">x</a>'
                      '<script src="https://cdn.example.org/mathjax/tex-chtml.js"></script>',
        "api/f.html": '<dt id="nqm_mc.f">f</dt>',
        "_modules/m.html": '<a href="../api/f.html#nqm_mc.m.f">[docs]</a>',
    })
    problems, counts = tool.check(site)
    assert len(problems) == 4, problems
    assert any(p.startswith("index.html: api/f.html#nqm_mc.g (no anchor") for p in problems)
    assert any("api/missing.html (no such file)" in p for p in problems)
    assert any("cdn.example.org" in p and "outside the site" in p for p in problems)
    assert any(p.startswith("_modules/m.html") and "#nqm_mc.m.f" in p for p in problems)
    assert tool.main([str(site)]) == 1
