"""MkDocs hook: pages that include a file of the repository, with its links pointing into the site.

A page whose markdown is one line ``--8<-- "path/from/the/repo/root.md"`` shows that file: the
site's home page is README.md, and each backend's page is its backends/<name>/README.md. Those
files link the way GitHub resolves links (``../../docs/journal.md``), and so do the pages in docs/
(``../backends/neptune/README.md``); every relative link to a file that is also a site page is
rewritten to that page, relative to the page that holds it. A link to anything else is left as it
is, for ``mkdocs build --strict`` to report.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r'^--8<--\s+"([^"]+)"\s*$')
# [text](target) and [text](target "title"); images too. Code spans and blocks are skipped below.
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(```|~~~)")

# Repository file -> site page, for the files the site shows under another name.
_included: dict[str, str] = {}


def on_files(files: Any, config: Any) -> Any:
    _included.clear()
    for file in files.documentation_pages():
        source = _include_target(Path(file.abs_src_path).read_text(encoding="utf-8"))
        if source is not None:
            _included[source] = file.src_uri
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    source = _include_target(markdown)
    if source is not None:
        origin = source
        markdown = (ROOT / source).read_text(encoding="utf-8")
    else:
        origin = f"{Path(config['docs_dir']).resolve().relative_to(ROOT).as_posix()}/{page.file.src_uri}"
    return _rewrite_links(markdown, origin, page.file.src_uri, config)


def _include_target(markdown: str) -> str | None:
    lines = [line for line in markdown.splitlines() if line.strip()]
    match = INCLUDE.match(lines[0]) if len(lines) == 1 else None
    return match.group(1) if match else None


def _rewrite_links(markdown: str, origin: str, page_uri: str, config: Any) -> str:
    docs = Path(config["docs_dir"]).resolve().relative_to(ROOT).as_posix()
    out, in_code = [], False
    for line in markdown.splitlines(keepends=True):
        if FENCE.match(line.lstrip()):
            in_code = not in_code
        if not in_code:
            line = LINK.sub(lambda m: m.group(1) + _target(m.group(2), origin, page_uri, docs) + m.group(3), line)
        out.append(line)
    return "".join(out)


def _target(target: str, origin: str, page_uri: str, docs: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
        return target  # a URL, an anchor on the same page, or site-absolute
    path, hash_, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(origin), path))
    if repo_path in _included:
        site_page = _included[repo_path]
    elif repo_path.startswith(docs + "/"):
        site_page = repo_path[len(docs) + 1:]
    else:
        return target
    relative = posixpath.relpath(site_page, posixpath.dirname(page_uri) or ".")
    return relative + hash_ + anchor
