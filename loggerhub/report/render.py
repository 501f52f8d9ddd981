"""The one renderer: a page that carries uPlot, ``app.js`` and its stylesheet inline, for the
report (the view model embedded: one self-contained file) and for ``loggerhub ui`` (the page
fetches the view model from the server).

User text never reaches the markup: the view model travels as JSON inside a
``<script type="application/json">`` element with ``<``, ``>`` and ``&`` escaped (so no string can
close the element), and ``app.js`` puts every string into the page as text (``textContent``, SVG
text nodes), never as HTML. A Content-Security-Policy allows only the page's own two scripts (by
hash) and, in a report, no network at all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _asset(name: str) -> str:
    """A file of ``static/`` (package data, in the wheel too), by its ``/``-separated path."""
    return resources.files("loggerhub.report").joinpath("static", *name.split("/")).read_text(encoding="utf-8")


def json_for_script(value: Any) -> str:
    """JSON that can sit inside a ``<script>`` element: nothing in it can end the element or
    start a comment, whatever the strings hold."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _script_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def page(config: dict[str, Any], *, title: str, live: bool) -> str:
    """The HTML page. ``config`` is read by app.js: ``{"mode": "report", "model": {...}}`` or
    ``{"mode": "ui", "refresh": ms}``."""
    scripts = (_asset("uplot/uPlot.iife.min.js"), _asset("app.js"))
    # A report may load nothing at all; the live UI talks to its own server only.
    connect, images = ("'self'", "'self' data:") if live else ("'none'", "data:")
    csp = (f"default-src 'none'; script-src {' '.join(_script_hash(s) for s in scripts)}; "
           f"style-src 'unsafe-inline'; img-src {images}; connect-src {connect}; base-uri 'none'; form-action 'none'")
    return "".join((
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<link rel=\"icon\" href=\"data:,\">\n",  # no favicon request, from a file or the server
        f"<title>{html.escape(title)}</title>\n",
        "<style>", _asset("uplot/uPlot.min.css"), "\n", _asset("app.css"), "</style>\n",
        "</head><body><div id=\"app\"></div>\n",
        "<script id=\"loggerhub-config\" type=\"application/json\">", json_for_script(config), "</script>\n",
        "<script>", scripts[0], "</script>\n<script>", scripts[1], "</script>\n",
        "</body></html>\n",
    ))
