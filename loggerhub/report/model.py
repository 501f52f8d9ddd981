"""What a report or the UI shows of some runs: read incrementally from their journals, reduced to
a bounded view model (plain JSON) that the one renderer (``static/app.js``) draws.

Metric series are downsampled by **min/max per bucket**: a series of ``n`` points is cut into
``buckets`` runs of consecutive points (journal order), and each bucket keeps its first and last
point, its smallest and its largest finite value, and the first NaN, +inf and -inf it holds. Every
peak and trough survives (a spike one point wide is still drawn at its height), non-finite values
stay visible, and a series never has more than ``5 * buckets + 2`` points whatever ``n``.
"""

from __future__ import annotations

import base64
import io
import math
import operator
import re
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loggerhub import codec
from loggerhub import journal as j
from loggerhub.store import RunNotFound, RunSummary, dumps, find_run, iter_runs

#: Points per chart across all its runs that a view aims at; each series gets
#: ``CHART_POINTS // (2 * runs)`` buckets, kept between these bounds.
CHART_POINTS = 100_000
MIN_BUCKETS = 200
MAX_BUCKETS = 1000
#: Images and figures per run and key in a view: spread evenly over the steps, the last included.
MEDIA_STEPS = 16
#: The longer side of an image embedded in a report; larger ones are scaled down (boxes are kept
#: in the original's pixels and scaled with it).
MEDIA_SIDE = 640
#: Text and table records per run and key that a view keeps: the latest ones.
TEXT_STEPS = 10
#: Console lines per run a view shows (the last ones), as the text card ``CONSOLE_KEY``.
CONSOLE_LINES = 200
CONSOLE_KEY = "system/console"
TEXT_CHARS = 20_000
TABLE_ROWS = 200
#: A series in memory is reduced (see :class:`Series`) when it passes ``KEEP_POINTS`` points.
KEEP_BUCKETS = 2 * MAX_BUCKETS
KEEP_POINTS = 16 * KEEP_BUCKETS


@dataclass
class Series:
    """One metric of one run, in journal order (8 bytes a column). Past ``KEEP_POINTS`` points it
    is reduced in place by min/max to ``KEEP_BUCKETS`` buckets (twice the finest view), so a run's
    memory is bounded whatever its length, and every peak is still there."""

    step: array = field(default_factory=lambda: array("d"))
    epoch: array = field(default_factory=lambda: array("d"))
    time: array = field(default_factory=lambda: array("d"))
    value: array = field(default_factory=lambda: array("d"))
    #: points logged, reduced or not
    logged: int = 0

    def reduce(self) -> None:
        keep = minmax_indices(np.frombuffer(self.value, dtype=np.float64), KEEP_BUCKETS)
        for name in ("step", "epoch", "time", "value"):
            column = np.frombuffer(getattr(self, name), dtype=np.float64)[keep]
            setattr(self, name, array("d", column.tobytes()))


class RunData:
    """One run as the views need it. :meth:`update` reads only what was appended since the last
    call, so a live run is followed at the cost of its new records."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.summary = RunSummary(dir=run_dir)
        self._reader = j.JournalReader(run_dir)
        self.series: dict[str, Series] = {}
        #: image and figure records by key, in journal order (fields as in the journal)
        self.media: dict[str, list[dict[str, Any]]] = {}
        self.texts: dict[str, deque[dict[str, Any]]] = {}
        self.tables: dict[str, deque[dict[str, Any]]] = {}
        self.files: list[dict[str, Any]] = []
        #: The last CONSOLE_LINES console lines, each marked with its stream.
        self.console: deque[str] = deque(maxlen=CONSOLE_LINES)
        self.console_step = 0

    @property
    def key(self) -> str:
        return self.dir.name

    def update(self) -> bool:
        """Read the records appended since the last call; True when there were any."""
        grew = False
        for entry in self._reader.entries():
            grew = True
            self.summary.add(entry)
            kind, data = entry.type, entry.data
            if kind in codec.METRIC_TYPES:
                step, ts = float(data["step"]), float(data["ts"])
                epoch = data.get("epoch")
                epoch = math.nan if epoch is None else float(epoch)
                for key, value in data["values"].items():
                    series = self.series.get(key)
                    if series is None:
                        series = self.series[key] = Series()
                    series.step.append(step)
                    series.epoch.append(epoch)
                    series.time.append(ts)
                    series.value.append(float(value))
                    series.logged += 1
                    if len(series.value) > KEEP_POINTS:
                        series.reduce()
            elif kind in (codec.IMAGE, codec.FIGURE):
                self.media.setdefault(data["key"], []).append(dict(data, record=kind))
            elif kind == codec.TEXT:
                self.texts.setdefault(data["key"], deque(maxlen=TEXT_STEPS)).append(data)
            elif kind == codec.TABLE:
                self.tables.setdefault(data["key"], deque(maxlen=TEXT_STEPS)).append(data)
            elif kind in (codec.ARTIFACT, codec.CHECKPOINT):
                self.files.append(dict(data, record=kind))
            elif kind == codec.CONSOLE:
                self.console_step = data["step"]
                self.console.extend(f"[{data['stream']}] {line}" for line in data["lines"])
        return grew


# --------------------------------------------------------------------------- selecting runs


_WHERE = re.compile(r"^\s*(?P<key>[^=!<>~]+?)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*(?P<value>.*)$")


@dataclass(frozen=True)
class Where:
    """One ``--where`` filter: ``KEY OP VALUE``. KEY is ``status``, ``name``, ``project``,
    ``params.NAME``, ``tags.NAME``, or a bare NAME (a param, else a tag). OP is one of
    ``= != < <= > >=`` (numbers compare as numbers) or ``~`` (VALUE occurs in the text)."""

    key: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Where:
        match = _WHERE.match(text)
        if not match:
            raise ValueError(f"--where {text!r}: expected KEY=VALUE, KEY!=VALUE, KEY<VALUE, ... or KEY~TEXT")
        return cls(match["key"], match["op"], match["value"].strip())

    def matches(self, summary: RunSummary) -> bool:
        found, actual = self._lookup(summary)
        if not found:
            return self.op == "!="
        text = dumps(actual)
        if self.op == "~":
            return self.value in text
        left, right = _number(actual), _number(self.value)
        if left is not None and right is not None:
            return bool(_OPS[self.op](left, right))
        return bool(_OPS[self.op](text, self.value))

    def _lookup(self, summary: RunSummary) -> tuple[bool, Any]:
        key = self.key
        if key == "status":
            return True, summary.current_status()
        if key in ("name", "project"):
            return True, getattr(summary, key)
        for prefix, source in (("params.", summary.params), ("tags.", summary.tags)):
            if key.startswith(prefix) and key[len(prefix):] in source:
                return True, source[key[len(prefix):]]
        for source in (summary.params, summary.tags):
            if key in source:
                return True, source[key]
        return False, None


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def select_runs(specs: Iterable[str], root: Path, where: Iterable[str] = ()) -> list[RunData]:
    """The runs that ``RUN...`` names, read: each spec a run directory, a run id, a unique prefix
    of one, ``latest``, or a project (all its runs); no spec means every run under ``root``.
    Then only those that pass every ``--where`` filter, oldest first, each run once."""
    filters = [Where.parse(text) for text in where]
    specs = list(specs)
    dirs: list[Path] = []
    if not specs:
        dirs = list(iter_runs(root))
    for spec in specs:
        project = root / spec
        if spec not in (".", "..") and "/" not in spec and project.is_dir() and not (project / "journal").is_dir():
            found = [run for run in iter_runs(root) if run.parent == project]
            if not found:
                raise RunNotFound(f"project {spec!r} has no runs under {root}")
            dirs.extend(found)
        else:
            dirs.append(find_run(spec, root))
    seen: set[Path] = set()
    runs = []
    for run_dir in dirs:
        resolved = run_dir.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        data = RunData(run_dir)
        data.update()
        if all(f.matches(data.summary) for f in filters):
            runs.append(data)
    if not runs:
        raise RunNotFound("no run matches " + " and ".join([*specs, *(f"--where {w}" for w in where)]))
    runs.sort(key=lambda r: r.summary.started_at)
    return runs


# --------------------------------------------------------------------------- downsampling


def minmax_indices(values: np.ndarray, buckets: int) -> np.ndarray:
    """Indices of the points to keep (see the module's docstring), sorted."""
    n = len(values)
    if n <= 2 * buckets:
        return np.arange(n)
    size = -(-n // buckets)
    rows = -(-n // size)
    padded = np.full(rows * size, np.nan)
    padded[:n] = values
    grid = padded.reshape(rows, size)
    real = (np.arange(rows * size) < n).reshape(rows, size)
    finite = np.isfinite(grid)
    base = np.arange(rows) * size
    picks = [np.array([0, n - 1])]
    has_finite = finite.any(axis=1)
    picks.append((base + np.where(finite, grid, np.inf).argmin(axis=1))[has_finite])
    picks.append((base + np.where(finite, grid, -np.inf).argmax(axis=1))[has_finite])
    for mask in (np.isnan(grid) & real, np.isposinf(grid), np.isneginf(grid)):
        hit = mask.any(axis=1)
        if hit.any():
            picks.append((base + mask.argmax(axis=1))[hit])
    # Each bucket's first point too, so a line between buckets starts where the data does.
    picks.append(base)
    return np.unique(np.concatenate(picks))


def buckets_for(runs: int) -> int:
    return max(MIN_BUCKETS, min(MAX_BUCKETS, CHART_POINTS // (2 * max(runs, 1))))


def series_view(series: Series, buckets: int) -> dict[str, Any]:
    """One run's series of one key, downsampled, as JSON: non-finite values are ``null`` in
    ``value`` (a gap in the line) and listed in ``nonfinite`` as ``[index, "nan"|"inf"|"-inf"]``."""
    value = np.frombuffer(series.value, dtype=np.float64) if len(series.value) else np.zeros(0)
    keep = minmax_indices(value, buckets)
    kept = value[keep]
    step = np.frombuffer(series.step, dtype=np.float64)[keep] if len(keep) else np.zeros(0)
    epoch = np.frombuffer(series.epoch, dtype=np.float64)[keep] if len(keep) else np.zeros(0)
    times = np.frombuffer(series.time, dtype=np.float64)[keep] if len(keep) else np.zeros(0)
    values: list[float | None] = []
    nonfinite: list[list[Any]] = []
    for index, v in enumerate(kept.tolist()):
        if math.isfinite(v):
            values.append(float(f"{v:.7g}"))
        else:
            values.append(None)
            nonfinite.append([index, "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")])
    has_epoch = bool(np.isfinite(epoch).any())
    return {
        "count": series.logged,
        "step": [int(s) if s.is_integer() else s for s in step.tolist()],
        "epoch": [e if math.isfinite(e) else None for e in epoch.tolist()] if has_epoch else None,
        "time": [round(t, 3) for t in times.tolist()],
        "value": values,
        "nonfinite": nonfinite,
    }


# --------------------------------------------------------------------------- the view model


MediaSource = Callable[[RunData, str], str]


def embedded_media(run: RunData, relative: str) -> str:
    """A ``data:`` URL of a run's PNG, scaled down to ``MEDIA_SIDE`` (for a report)."""
    path = run.dir / relative
    raw = path.read_bytes()
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        if max(image.size) > MEDIA_SIDE:
            image.thumbnail((MEDIA_SIDE, MEDIA_SIDE))
            with io.BytesIO() as buffer:
                image.save(buffer, format="PNG")
                raw = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def spread(items: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """At most ``count`` items, evenly spread, the first and the last included."""
    if len(items) <= count:
        return items
    picks = sorted({round(i * (len(items) - 1) / (count - 1)) for i in range(count)})
    return [items[i] for i in picks]


def differing_params(runs: list[RunData]) -> list[str]:
    """Params whose value is not the same in every run (missing counts as a value)."""
    keys = sorted({key for run in runs for key in run.summary.params})
    return [key for key in keys
            if len({dumps(run.summary.params[key]) if key in run.summary.params else None for run in runs}) > 1]


def run_row(run: RunData) -> dict[str, Any]:
    """A run's line of the run table."""
    s = run.summary
    error = s.error or {}
    return {
        "key": run.key, "id": s.run_id or run.key, "name": s.name, "project": s.project,
        "status": s.current_status(),
        "reason": f"{error.get('type', '')}: {error.get('message', '')}".strip(": ") if s.error else "",
        "started": s.started_at, "ended": s.ended_at, "tags": s.tags,
        "points": s.points, "counts": dict(s.counts),
        "rejected": [list(r) for r in s.rejected[:50]], "rejected_count": len(s.rejected),
        "params": {key: _json_safe(value) for key, value in s.params.items()},
    }


def _json_safe(value: Any) -> Any:
    """NaN and the infinities as text: JSON has no token for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def build_model(runs: list[RunData], media: MediaSource, *, title: str = "loggerhub report") -> dict[str, Any]:
    """The view model of ``runs`` (already read): bounded whatever their number of points."""
    buckets = buckets_for(len(runs))
    metrics: dict[str, dict[str, Any]] = {}
    images: dict[str, dict[str, Any]] = {}
    texts: dict[str, dict[str, Any]] = {}
    tables: dict[str, dict[str, Any]] = {}
    files: list[dict[str, Any]] = []
    for run in runs:
        for key, series in run.series.items():
            metrics.setdefault(key, {})[run.key] = series_view(series, buckets)
        for key, records in run.media.items():
            shown = []
            for record in spread(records, MEDIA_STEPS):
                try:
                    src = media(run, record["file"])
                except (OSError, ValueError) as error:
                    src, record = "", dict(record, caption=f"cannot read {record['file']}: {error}")
                shown.append({"step": record["step"], "src": src, "record": record["record"],
                              "width": record["width"], "height": record["height"],
                              "caption": record.get("caption"), "boxes": record.get("boxes", [])})
            images.setdefault(key, {})[run.key] = {"count": len(records), "items": shown}
        for key, kept in run.texts.items():
            texts.setdefault(key, {})[run.key] = [
                {"step": r["step"], "text": r["text"][:TEXT_CHARS], "cut": len(r["text"]) > TEXT_CHARS} for r in kept]
        if run.console:
            tail = "\n".join(run.console)
            texts.setdefault(CONSOLE_KEY, {})[run.key] = [
                {"step": run.console_step, "text": tail[-TEXT_CHARS:], "cut": len(tail) > TEXT_CHARS}]
        for key, kept in run.tables.items():
            tables.setdefault(key, {})[run.key] = [
                {"step": r["step"], "columns": r["columns"], "rows": r["rows"][:TABLE_ROWS],
                 "total_rows": len(r["rows"]), "role": r.get("role", "table")} for r in kept]
        for record in run.files:
            files.append({"run": run.key, "name": record["name"], "record": record["record"],
                          "kind": record.get("kind"), "size": record.get("size"),
                          "is_dir": record.get("is_dir", False), "step": record.get("step")})
    return {
        "title": title,
        "runs": [run_row(run) for run in runs],
        "params_differ": differing_params(runs),
        "buckets": buckets,
        "metrics": dict(sorted(metrics.items())),
        "images": dict(sorted(images.items())),
        "texts": dict(sorted(texts.items())),
        "tables": dict(sorted(tables.items())),
        "files": files,
    }

