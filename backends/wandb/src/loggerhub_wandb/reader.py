"""A W&B run as its ``.wandb`` files hold it: history, config, summary, media, artifacts, exit.

``read_run(run_dir)`` reads one run directory (``wandb/offline-run-<time>-<id>`` or
``wandb/run-<time>-<id>``); ``read_parts(wandb_dir, run_id)`` reads every directory of one run id
(a resumed run writes one per delivery) and ``merge(parts)`` joins them as ``wandb sync`` uploads
them to one run: history rows by ``_step`` (a step already held is not taken twice), config and
summary updated in order, the last exit code.

Everything comes from wandb's own protobuf records (:mod:`loggerhub_wandb.datastore`); media
(images, tables, box data) are the files the records name, under the run directory's ``files/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loggerhub_wandb import datastore

#: ``offline-run-20261130_015034-<id>`` (offline) and ``run-20261130_015034-<id>`` (online).
RUN_DIR = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")


@dataclass
class HistoryRow:
    """One committed history step: W&B's ``_step``, its values (media as their JSON dicts)."""

    step: int
    values: dict[str, Any]
    #: The ``files/`` folder that media paths of this row are relative to.
    files: Path

    def file(self, relative: str) -> Path | None:
        """A media file this row names, or None when the path leaves the run's ``files/``."""
        path = (self.files / relative).resolve()
        if not path.is_relative_to(self.files.resolve()):
            return None
        return path


@dataclass
class ArtifactEntry:
    name: str
    type: str
    aliases: list[str]
    digest: str
    #: path in the artifact -> (local file it was staged from, size)
    files: dict[str, tuple[str, int]]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class WandbRun:
    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    start_time: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    #: ``define_metric`` records: name or glob -> step metric
    metrics: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    offline: bool = False
    dirs: list[Path] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)
    #: other records, by type, that this reader does not interpret (telemetry, output, stats ...)
    other: dict[str, int] = field(default_factory=dict)


def wandb_file(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("run-*.wandb"))
    return found[0] if found else None


def read_run(run_dir: str | Path, *, max_bytes: int | None = None) -> WandbRun:
    """One run directory, as its ``.wandb`` file records it."""
    run_dir = Path(run_dir)
    path = wandb_file(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb file")
    run = WandbRun(dirs=[run_dir], offline=run_dir.name.startswith("offline-"))
    scan = datastore.Scan()
    files = run_dir / "files"
    for record in datastore.iter_records(path, scan, max_bytes=max_bytes):
        kind = record.WhichOneof("record_type")
        try:
            _apply(run, kind, record, files)
        except (ValueError, TypeError, KeyError, RecursionError) as error:
            scan.problem(f"unreadable {kind} record ({type(error).__name__})")
    run.problems = dict(scan.problems)
    return run


def _apply(run: WandbRun, kind: str | None, record: Any, files: Path) -> None:
    if kind == "run":
        info = record.run
        run.run_id, run.project, run.entity = info.run_id, info.project, info.entity
        run.name, run.group, run.notes = info.display_name, info.run_group, info.notes
        run.tags = list(info.tags)
        run.start_time = info.start_time.seconds + info.start_time.nanos / 1e9
        _update(run.config, info.config.update)
        _update(run.summary, info.summary.update)
    elif kind == "config":
        _update(run.config, record.config.update)
        _remove(run.config, record.config.remove)
    elif kind == "summary":
        _update(run.summary, record.summary.update)
        _remove(run.summary, record.summary.remove)
    elif kind == "history":
        values: dict[str, Any] = {}
        _update(values, record.history.item)
        step = values.get("_step", record.history.step.num)
        run.history.append(HistoryRow(int(step), values, files))
    elif kind == "artifact":
        artifact = record.artifact
        run.artifacts.append(ArtifactEntry(
            name=artifact.name, type=artifact.type, aliases=list(artifact.aliases), digest=artifact.digest,
            files={entry.path: (entry.local_path, int(entry.size)) for entry in artifact.manifest.contents},
            metadata=_metadata(artifact.metadata),
        ))
    elif kind == "metric":
        metric = record.metric
        if metric.step_metric:
            run.metrics[metric.name or metric.glob_name] = metric.step_metric
    elif kind == "exit":
        run.exit_code = int(record.exit.exit_code)
    elif kind is not None:
        run.other[kind] = run.other.get(kind, 0) + 1


def _metadata(text: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _path(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _update(target: dict[str, Any], items: Iterable[Any]) -> None:
    for item in items:
        *parents, leaf = _path(item)
        node = target
        for name in parents:
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        node[leaf] = json.loads(item.value_json)


def _remove(target: dict[str, Any], items: Iterable[Any]) -> None:
    for item in items:
        *parents, leaf = _path(item)
        node: Any = target
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)


def run_dirs(wandb_dir: str | Path, run_id: str | None = None) -> list[Path]:
    """The run directories under a ``wandb/`` folder (of one run id), oldest first. A directory
    without its ``.wandb`` file (a run that failed to start) is not a run."""
    found = []
    root = Path(wandb_dir)
    if not root.is_dir():
        return []
    for child in root.iterdir():
        match = RUN_DIR.match(child.name)
        if (match and child.is_dir() and not child.is_symlink() and (run_id is None or match.group(2) == run_id)
                and wandb_file(child) is not None):
            found.append((match.group(1), child.name, child))
    return [path for *_, path in sorted(found)]


def read_parts(wandb_dir: str | Path, run_id: str) -> list[WandbRun]:
    return [read_run(path) for path in run_dirs(wandb_dir, run_id)]


def merge(parts: list[WandbRun]) -> WandbRun:
    """The parts of one run, joined as one W&B run."""
    if not parts:
        raise ValueError("no parts to merge")
    run = WandbRun(run_id=parts[0].run_id, project=parts[0].project, entity=parts[0].entity,
                   name=parts[0].name, group=parts[0].group, notes=parts[0].notes,
                   start_time=parts[0].start_time, offline=parts[0].offline)
    seen: set[int] = set()
    for part in parts:
        run.tags = part.tags or run.tags
        run.name = part.name or run.name
        _deep_update(run.config, part.config)
        _deep_update(run.summary, part.summary)
        for row in part.history:
            if row.step not in seen:
                seen.add(row.step)
                run.history.append(row)
        run.artifacts.extend(part.artifacts)
        run.metrics.update(part.metrics)
        if part.exit_code is not None:
            run.exit_code = part.exit_code
        run.dirs.extend(part.dirs)
        for reason, count in part.problems.items():
            run.problems[reason] = run.problems.get(reason, 0) + count
        for kind, count in part.other.items():
            run.other[kind] = run.other.get(kind, 0) + count
    run.history.sort(key=lambda row: row.step)
    return run


def _deep_update(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value
