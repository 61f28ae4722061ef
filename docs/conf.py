"""Sphinx configuration of the nqm_mc documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the repository
root (``pip install -e ".[docs]"`` first). The gallery examples in ``docs/gallery`` run during
the build; their pages and figures go to ``docs/auto_gallery`` and the API stubs to
``docs/api/generated`` (both generated, not tracked).
"""

import os
import posixpath
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # the package of this checkout, installed or not

os.environ.setdefault("MPLBACKEND", "Agg")

import nqm_mc  # noqa: E402

project = "nqm_mc"
author = "nqm_mc developers"
copyright = "nqm_mc developers"
version = release = nqm_mc.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the built site (_static/mathjax), no CDN
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "gallery/*.py", "gallery/*.rst",
                    "sg_execution_times.rst"]
templates_path = ["_templates"]

# -- MyST (the guide pages and docs/theory.md) -------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# -- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- Gallery -----------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_gallery",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_memory": False,
    "min_reported_time": 1,
    # no execution-times pages: they load jQuery and DataTables from a CDN (the site must read
    # offline) and say nothing a reader needs
    "write_computation_times": False,
}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"nqm_mc {release}"
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = ["_static"]
html_css_files = ["nqm_mc.css"]  # code blocks wrap instead of scrolling sideways


# -- Source pages' links back to the API ---------------------------------------------------------
# viewcode writes every "[docs]" link of a source page with the first module name that
# documented the file (e.g. nqm_mc.exact for exact/engine.py), though its objects are documented
# under several (nqm_mc.stability, nqm_mc.exact.ExactCurve): the anchors then miss. Each link is
# pointed at the id the API page really has for the object.
_BACKLINK = re.compile(r'(<a class="viewcode-back" href=")([^"#]*)#([^"]+)"')


def _fix_viewcode_backlinks(app, pagename, templatename, context, doctree):
    if not pagename.startswith("_modules/") or "body" not in context:
        return
    by_doc: dict[str, dict[str, str]] = {}
    for fullname, entry in app.env.get_domain("py").objects.items():
        by_doc.setdefault(entry.docname, {})[fullname] = entry.node_id

    def fix(m):
        href, anchor = m.group(2), m.group(3)
        docname = posixpath.normpath(posixpath.join(posixpath.dirname(pagename), href))
        ids = by_doc.get(docname.removesuffix(".html"), {})
        if anchor not in ids.values():
            parts = anchor.split(".")
            for k in range(len(parts)):  # the longest tail of the anchor naming one object
                tail = "." + ".".join(parts[k:])
                # an object can be registered under several names (aliases) with one id
                hits = {node_id for name, node_id in ids.items() if name.endswith(tail)}
                if len(hits) == 1:
                    anchor = hits.pop()
                    break
        return f'{m.group(1)}{href}#{anchor}"'

    context["body"] = _BACKLINK.sub(fix, context["body"])


def setup(app):
    app.connect("html-page-context", _fix_viewcode_backlinks)
