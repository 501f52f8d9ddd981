"""Importing runs from other trackers into the journal, and replaying them into any tracker.

An importer reads one source format and describes each source run to a :class:`RunBuilder`,
which writes an ordinary loggerhub run directory, with the source's own timestamps. Once
imported, a run is like any other: ``loggerhub show`` browses it and ``loggerhub sync --to NAME``
(or ``replay``) delivers it to any tracker.

Importers are found through the ``loggerhub.importers`` entry-point group: the name is the
source (``neptune``, ``comet``, ...), the value an :class:`loggerhub_hookspecs.importers.Importer`
(the contract, its CLI options and the safe-input layer live there). Tracker plugins ship the
importer of their own format beside their backend, because they own its knowledge.

Input is hostile, and the store is protected by construction, here:

* names: a run's id is a sanitised prefix plus a hash of (source, source id)
  (:func:`~loggerhub_hookspecs.importers.source_run_id`), its project folder a
  :func:`~loggerhub_hookspecs.importers.safe_name`; both are checked to lie inside the store.
* staging: a run is written under ``<store>/.staging/<random>/`` (same disk), and
  :meth:`_Factory.commit` moves it into place with one ``os.rename`` only when nothing is there;
  an import that fails, or finds the place taken, removes only its own staging folder.
  Nothing outside ``.staging/`` is ever deleted or replaced.

Idempotency: importing the same source again finds the run's ``import.json`` (written only into
a complete run, before it is moved into place) and writes nothing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import json
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loggerhub import __version__, codec
from loggerhub import _normalize as norm
from loggerhub import journal as j
from loggerhub_hookspecs import ArtifactKind, Box, Phase, RunError, Status, TableRole
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Importer,
    ImportRefused,
    Limits,
    OutsideSource,
    Source,
    contained,
    printable,
    safe_name,
    source_run_id,
)

__all__ = ["BuilderFactory", "ImportReport", "RunBuilder", "import_runs", "importers", "replay"]

IMPORTER_GROUP = "loggerhub.importers"
#: Written into a run only once it is complete: the mark of a run this importer made.
_COMPLETE = "import.json"
STAGING = ".staging"
_OWNER = "owner.json"


def clean(text: object) -> str:
    """Everything an import prints: secrets redacted, control characters stripped."""
    return printable(norm.Redactor().text(str(text)))


@dataclass
class ImportReport:
    """What an import did, per run: written records, what could not be mapped, what was skipped."""

    imported: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    unmapped: Counter[str] = field(default_factory=Counter)
    #: Items of the input not imported, ``skipped: <file>:<line>: <reason>``, and runs refused.
    problems: list[str] = field(default_factory=list)
    progress: Any = None  # a tqdm bar counting records, for long imports

    def summary(self) -> str:
        """The report as printed; every line from the input is redacted and control-free."""
        lines = [f"imported {len(self.imported)} runs, {len(self.skipped)} already imported (unchanged)"]
        if self.counts:
            lines.append("records: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        if self.unmapped:
            lines.append("not mapped (kept out of the journal, listed here):")
            lines += [f"  {clean(reason)}: {count}" for reason, count in sorted(self.unmapped.items())]
        if self.problems:
            lines.append(f"not imported ({len(self.problems)}):")
            lines += [f"  {clean(problem)}" for problem in self.problems[:_MAX_LISTED]]
            if len(self.problems) > _MAX_LISTED:
                lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        return "\n".join(lines)


_MAX_LISTED = 200


class RunBuilder:
    """Writes one imported run, into its staging folder. Use it as a context manager; it must end
    with :meth:`end`, or nothing of it is kept. Only the factory makes one.

    Every method takes the source's wall time ``ts`` (seconds since the epoch).
    """

    def __init__(self, run_dir: Path, report: ImportReport, start: dict[str, Any], staging: _Staging) -> None:
        self.dir = run_dir
        self._report = report
        self._staging = staging
        #: A folder on the store's disk for files the importer extracts; removed with the staging.
        self.scratch = staging.scratch
        self._paths = j.RunPaths(run_dir)
        self._paths.make()
        self._writer = j.JournalWriter(self._paths, 0, 3600.0, on_error=self._writer_error)
        self._start = dict(start)
        self._put(codec.RUN_START, start["ts"], {k: v for k, v in start.items() if k != "ts"})
        self._ended = False
        self._redactor = norm.Redactor()

    # -- records -------------------------------------------------------------------------------

    # Each record is checked by the same codec function as Run's log_* call; an invalid item
    # raises InvalidInput (loggerhub._normalize) to the importer, which reports and skips it.

    def params(self, params: Mapping[str, Any], ts: float) -> None:
        self._put(codec.PARAMS, ts, codec.params_fields(params, self._redactor))

    def metrics(self, values: Mapping[str, float], step: int, ts: float, epoch: int | None = None) -> None:
        self._put(codec.METRICS, ts, (norm.check_step(step), norm.check_epoch(epoch), codec.metrics_fields(values)))

    def image(self, key: str, image: bytes | Any, step: int, ts: float,
              boxes: Iterable[Box] = (), caption: str | None = None, epoch: int | None = None) -> None:
        """An image as encoded bytes (any format Pillow reads) or anything ``log_image`` takes."""
        self._put(codec.IMAGE, ts, codec.image_fields(key, image, step, boxes=boxes, caption=caption, epoch=epoch))

    def figure(self, key: str, png: bytes, step: int, ts: float, epoch: int | None = None) -> None:
        self._put(codec.FIGURE, ts, codec.figure_fields(key, png, step, epoch=epoch))

    def artifact(self, path: Path, name: str, ts: float, kind: ArtifactKind = ArtifactKind.FILE,
                 step: int = 0, checkpoint: bool = False) -> None:
        """A file or directory, copied into the run when the builder closes: a temporary source
        (an extracted archive, a download) must outlive the ``with`` block of this builder."""
        if not Path(path).exists():
            self.unmapped(f"artifact file missing: {name}")
            return
        self._put(codec.CHECKPOINT if checkpoint else codec.ARTIFACT, ts,
                  codec.artifact_fields(path, step, name=name, kind=kind))

    def text(self, key: str, text: str, step: int, ts: float) -> None:
        self._put(codec.TEXT, ts, codec.text_fields(key, text, step, self._redactor))

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int, ts: float,
              role: TableRole = TableRole.TABLE) -> None:
        self._put(codec.TABLE, ts, codec.table_fields(key, columns, rows, step, role))

    def event(self, phase: Phase, step: int, ts: float, epoch: int | None = None) -> None:
        self._put(codec.EVENT, ts, codec.event_fields(phase, step, epoch=epoch))

    def system_metrics(self, values: Mapping[str, float], step: int, ts: float) -> None:
        """A system sample: keys under ``system/``, loggerhub's names where the source's series
        is one of ``loggerhub_hookspecs.telemetry``'s (map them; pass others on as ``system/<name>``).
        ``step``: the training step at the sample, 0 when the source does not say."""
        self._put(codec.SYSTEM_METRICS, ts, codec.system_fields(values, step))

    def console(self, stream: str, lines: Sequence[str], step: int, ts: float) -> None:
        """Console output of one stream (``"stdout"`` or ``"stderr"``); ``\r`` redraws are
        collapsed, escape sequences stripped, long lines cut and secrets redacted here."""
        self._put(codec.CONSOLE, ts, codec.console_fields(stream, lines, step, self._redactor))

    def context(self, ts: float, *, command: Sequence[str] = (), python_version: str = "",
                python_executable: str = "", hostname: str = "", os: str = "",  # noqa: A002 - the field's name
                cpu: str = "", cpu_count: int | None = None, gpus: Sequence[str] = (),
                packages: Mapping[str, str] | None = None, environment: Mapping[str, str] | None = None,
                git: Mapping[str, Any] | None = None, diff: str | bytes | None = None) -> None:
        """The run's code and environment, as far as the source recorded it ("" where it did
        not). ``git``: ``commit`` (required), ``branch``, ``remote``, ``dirty``, ``untracked``;
        ``diff``: the ``git diff HEAD`` text, written into the run (redacted, size-capped).
        ``environment`` should hold only the variables loggerhub allow-lists
        (``loggerhub.telemetry.context.ENVIRONMENT``); credential-like names are dropped."""
        git_fields = None if git is None else dict(git)
        if git_fields is not None and diff:
            git_fields["diff_file"], git_fields["diff_truncated"] = codec.write_diff(self.dir, diff, self._redactor)
        self._put(codec.CONTEXT, ts, codec.context_fields(
            command=list(command), python_version=python_version, python_executable=python_executable,
            hostname=hostname, os=os, cpu=cpu, cpu_count=cpu_count, gpus=list(gpus), packages=packages,
            environment=environment, git=git_fields, redactor=self._redactor))

    def unmapped(self, reason: str, count: int = 1) -> None:
        """Something in the source that has no place in the journal: reported, never silent."""
        self._report.unmapped[reason] += count

    def end(self, status: Status | str, ts: float, error: RunError | None = None) -> None:
        """The run's end as the source recorded it; ``error``: why it failed, when it says."""
        fields = codec.end_fields(status, None if error is None else codec.error_fields(error, self._redactor))
        self._put(codec.RUN_END, ts, fields)
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
        complete = exc_type is None and self._ended
        if complete:
            j.write_json_atomic(self.dir / _COMPLETE, {"source": self._start.get("source"),
                                                       "imported_at": time.time(),
                                                       "loggerhub": __version__})
            j.write_json_atomic(self._paths.summary, {
                "run_id": self._start["run_id"], "name": self._start["name"],
                "project": self._start["project"], "backends": ["local"],
                "started_at": self._start["ts"], "imported": True})
        try:
            if complete:
                self._staging.commit(self)
        finally:
            self._staging.discard()


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
    limits: Limits | None = None,
    allow_read: Sequence[str | os.PathLike[str]] = (),
) -> ImportReport:
    """Import every run found at ``location`` by the ``source`` importer; then replay to ``to``.

    :param source: the importer's name, e.g. ``neptune``, ``comet``, ``tensorboard``, ``mlflow``.
    :param location: what that importer reads (a path, or a tracking URI for MLflow).
    :param project: the loggerhub project; default, the source's own project name.
    :param to: trackers to replay the imported runs into, as ``loggerhub sync --to`` would.
    :param options: the importer's own options (its ``Importer.options``, e.g. MLflow's ``run_id``).
    :param to_options: options of the trackers in ``to``, e.g. ``{"mlflow": {"tracking_uri": ...}}``.
    :param limits: size limits of the import (default :class:`Limits`' documented values).
    :param allow_read: folders outside the source the input may name files in; reads there are
        reported. Without it, only files inside the folder being imported are read.
    :raises ImportRefused: the input as a whole is refused (the message says why); nothing is written.
    """
    from loggerhub.config import Settings

    root = Path(dir) if dir is not None else Settings().dir
    report = ImportReport()
    importer = _importer(source)
    opts = dict(options or {})
    importer.check_options(opts)
    src = importer.source(str(location), limits or Limits(), [Path(a) for a in allow_read], opts)
    src.clean = clean
    if progress:
        from tqdm import tqdm

        report.progress = tqdm(desc=f"importing from {source}", unit="rec")

    factory = _Factory(source, str(location), root, project, report, src)
    try:
        importer.read(src, factory, opts)
    except OutsideSource as error:
        raise ImportRefused(f"{error} (allow a folder with --allow-read DIR)") from None
    finally:
        factory.close()
        if report.progress is not None:
            report.progress.close()
        report.problems[:0] = src.report_lines()
    if to:
        replay(report.imported + report.skipped, to, progress=progress, options=to_options)
    return report


class _Staging:
    """One run being written: ``<store>/.staging/<import>/run-<n>/run`` and its ``scratch``, on
    the store's disk so that the commit is one rename. Only :meth:`discard` deletes, and only this."""

    def __init__(self, base: Path, number: int, target: Path, source: dict[str, Any], report: ImportReport) -> None:
        self.folder = base / f"run-{number}"
        self.folder.mkdir()
        self.run = self.folder / "run"
        self.scratch = self.folder / "scratch"
        self.scratch.mkdir()
        self.target = target
        self._source = source
        self._report = report

    def commit(self, builder: RunBuilder) -> None:
        """Move the complete run into place, never over anything: if the place is taken (by an
        import of the same source that finished first, or by anything else) the new run is dropped
        and the existing one stays as it is."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if _same_import(self.target, self._source):
            self._report.skipped.append(self.target)
            return
        if os.path.lexists(self.target):
            self._report.problems.append(f"run {self._source.get('id')!r} not imported: {self.target} is "
                                         "taken by something this import did not write; it was left as it is")
            return
        try:
            # os.rename replaces an empty directory on POSIX; renameat2(RENAME_NOREPLACE) has no
            # Python binding, so the check above is the guard (a race leaves the other in place).
            os.rename(self.run, self.target)
        except OSError as error:
            self._report.problems.append(f"run {self._source.get('id')!r} not imported: {error}")
            return
        builder.dir = self.target
        self._report.imported.append(self.target)

    def discard(self) -> None:
        """Remove this run's staging folder: with the import's own, the only thing an import deletes."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _same_import(run_dir: Path, source: Mapping[str, Any]) -> bool:
    """Whether ``run_dir`` is a complete import of this very source (its ``import.json`` says so)."""
    if run_dir.is_symlink() or not (run_dir / _COMPLETE).is_file():
        return False
    try:
        mark = json.loads((run_dir / _COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    found = mark.get("source") if isinstance(mark, dict) else None
    return isinstance(found, dict) and found.get("kind") == source.get("kind") and found.get("id") == source.get("id")


def _remove_abandoned_staging(store: Path) -> None:
    """Staging folders of imports whose process is gone (killed mid-import): only folders with
    our owner file, under ``.staging``."""
    base = store / STAGING
    if not base.is_dir():
        return
    for folder in base.iterdir():
        owner = folder / _OWNER
        if folder.is_symlink() or not owner.is_file():
            continue
        try:
            pid = int(json.loads(owner.read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Factory:
    """The BuilderFactory handed to importers: names runs safely, skips complete ones, stages."""

    def __init__(self, source: str, location: str, root: Path, project: str | None, report: ImportReport,
                 src: Source) -> None:
        self._source, self._location, self._root, self._project = source, location, root, project
        self._report = report
        self._src = src
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(root)
        #: This import's staging folder; its owner file lets a later import remove it if we die.
        self._base = root / STAGING / secrets.token_hex(8)
        self._base.mkdir(parents=True)
        j.write_json_atomic(self._base / _OWNER, {"pid": os.getpid(), "source": source, "location": location})
        src.scratch_root = self._base
        self._runs = 0

    def close(self) -> None:
        """Remove this import's staging folder (what is left of it: runs are renamed out)."""
        shutil.rmtree(self._base, ignore_errors=True)

    def unmapped(self, reason: str, count: int = 1) -> None:
        self._report.unmapped[reason] += count

    def __call__(self, *, source_id: str, name: str, started_at: float, config: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None, source_project: str | None = None) -> RunBuilder | None:
        source, report = self._source, self._report
        source_id = str(source_id)
        run_project = safe_name(self._project or source_project or source, fallback=source)
        run_id = source_run_id(source, source_id)
        run_dir = contained(self._root, Path(run_project, run_id))
        identity = {"kind": source, "id": source_id, "location": self._location}
        if _same_import(run_dir, identity):
            report.skipped.append(run_dir)
            return None
        if os.path.lexists(run_dir):
            report.problems.append(f"run {source_id!r} not imported: {run_dir} is taken by something this "
                                   "import did not write; it was left as it is")
            return None
        start = {
            "run_id": run_id, "project": run_project, "name": str(name), "ts": _number(started_at),
            "config": norm.Redactor().params(self._checked_config(config or {}, source_id)),
            "tags": {**{str(k): str(v) for k, v in (tags or {}).items()}, "imported_from": source,
                     "source_run_id": source_id},
            "backends": ["local"], "options": {}, "journal_version": codec.JOURNAL_VERSION,
            "source": identity,
        }
        self._runs += 1
        staging = _Staging(self._base, self._runs, run_dir, identity, report)
        try:
            return RunBuilder(staging.run, report, start, staging)
        except BaseException:
            staging.discard()
            raise

    def _checked_config(self, config: Mapping[str, Any], source_id: str) -> dict[str, Any]:
        """The run's params, one by one: a param loggerhub refuses (a 5,000-character name, say)
        is skipped and reported, and the others are kept."""
        flat: dict[str, Any] = {}
        for key, value in config.items():
            try:
                flat.update(norm.flatten_params({key: value}))
            except (ValueError, TypeError, RecursionError) as error:
                self._src.skip(f"run {source_id[:80]}", None, f"param {str(key)[:80]!r}: {type(error).__name__}")
        return flat


def _number(value: Any) -> float:
    """A start time from the input: a finite number, else 0."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if number == number and abs(number) != float("inf") else 0.0


def replay(run_dirs: Iterable[Path], to: list[str], *, progress: bool = False,
           options: dict[str, dict[str, Any]] | None = None) -> None:
    """Deliver runs to trackers. Already delivered records are not sent again."""
    from loggerhub.delivery import sync

    for run_dir in run_dirs:
        sync(run_dir, to, progress=progress, options=options)


def importers() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=IMPORTER_GROUP)}


def _importer(source: str) -> Importer:
    found = importers()
    if source not in found:
        raise LookupError(
            f"no importer for {source!r}. Installed importers: {', '.join(sorted(found)) or 'none'}. "
            f"Importers come with the tracker plugins: pip install 'loggerhub[{source}]'"
        )
    importer = found[source].load()
    if not isinstance(importer, Importer):
        raise TypeError(f"the {source!r} importer ({found[source].value}) is not a loggerhub_hookspecs Importer")
    return importer


def _loaded_importers() -> dict[str, Importer]:
    """The installed importers that load, for the CLI's per-source options."""
    loaded = {}
    for name, entry_point in sorted(importers().items()):
        with contextlib.suppress(ImportError):
            importer = entry_point.load()
            if isinstance(importer, Importer):
                loaded[name] = importer
    return loaded


def add_parser(commands: Any) -> None:
    """``loggerhub import SOURCE [PATH] [options]``: the CLI over :func:`import_runs`. Each
    installed importer is a sub-command with its own options (``Importer.options``)."""
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", help="the loggerhub project (default: the source's)")
    common.add_argument("--to", help="comma-separated trackers to replay the imported runs into")
    common.add_argument("--option", action="append", default=[], metavar="TRACKER.KEY=VALUE",
                        help="an option of a tracker in --to, e.g. mlflow.tracking_uri=http://127.0.0.1:5000")
    common.add_argument("--allow-read", action="append", default=[], metavar="DIR",
                        help="also read files the input names under DIR (reported); by default only "
                             "files inside the source are read")
    common.add_argument("--limit", action="append", default=[], metavar="NAME=SIZE",
                        help="raise a size limit, e.g. file_bytes=16G (see docs/migrating-off-neptune.md)")
    parser = commands.add_parser(
        "import", help="import runs from another tracker's files or server into the run store",
        description="Import runs, keeping steps, timestamps, params, media, artifacts, names, tags "
                    "and status; re-importing the same source changes nothing.")
    sources = parser.add_subparsers(title="sources", metavar="SOURCE", dest="source")
    for name, importer in _loaded_importers().items():
        sub = sources.add_parser(name, parents=[common], help=f"import from {name}")
        sub.add_argument("path", nargs="?", help=importer.location_help)
        for option in importer.options:
            sub.add_argument(option.flag, dest=f"source_{option.name}", metavar=option.metavar, help=option.help)
        sub.set_defaults(handler=_cmd_import, importer_options=[o.name for o in importer.options],
                         location_option=importer.location_option)
    parser.set_defaults(handler=_cmd_import, importer_options=[], location_option=None)


def _cmd_import(args: Any) -> int:
    import sys

    from loggerhub.config import tracker_options

    if not getattr(args, "source", None):
        raise LookupError(f"name the SOURCE to import from: one of {', '.join(sorted(importers())) or 'none'}")
    options = {name: getattr(args, f"source_{name}") for name in args.importer_options
               if getattr(args, f"source_{name}", None) is not None}
    stand_in = args.location_option
    location = args.path or (options.pop(stand_in, None) if stand_in else None)
    if not location:
        raise ValueError("give the PATH to import" + (f" (or --{stand_in.replace('_', '-')})" if stand_in else ""))
    to = [name.strip() for name in args.to.split(",")] if args.to else None
    try:
        report = import_runs(args.source, location, dir=args.dir, project=args.project, to=to, options=options,
                             to_options=tracker_options(args.option), progress=sys.stderr.isatty(),
                             limits=Limits.parse(args.limit), allow_read=args.allow_read)
    except ImportRefused as error:
        print(f"loggerhub: import refused: {clean(error)}", file=sys.stderr)
        return 1
    except (LookupError, ValueError, OSError, TypeError) as error:
        # The message may quote the input (a path, a name): printed through the one sanitiser.
        print(f"loggerhub: error: {clean(error)}", file=sys.stderr)
        return 1
    print(report.summary())
    for run_dir in report.imported + report.skipped:
        print(f"  {clean(run_dir)}")
    return 0
