"""Check the links and anchors of the built documentation site, offline.

    python tools/check_site.py [docs/_build/html]

Every ``href`` and ``src`` of every page is followed inside the site: the file it names must
exist, and its ``#anchor`` must be an ``id`` (or an ``<a name>``) of that page. A page that
loads a script, a style sheet, a font or an image from outside the site (a CDN) is an error
too, since the site must read offline; links to outside pages are counted, not followed.
Exit status 1 on any problem, each printed as ``page: link (what is wrong)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
#: tags whose link the page loads (must be inside the site) rather than points to
LOADED = {("script", "src"), ("link", "href"), ("img", "src"), ("source", "src"),
          ("iframe", "src")}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("name"):
            self.ids.add(str(a["name"]))
        for attr in ("href", "src"):
            value = a.get(attr)
            if value is not None:
                if tag == "link" and "preconnect" in (a.get("rel") or "") + " ":
                    continue
                self.links.append((tag, attr, value))


def parse(path: Path) -> _Page:
    """Parse one page: its ids and its links."""
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def check(site: Path) -> tuple[list[str], dict[str, int]]:
    """Return the problems of the site and counts of what was checked."""
    # the pages: every .html but the theme's templates copied under _static
    pages = {p.resolve(): parse(p) for p in sorted(site.rglob("*.html"))
             if "_static" not in p.relative_to(site).parts}
    problems: list[str] = []
    counts = {"pages": len(pages), "links": 0, "anchors": 0, "outside": 0}
    for path, page in pages.items():
        rel = path.relative_to(site.resolve())
        for tag, attr, value in page.links:
            url = urlsplit(value)
            if url.scheme in ("mailto", "javascript", "data", "tel"):
                continue
            if url.scheme or value.startswith("//"):
                if (tag, attr) in LOADED:
                    problems.append(f"{rel}: {value} (loaded from outside the site)")
                counts["outside"] += 1
                continue
            counts["links"] += 1
            target = path if not url.path else (path.parent / unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{rel}: {value} (no such file)")
                continue
            if url.fragment and target.suffix == ".html":
                counts["anchors"] += 1
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(url.fragment) not in ids:
                    problems.append(f"{rel}: {value} (no anchor #{url.fragment} in "
                                    f"{os.path.relpath(target, site.resolve())})")
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    """Check the site and print the problems; exit status 1 if there is any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", nargs="?", default=str(ROOT / "docs" / "_build" / "html"))
    args = parser.parse_args(argv)
    site = Path(args.site)
    if not (site / "index.html").exists():
        print(f"no built site at {site} (build it first: python -m sphinx -b html docs "
              f"{site})", file=sys.stderr)
        return 2
    problems, counts = check(site)
    for p in problems:
        print(p)
    print(f"{counts['pages']} pages, {counts['links']} links inside the site "
          f"({counts['anchors']} with an anchor), {counts['outside']} to outside pages: "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
