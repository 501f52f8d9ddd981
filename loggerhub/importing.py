"""Importing runs from other trackers into the journal, and replaying them into any tracker.

An importer reads one source format and describes each source run to a :class:`RunBuilder`,
which writes an ordinary loggerhub run directory, with the source's own timestamps. Once
imported, a run is like any other: ``loggerhub show`` browses it and ``loggerhub sync --to NAME``
(or ``replay``) delivers it to any tracker.

Importers are found through the ``loggerhub.importers`` entry-point group: the name is the
source (``neptune``, ``comet``, ...), the value a callable
``import_runs(source: str, builder_factory: BuilderFactory, **options) -> None`` that calls
``builder_factory(...)`` once per source run it finds. Tracker plugins ship the importer of their
own format beside their backend, because they own its knowledge.

Idempotency: a run's directory is named after its source and the source's run id
(``<source>-<id>``). Importing the same source again finds the completed directory and writes
nothing; a directory left incomplete by an interrupted import is replaced.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from loggerhub import __version__
from loggerhub import _normalize as norm
from loggerhub import journal as j
from loggerhub_hookspecs import ArtifactKind, Box, Phase, Status, TableRole

IMPORTER_GROUP = "loggerhub.importers"
_COMPLETE = "import.json"


@dataclass
class ImportReport:
    """What an import did, per run: written records, and what could not be mapped."""

    imported: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    progress: Any = None  # a tqdm bar counting records, for long imports

    def summary(self) -> str:
        lines = [f"imported {len(self.imported)} runs, {len(self.skipped)} already imported (unchanged)"]
        if self.counts:
            lines.append("records: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        if self.unmapped:
            lines.append("not mapped (kept out of the journal, listed here):")
            lines += [f"  {reason}: {count}" for reason, count in sorted(self.unmapped.items())]
        return "\n".join(lines)


class RunBuilder:
    """Writes one imported run. Use it as a context manager; it must end with :meth:`end`,
    or the run is left incomplete (and replaced by the next import).

    Every method takes the source's wall time ``ts`` (seconds since the epoch).
    """

    def __init__(self, run_dir: Path, report: ImportReport, start: dict[str, Any]) -> None:
        self.dir = run_dir
        self._report = report
        self._paths = j.RunPaths(run_dir)
        self._paths.make()
        self._writer = j.JournalWriter(self._paths, 0, 3600.0, on_error=self._writer_error)
        self._start = dict(start)
        self._put(j.RUN_START, start["ts"], {k: v for k, v in start.items() if k != "ts"})
        self._ended = False
        self._redactor = norm.Redactor()

    # -- records -------------------------------------------------------------------------------

    def params(self, params: Mapping[str, Any], ts: float) -> None:
        self._put(j.PARAMS, ts, {"params": self._redactor.params(norm.flatten_params(params))})

    def metrics(self, values: Mapping[str, float], step: int, ts: float, epoch: int | None = None) -> None:
        self._put(j.METRICS, ts, (norm.check_step(step), norm.check_epoch(epoch),
                                  {norm.check_key(k): float(v) for k, v in values.items()}))

    def image(self, key: str, image: bytes | Any, step: int, ts: float,
              boxes: Iterable[Box] = (), caption: str | None = None, epoch: int | None = None) -> None:
        """An image as encoded bytes (any format Pillow reads) or anything ``log_image`` takes."""
        source = norm.image_bytes(bytes(image)) if isinstance(image, (bytes, bytearray)) else norm.image_source(image)
        self._put(j.IMAGE, ts, {
            "key": norm.check_key(key), "step": norm.check_step(step), "epoch": norm.check_epoch(epoch),
            "width": source.width, "height": source.height, "caption": caption, "image": source,
            "boxes": [[b.x0, b.y0, b.x1, b.y1, b.label, b.score, b.class_id] for b in boxes]})

    def figure(self, key: str, png: bytes, step: int, ts: float, epoch: int | None = None) -> None:
        source = norm.image_bytes(png)
        self._put(j.FIGURE, ts, {"key": norm.check_key(key), "step": norm.check_step(step),
                                 "epoch": norm.check_epoch(epoch), "image": source,
                                 "width": source.width, "height": source.height})

    def artifact(self, path: Path, name: str, ts: float, kind: ArtifactKind = ArtifactKind.FILE,
                 step: int = 0, checkpoint: bool = False) -> None:
        """A file or directory, copied into the run when the builder closes: a temporary source
        (an extracted archive, a download) must outlive the ``with`` block of this builder."""
        if not Path(path).exists():
            self.unmapped(f"artifact file missing: {name}")
            return
        self._put(j.CHECKPOINT if checkpoint else j.ARTIFACT, ts, {
            "name": norm.artifact_name(name), "source": str(Path(path).resolve()),
            "kind": ArtifactKind(kind).value, "step": norm.check_step(step)})

    def text(self, key: str, text: str, step: int, ts: float) -> None:
        self._put(j.TEXT, ts, {"key": norm.check_key(key), "text": text, "step": norm.check_step(step)})

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int, ts: float,
              role: TableRole = TableRole.TABLE) -> None:
        self._put(j.TABLE, ts, {"key": norm.check_key(key), "columns": columns, "rows": rows,
                                "role": role.value, "step": norm.check_step(step)})

    def event(self, phase: Phase, step: int, ts: float, epoch: int | None = None) -> None:
        self._put(j.EVENT, ts, {"phase": Phase(phase).value, "step": step, "epoch": epoch})

    def unmapped(self, reason: str, count: int = 1) -> None:
        """Something in the source that has no place in the journal: reported, never silent."""
        self._report.unmapped[reason] += count

    def end(self, status: Status | str, ts: float) -> None:
        self._put(j.RUN_END, ts, {"status": Status(status).value})
        self._ended = True

    # -- plumbing ------------------------------------------------------------------------------

    def _put(self, kind: str, ts: float, fields: Any) -> None:
        self._writer.put((kind, float(ts), fields))
        self._report.counts[kind] += 1
        if self._report.progress is not None:
            self._report.progress.update(1)

    def _writer_error(self, reason: str) -> None:
        self._report.unmapped[f"unreadable record: {reason[:120]}"] += 1

    def __enter__(self) -> RunBuilder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._writer.close()
        if exc_type is None and self._ended:
            j.write_json_atomic(self.dir / _COMPLETE, {"source": self._start.get("source"),
                                                       "imported_at": time.time(),
                                                       "loggerhub": __version__})
            j.write_json_atomic(self._paths.summary, {
                "run_id": self._start["run_id"], "name": self._start["name"],
                "project": self._start["project"], "backends": ["local"],
                "started_at": self._start["ts"], "imported": True})
            self._report.imported.append(self.dir)


class BuilderFactory(Protocol):
    """What an importer calls once per source run: a builder, or None when already imported.

    :param source_id: the source's own run id; it names the imported run, so it must be stable.
    :param source_project: the source's project (used when the user gives none).
    """

    def __call__(self, *, source_id: str, name: str, started_at: float,
                 config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                 source_project: str | None = None) -> RunBuilder | None: ...

    def unmapped(self, reason: str, count: int = 1) -> None:
        """Something found at the source that is not part of any run (a folder that is not a run)."""


def import_runs(
    source: str,
    location: str,
    *,
    dir: str | Path | None = None,  # noqa: A002 - same name as init's
    project: str | None = None,
    to: list[str] | None = None,
    options: Mapping[str, Any] | None = None,
    to_options: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
) -> ImportReport:
    """Import every run found at ``location`` by the ``source`` importer; then replay to ``to``.

    :param source: the importer's name, e.g. ``neptune``, ``comet``, ``tensorboard``, ``mlflow``.
    :param location: what that importer reads (a path, or a tracking URI for MLflow).
    :param project: the loggerhub project; default, the source's own project name.
    :param to: trackers to replay the imported runs into, as ``loggerhub sync --to`` would.
    :param options: passed to the importer (for MLflow: ``run_id`` or ``experiment``).
    :param to_options: options of the trackers in ``to``, e.g. ``{"mlflow": {"tracking_uri": ...}}``.
    """
    from loggerhub.config import Settings

    root = Path(dir) if dir is not None else Settings().dir
    report = ImportReport()
    reader = _importer(source)
    if progress:
        from tqdm import tqdm

        report.progress = tqdm(desc=f"importing from {source}", unit="rec")

    factory = _Factory(source, str(location), root, project, report)
    try:
        reader(str(location), factory, **dict(options or {}))
    finally:
        if report.progress is not None:
            report.progress.close()
    if to:
        replay(report.imported + report.skipped, to, progress=progress, options=to_options)
    return report


class _Factory:
    """The BuilderFactory handed to importers: names runs by source id, skips complete ones."""

    def __init__(self, source: str, location: str, root: Path, project: str | None, report: ImportReport) -> None:
        self._source, self._location, self._root, self._project = source, location, root, project
        self._report = report

    def unmapped(self, reason: str, count: int = 1) -> None:
        self._report.unmapped[reason] += count

    def __call__(self, *, source_id: str, name: str, started_at: float, config: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None, source_project: str | None = None) -> RunBuilder | None:
        source, report = self._source, self._report
        run_project = _slug(self._project or source_project or source)
        run_id = _slug(f"{source}-{source_id}")
        run_dir = self._root / run_project / run_id
        if (run_dir / _COMPLETE).exists():
            report.skipped.append(run_dir)
            return None
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an interrupted import: start it again
        start = {
            "run_id": run_id, "project": run_project, "name": name, "ts": started_at,
            "config": norm.Redactor().params(norm.flatten_params(config or {})),
            "tags": {**{str(k): str(v) for k, v in (tags or {}).items()}, "imported_from": source,
                     "source_run_id": source_id},
            "backends": ["local"], "options": {}, "journal_version": j.JOURNAL_VERSION,
            "source": {"kind": source, "id": source_id, "location": self._location},
        }
        return RunBuilder(run_dir, report, start)


def replay(run_dirs: Iterable[Path], to: list[str], *, progress: bool = False,
           options: dict[str, dict[str, Any]] | None = None) -> None:
    """Deliver runs to trackers. Already delivered records are not sent again."""
    from loggerhub.delivery import sync

    for run_dir in run_dirs:
        sync(run_dir, to, progress=progress, options=options)


def importers() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=IMPORTER_GROUP)}


def _importer(source: str) -> Callable[..., None]:
    found = importers()
    if source not in found:
        raise LookupError(
            f"no importer for {source!r}. Installed importers: {', '.join(sorted(found)) or 'none'}. "
            f"Importers come with the tracker plugins: pip install 'loggerhub[{source}]'"
        )
    function: Callable[..., None] = found[source].load()
    return function


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:120]


def add_parser(commands: Any) -> None:
    """``loggerhub import SOURCE [PATH]``: the CLI over :func:`import_runs`."""
    parser = commands.add_parser(
        "import", help="import runs from another tracker's files or server into the run store",
        description="Import runs, keeping steps, timestamps, params, media, artifacts, names, tags "
                    "and status; re-importing the same source changes nothing.")
    parser.add_argument("source", help="neptune, comet, tensorboard, mlflow, or another installed importer")
    parser.add_argument("path", nargs="?", help="what to import: an offline run dir, a zip, a logdir, ...")
    parser.add_argument("--tracking-uri", help="MLflow: the tracking server or store to read")
    parser.add_argument("--run-id", help="MLflow: one run")
    parser.add_argument("--experiment", help="MLflow: every run of an experiment")
    parser.add_argument("--project", help="the loggerhub project (default: the source's)")
    parser.add_argument("--to", help="comma-separated trackers to replay the imported runs into")
    parser.add_argument("--option", action="append", default=[], metavar="TRACKER.KEY=VALUE",
                        help="an option of a tracker in --to, e.g. mlflow.tracking_uri=http://127.0.0.1:5000")
    parser.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the importer, e.g. files_dir=export/files (see its README)")
    parser.set_defaults(handler=_cmd_import)


def _cmd_import(args: Any) -> int:
    import sys

    from loggerhub.cli import tracker_options

    location = args.path or args.tracking_uri
    if not location:
        raise ValueError("give the PATH to import (or --tracking-uri for MLflow)")
    options: dict[str, Any] = {k: v for k, v in (("run_id", args.run_id), ("experiment", args.experiment)) if v}
    for item in args.source_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--source-option takes KEY=VALUE, got {item!r}")
        options[key] = value
    to = [name.strip() for name in args.to.split(",")] if args.to else None
    report = import_runs(args.source, location, dir=args.dir, project=args.project, to=to, options=options,
                         to_options=tracker_options(args.option), progress=sys.stderr.isatty())
    print(report.summary())
    for run_dir in report.imported + report.skipped:
        print(f"  {run_dir}")
    return 0
