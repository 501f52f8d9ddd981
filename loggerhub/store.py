"""Reading the local run store: finding runs and summarising their journals (for the CLI)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loggerhub import codec
from loggerhub import journal as j


class RunNotFound(LookupError):
    pass


def iter_runs(root: Path) -> Iterator[Path]:
    """Every run directory under ``root`` (``<root>/<project>/<run id>``), oldest first."""
    found = [p.parent for p in root.glob("*/*/journal") if p.is_dir()]
    yield from sorted(found, key=_started_at)


def _started_at(run_dir: Path) -> float:
    try:
        return float(json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return (run_dir / "journal").stat().st_mtime


def find_run(spec: str, root: Path) -> Path:
    """A run given as a directory, a run id, a unique prefix of a run id, or ``latest``."""
    path = Path(spec)
    if (path / "journal").is_dir():
        return path
    if spec == "latest":
        runs = list(iter_runs(root))
        if not runs:
            raise RunNotFound(f"no runs under {root}")
        return runs[-1]
    matches = [p for p in iter_runs(root) if p.name == spec] or [
        p for p in iter_runs(root) if p.name.startswith(spec)
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {spec!r} under {root}")
    raise RunNotFound(f"{spec!r} matches several runs: {', '.join(p.name for p in matches)}")


@dataclass
class MetricSummary:
    last: float = math.nan
    min: float = math.inf
    max: float = -math.inf
    count: int = 0

    def add(self, value: float) -> None:
        self.last = value
        self.count += 1
        if not math.isnan(value):
            self.min = min(self.min, value)
            self.max = max(self.max, value)


@dataclass
class RunSummary:
    """What ``loggerhub show`` prints, computed from the journal alone."""

    dir: Path
    run_id: str = ""
    name: str = ""
    project: str = ""
    status: str = "RUNNING"
    started_at: float = 0.0
    ended_at: float | None = None
    backends: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: ``{"type", "message", "traceback"}`` of the run_end record of a FAILED or KILLED run.
    error: dict[str, str] | None = None
    #: ``(api, key, reason)`` of every input loggerhub refused, in journal order. The key is the
    #: record's ``key`` field, or the short repr of the refused value (the key for media).
    rejected: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(m.count for m in self.metrics.values())

    def add(self, entry: j.Entry) -> None:
        """Take one more journal record into account (a reader that follows a live run calls this
        for each new record)."""
        data = entry.data
        self.counts[entry.type] = self.counts.get(entry.type, 0) + 1
        if entry.type == codec.RUN_START:
            self.run_id, self.name, self.project = data["run_id"], data["name"], data["project"]
            self.started_at, self.backends = data["ts"], data.get("backends", [])
            self.tags.update(data.get("tags", {}))
            self.params.update(data.get("config", {}))
        elif entry.type == codec.RUN_RESUME:
            self.status, self.ended_at, self.error = "RUNNING", None, None
        elif entry.type == codec.PARAMS:
            self.params.update(data["params"])
        elif entry.type == codec.METRICS:
            for key, value in data["values"].items():
                self.metrics.setdefault(key, MetricSummary()).add(value)
        elif entry.type == codec.RUN_END:
            self.status, self.ended_at = data["status"], data["ts"]
            self.error = data.get("error")
        elif entry.type == codec.REJECTED:
            self.rejected.append((str(data.get("api", "?")), str(data.get("key", data.get("value", ""))),
                                  str(data.get("reason", ""))))

    def current_status(self) -> str:
        """``status``, or CRASHED for a run with no run_end that nobody is logging any more."""
        if self.status == "RUNNING" and not j.run_is_live(j.RunPaths(self.dir)):
            return "CRASHED"  # `loggerhub sync` closes it
        return self.status


def summarise(run_dir: Path) -> RunSummary:
    summary = RunSummary(dir=run_dir)
    for entry in j.JournalReader(run_dir).entries():
        summary.add(entry)
    summary.status = summary.current_status()
    return summary


def metric_series(run_dir: Path, keys: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {key: ([], []) for key in keys}
    for entry in j.JournalReader(run_dir).entries():
        if entry.type != codec.METRICS:
            continue
        for key, value in entry.data["values"].items():
            if key in series:
                series[key][0].append(entry.data["step"])
                series[key][1].append(value)
    return series


def dumps(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
