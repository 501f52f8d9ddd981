"""Reading the local run store: finding runs and summarising their journals (for the CLI)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loggerhub import codec
from loggerhub import journal as j


class RunNotFound(LookupError):
    pass


def iter_runs(root: Path) -> Iterator[Path]:
    """Every run directory under ``root`` (``<root>/<project>/<run id>``), oldest first, from the
    run index (:mod:`loggerhub.index`)."""
    from loggerhub.index import RunIndex

    for run in RunIndex(root).runs():
        yield run.dir


def find_run(spec: str, root: Path) -> Path:
    """A run given as a directory, a run id, a unique prefix of a run id, or ``latest``.

    An id or a prefix is looked up in the directory listings of the projects (a run directory is
    named by its id), which needs neither the index nor a journal: the cost is one listing per
    project, whatever the number of runs."""
    path = Path(spec)
    if (path / "journal").is_dir():
        return path
    if spec == "latest":
        runs = list(iter_runs(root))
        if not runs:
            raise RunNotFound(f"no runs under {root}")
        return runs[-1]
    exact: list[Path] = []
    prefixed: list[Path] = []
    if spec and "/" not in spec and spec not in (".", ".."):
        for project in _projects(root):
            if (project / spec / "journal").is_dir():
                exact.append(project / spec)
                continue
            for name in _names(project):
                if name.startswith(spec) and (project / name / "journal").is_dir():
                    prefixed.append(project / name)
    matches = exact or prefixed
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {spec!r} under {root}")
    raise RunNotFound(f"{spec!r} matches several runs: {', '.join(sorted(p.name for p in matches))}")


def _projects(root: Path) -> list[Path]:
    from loggerhub.index import INDEX_DIR

    try:
        with os.scandir(root) as entries:
            return [Path(e.path) for e in entries if e.name != INDEX_DIR and e.is_dir()]
    except OSError:
        return []


def _names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries]
    except OSError:
        return []


def claim_run_dir(parent: Path, new_id: Callable[[], str], attempts: int = 100) -> Path:
    """Make a new, empty run directory under ``parent`` (a project folder) and return it.

    ``mkdir`` of the run directory itself is the claim: it is atomic on local filesystems and on
    NFS, so of several processes that pick the same id (same name, same second, same random
    suffix) exactly one gets it and the others draw another id. No lock file, no index entry is
    involved: a run exists once its directory does."""
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        run_dir = parent / new_id()
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise FileExistsError(f"no free run id under {parent} after {attempts} attempts")


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
        elif entry.type in codec.METRIC_TYPES:  # system/... series read like the loop's own
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
        if entry.type not in codec.METRIC_TYPES:
            continue
        for key, value in entry.data["values"].items():
            if key in series:
                series[key][0].append(entry.data["step"])
                series[key][1].append(value)
    return series


def dumps(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
