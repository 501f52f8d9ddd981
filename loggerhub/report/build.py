"""``loggerhub report``: one self-contained HTML file of some runs."""

from __future__ import annotations

import time
from pathlib import Path

from loggerhub.report.model import RunData, build_model, embedded_media
from loggerhub.report.render import page


def report_html(runs: list[RunData], *, title: str = "loggerhub report") -> str:
    """The report page: the view model, uPlot and the renderer inline, images as ``data:`` URLs."""
    model = build_model(runs, embedded_media, title=title)
    return page({"mode": "report", "generated": time.time(), "model": model}, title=title, live=False)


def write_report(runs: list[RunData], output: Path, *, title: str = "loggerhub report") -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(report_html(runs, title=title), encoding="utf-8")
    tmp.replace(output)
    return output
