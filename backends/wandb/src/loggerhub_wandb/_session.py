"""One loggerhub run in W&B: a ``wandb.init`` run, offline by default.

Imported only by a delivery worker (the kit imports ``session_path`` when a run starts).

Steps. W&B drops a history row whose ``step=`` is lower than the run's current step. loggerhub
steps may go back (a resumed trainer, a validation logged late), so W&B's own ``_step`` is not the
user's step here: it is this backend's row counter, increasing by construction, and the user's
step goes into every row as ``loggerhub/step``, the x-axis that ``define_metric`` gives every
key. Nothing is dropped, and charts plot each point at its logged step.

Redelivery. A metric point or a media record is identified by its key, step and logged time.
loggerhub redelivers at most the records of one hook call: after a failed call (retried in the
same session), or when the delivery died between a hook's return and the offset commit (a new
session). A retried call skips what it already wrote; a new session reads the identities of the
last rows of the run's earlier ``.wandb`` files and skips those. So no row is written twice.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wandb
from wandb.proto import wandb_internal_pb2

from loggerhub_hookspecs import (
    ArtifactKind,
    ArtifactRecord,
    Box,
    ConsoleRecord,
    FigureRecord,
    ImageRecord,
    MetricPoint,
    ParamValue,
    Rejected,
    RunContext,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TableRole,
    TextRecord,
)
from loggerhub_hookspecs.kit import TrackerSession
from loggerhub_wandb import datastore, keys, reader

OPTION_NAMES = ("mode", "project", "entity", "dir", "group")
MODES = ("offline", "online", "disabled")
#: How often wandb-core writes its buffer to the .wandb file, and how long a hook waits for it.
FLUSH_SECONDS = 0.05
WRITE_TIMEOUT = 60.0
#: How many item identities of earlier parts are kept: more than one hook call ever delivers.
RECENT_ITEMS = 100_000
#: A summary counter that marks the end of each delivered record in the .wandb file.
BARRIER = keys.reserved("delivered")
#: W&B marks a run failed for any non-zero exit code; 130 is the shell's "interrupted".
EXIT_CODES = {Status.FINISHED: 0, Status.FAILED: 1, Status.KILLED: 130}
BOX_GROUP = "predictions"
CONFUSION_COLUMNS = ("Actual", "Predicted", "nPredictions")
CONFUSION_SPEC = "wandb/confusion_matrix/v1"
#: The identities of a system sample and of console lines, for the redelivery check: stats and
#: output records carry their time (to the nanosecond) and no key or step.
STATS, CONSOLE = "<stats>", "<console:{}>"
#: wandb's record classes (generated per protobuf version, so untyped here).
pb: Any = wandb_internal_pb2

_PROJECT_FORBIDDEN = re.compile(r"[/\\#?%:]")
_ARTIFACT_FORBIDDEN = re.compile(r"[^A-Za-z0-9_.-]+")
_SAFE_ID = re.compile(r"^[a-z0-9_-]{1,64}$")


def wandb_run_id(run_id: str) -> str:
    """The W&B run id of a loggerhub run: the id itself when W&B takes it as it is, else a slug
    of it with a hash of the whole id, so that two loggerhub runs never share a W&B run."""
    if _SAFE_ID.match(run_id):
        return run_id
    slug = re.sub(r"[^a-z0-9_-]+", "-", run_id.lower()).strip("-")[:40] or "run"
    return f"{slug}-{hashlib.sha256(run_id.encode()).hexdigest()[:10]}"


def artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``; ``/`` becomes ``-``."""
    return (_ARTIFACT_FORBIDDEN.sub("-", name).strip("-") or "artifact")[:128]


@dataclass(frozen=True)
class Settings:
    mode: str
    project: str
    entity: str | None
    dir: Path
    group: str | None
    run_id: str


def resolve(run: RunInfo, state: Mapping[str, Any]) -> Settings:
    """Where the run goes. A resumed run keeps what its first delivery chose (the state); else a
    loggerhub option, else W&B's environment variable, else the default. A bad option is reported
    and replaced by its default: options are frozen in the journal, so failing would block the
    run's delivery for good."""
    options = dict(run.options)
    for name in sorted(set(options) - set(OPTION_NAMES)):
        _warn(f"ignoring unknown option {name!r} (known: {', '.join(OPTION_NAMES)})")

    def pick(option: str, variable: str) -> Any:
        if state.get(option) not in (None, ""):
            return state[option]
        if options.get(option) not in (None, ""):
            return options[option]
        return os.environ.get(variable) or None

    mode = pick("mode", "WANDB_MODE")
    if mode is None:
        # WANDB_API_KEY is read by wandb itself; here only whether it is set chooses the default.
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    mode = str(mode).lower()
    if mode == "dryrun":  # W&B's older name for offline
        mode = "offline"
    if mode not in MODES:
        _warn(f"mode must be one of {', '.join(MODES)}, got {mode!r}; using offline")
        mode = "offline"
    project = str(pick("project", "WANDB_PROJECT") or run.project)
    if _PROJECT_FORBIDDEN.search(project) or len(project) > 128:
        fixed = _PROJECT_FORBIDDEN.sub("-", project)[:128]
        _warn(f"W&B project names cannot contain / \\ # ? % : or exceed 128 characters: {project!r} -> {fixed!r}")
        project = fixed
    entity = pick("entity", "WANDB_ENTITY")
    folder = Path(str(pick("dir", "WANDB_DIR") or Path.cwd())).expanduser().absolute()
    group = pick("group", "WANDB_RUN_GROUP")
    run_id = str(state.get("id") or wandb_run_id(run.run_id))
    return Settings(mode, project, str(entity) if entity else None, folder, str(group) if group else None, run_id)


def _warn(message: str) -> None:
    print(f"loggerhub[wandb]: {message}", file=sys.stderr, flush=True)


class WandbSession(TrackerSession):
    """A W&B run opened with ``resume="allow"`` and the id derived from the loggerhub run id:
    every delivery of one loggerhub run writes to the same W&B run (offline: one more run
    directory of that id, which ``wandb sync`` uploads into it)."""

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        super().__init__(run, state, resumed=resumed)
        settings = resolve(run, state)
        settings.dir.mkdir(parents=True, exist_ok=True)
        state.update(mode=settings.mode, project=settings.project, entity=settings.entity,
                     dir=str(settings.dir), group=settings.group, id=settings.run_id)
        self.settings = settings
        #: identities of the last items in earlier parts; of the items the failing call wrote
        self._earlier: set[tuple[str, int, float]] = set()
        self._written: set[tuple[str, int, float]] = set()
        self._retrying = False
        self._next_row = self._earlier_parts()
        # A wandb service inherited from the trainer (or any parent that used wandb) would hold
        # this run: if this delivery died, that service would keep the run "in use" and no later
        # delivery could resume it. Each delivery process starts its own service instead.
        os.environ.pop(wandb.env.SERVICE, None)
        self._wb = wandb.init(
            project=settings.project, entity=settings.entity, id=settings.run_id, name=run.name,
            # A rank group (per_rank=True) is W&B's own run group, each rank a job type in it.
            group=run.group or settings.group, job_type=None if run.rank is None else f"rank-{run.rank}",
            tags=_tags(run.tags), dir=str(settings.dir), mode=settings.mode,  # type: ignore[arg-type]
            resume="allow", reinit="create_new",
            settings=wandb.Settings(
                # The delivery process's console, host metrics, code and environment are not the
                # trainer's: loggerhub's own records carry those.
                console="off", x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                x_save_requirements=False, disable_git=True, save_code=False, silent=True,
                # wandb-core writes the .wandb file from a buffer, every 15 s by default: a hook
                # waits for its records to be written (see _barrier), so write them promptly.
                x_transaction_log_flush_interval=FLUSH_SECONDS,
            ),
        )
        self._tail = None if settings.mode == "disabled" else datastore.Tail(self._wb.settings.sync_file)
        self._barriers = 0
        # Online, a resumed W&B run continues after the steps its server holds.
        self._next_row = max(self._next_row, int(getattr(self._wb, "starting_step", 0) or 0))
        self._wb.define_metric(keys.STEP, hidden=True)
        self._wb.define_metric(keys.FIGURE, hidden=True)
        self._wb.define_metric("*", step_metric=keys.STEP)
        self._wb.summary.update({keys.reserved("run_id"): run.run_id, keys.reserved("project"): run.project,
                                 keys.reserved("started_at"): run.started_at})
        if run.group is not None:
            self._wb.summary.update({keys.reserved("group"): run.group, keys.reserved("rank"): run.rank,
                                     keys.reserved("world_size"): run.world_size})

    def _earlier_parts(self) -> int:
        """The next W&B step after this run's earlier run directories; remembers the identities
        of their last items."""
        if self.settings.mode == "disabled":
            return 0
        folder = self.settings.dir / "wandb"
        parts = reader.run_dirs(folder, self.settings.run_id)
        latest = reader.RUN_DIR.match(parts[-1].name) if parts else None
        if latest and latest.group(1) == time.strftime("%Y%m%d_%H%M%S"):
            # W&B names run directories by the second they start in: never reuse one.
            time.sleep(1.05 - time.time() % 1)
        next_row = 0
        recent: collections.deque[tuple[str, int, float]] = collections.deque(maxlen=RECENT_ITEMS)
        for part in parts:
            path = reader.wandb_file(part)
            scan = datastore.Scan()
            try:
                # Streamed, history records only: a long run's earlier parts never sit in memory.
                for record in datastore.iter_records(path, scan) if path is not None else ():
                    kind = record.WhichOneof("record_type")
                    if kind == "stats":
                        recent.append((STATS, 0, record.stats.timestamp.ToNanoseconds()))
                    elif kind == "output_raw":
                        stream = "stderr" if record.output_raw.output_type == record.output_raw.STDERR else "stdout"
                        recent.append((CONSOLE.format(stream), 0, record.output_raw.timestamp.ToNanoseconds()))
                    if kind != "history":
                        continue
                    values = {(list(item.nested_key) or [item.key])[0]: item.value_json for item in record.history.item}
                    step: Any = json.loads(values.get(keys.STEP, "null"))
                    stamp: Any = json.loads(values.get("_timestamp", "null"))
                    recent.extend((key, step, stamp) for key in values if keys.from_tracker(key) is not None)
                    next_row = max(next_row, int(json.loads(values.get("_step", "-1"))) + 1)
            except (OSError, ValueError) as error:
                _warn(f"cannot read the earlier part {part.name}: {error}")
        self._earlier = set(recent)
        return next_row

    # -- records ------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        with self._delivery():
            self._wb.config.update({keys.to_tracker(key): value for key, value in params.items()},
                                   allow_val_change=True)

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        with self._delivery():
            row: dict[str, Any] = {}
            ident: tuple[int, float, int | None] = (0, 0.0, None)
            for point in points:
                key = keys.to_tracker(point.key)
                if self._take(key, point.step, point.timestamp) is None:
                    continue
                if row and (ident != (point.step, point.timestamp, point.epoch) or key in row):
                    self._log(row, *ident)
                    row = {}
                ident = (point.step, point.timestamp, point.epoch)
                row[key] = point.value
            if row:
                self._log(row, *ident)

    def log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        interface = self._interface()
        with self._delivery():
            samples: dict[float, dict[str, float]] = {}
            unknown = []
            for point in points:
                native = keys.stats_name(point.key)
                if native is None:
                    unknown.append(point)
                else:
                    samples.setdefault(point.timestamp, {})[native[0]] = point.value * native[1]
            for timestamp, items in samples.items():
                if interface is None or self._take(STATS, 0, _nanoseconds(timestamp)) is None:
                    continue
                # The record wandb's own monitor writes (interface.publish_stats), with the
                # sample's time rather than the delivery's: the App's System section.
                stats = pb.StatsRecord(stats_type=pb.StatsRecord.StatsType.SYSTEM)
                stats.timestamp.FromNanoseconds(_nanoseconds(timestamp))
                for name, value in items.items():
                    stats.item.add(key=name, value_json=json.dumps(value))
                interface._publish(pb.Record(stats=stats))
                self._written.add((STATS, 0, _nanoseconds(timestamp)))
        if unknown:
            # A series a newer loggerhub samples goes where any metric goes.
            self.log_metrics(unknown)

    def log_console(self, output: ConsoleRecord) -> None:
        if output.stream not in ("stdout", "stderr"):
            raise Rejected(f"console stream {output.stream!r}: expected stdout or stderr")
        interface = self._interface()
        with self._delivery():
            ident = (CONSOLE.format(output.stream), 0, _nanoseconds(output.timestamp))
            if interface is None or self._take(*ident) is None:
                return
            # What wandb's own console capture sends (interface.publish_output_raw); wandb-core
            # writes it to output.log, the App's Logs tab.
            kind = pb.OutputRawRecord.STDERR if output.stream == "stderr" else pb.OutputRawRecord.STDOUT
            record = pb.OutputRawRecord(output_type=kind, line="".join(line + "\n" for line in output.lines))
            record.timestamp.FromNanoseconds(ident[2])
            interface._publish_output_raw(record)
            self._written.add(ident)

    def log_context(self, context: RunContext) -> None:
        interface = self._interface()
        if interface is None:
            return
        with self._delivery():
            # The environment record wandb's own metadata collection sends (the run's metadata:
            # host, OS, Python, program and arguments, git commit and remote), and the packages,
            # which wandb-core writes as requirements.txt in the run's files.
            environment = pb.EnvironmentRecord(
                os=context.os, python=context.python_version, host=context.hostname,
                executable=context.python_executable, args=list(context.command[1:]),
                program=context.command[0] if context.command else "", gpu_count=len(context.gpus),
                gpu_type=context.gpus[0] if context.gpus else "", cpu_count=context.cpu_count or 0)
            environment.started_at.FromNanoseconds(_nanoseconds(context.timestamp))
            if context.git is not None:
                environment.git.commit = context.git.commit
                environment.git.remote_url = context.git.remote or ""
            interface.publish_environment(environment)
            packages = pb.PythonPackagesRequest()
            for name, version in sorted(context.packages.items()):
                packages.package.add(name=name, version=version)
            interface._publish_python_packages(packages)
            git = context.git
            summary: dict[str, Any] = {keys.reserved("context/cpu"): context.cpu,
                                       keys.reserved("context/environment"): dict(context.environment)}
            if git is not None:
                summary.update({keys.reserved("git/branch"): git.branch, keys.reserved("git/dirty"): git.dirty,
                                keys.reserved("git/untracked"): list(git.untracked),
                                keys.reserved("git/diff_truncated"): git.diff_truncated})
            self._wb.summary.update(summary)
            if git is not None and git.diff_path is not None:
                if not git.diff_path.is_file():
                    raise Rejected(f"git diff {git.diff_path} is gone from the run directory")
                # Where wandb's own code saving puts the uncommitted changes: diff.patch in the
                # run's files.
                target = Path(self._wb.dir) / "diff.patch"
                target.write_bytes(git.diff_path.read_bytes())
                self._wb.save(str(target), base_path=self._wb.dir, policy="now")

    def _interface(self) -> Any:
        """The run's interface to wandb-core, or None in disabled mode (which keeps nothing).
        wandb's run has no public call for stats, raw output or the environment: its own
        monitor, console capture and metadata collection use this interface."""
        return self._wb._interface

    def log_image(self, image: ImageRecord) -> None:
        with self._delivery():
            key = keys.to_tracker(image.key)
            if self._take(key, image.step, image.timestamp) is None:
                return
            boxes = {BOX_GROUP: box_data(image.boxes)} if image.boxes else None
            media = wandb.Image(_media(image.path, image.key), caption=image.caption, boxes=boxes)  # type: ignore[arg-type]
            self._log({key: media}, image.step, image.timestamp, image.epoch)

    def log_figure(self, figure: FigureRecord) -> None:
        with self._delivery():
            key = keys.to_tracker(figure.key)
            if self._take(key, figure.step, figure.timestamp) is None:
                return
            # The PNG rendered when it was logged: W&B shows figures as images (its plotly
            # conversion of matplotlib figures loses most of them).
            row = {key: wandb.Image(_media(figure.path, figure.key)), keys.FIGURE: 1}
            self._log(row, figure.step, figure.timestamp, figure.epoch)

    def log_text(self, text: TextRecord) -> None:
        with self._delivery():
            key = keys.to_tracker(text.key)
            if self._take(key, text.step, text.timestamp) is not None:
                self._log({key: text.text}, text.step, text.timestamp, None)

    def log_table(self, table: TableRecord) -> None:
        with self._delivery():
            key = keys.to_tracker(table.key)
            confusion = table.role is TableRole.CONFUSION_MATRIX
            # W&B keeps a chart's data under "<key>_table" in the history.
            if self._take(f"{key}_table" if confusion else key, table.step, table.timestamp) is None:
                return
            value: Any
            if confusion:
                value = confusion_chart(key, table)
            else:
                value = wandb.Table(columns=list(table.columns), data=[list(row) for row in table.rows],
                                    allow_mixed_types=True)
            self._log({key: value}, table.step, table.timestamp, None)

    def log_artifact(self, artifact: ArtifactRecord) -> None:
        with self._delivery():
            self._upload(artifact, artifact.kind.value, ["latest"])

    def log_checkpoint(self, checkpoint: ArtifactRecord) -> None:
        with self._delivery():
            self._upload(checkpoint, ArtifactKind.MODEL.value, ["latest", f"step-{checkpoint.step}"])

    # -- lifecycle ------------------------------------------------------------------------------

    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        summary: dict[str, Any] = {keys.reserved("status"): status.value, keys.reserved("ended_at"): ended_at}
        if error is not None:
            summary.update({keys.reserved("error/type"): error.type, keys.reserved("error/message"): error.message,
                            keys.reserved("error/traceback"): error.traceback})
        self._wb.summary.update(summary)
        self._wb.finish(exit_code=EXIT_CODES[status])

    def close(self) -> None:
        # Released without an end: tell W&B the run will come back, as a preempted job does. Its
        # exit code says KILLED until a later delivery (resume="allow") ends it for real.
        with contextlib.suppress(Exception):
            self._wb.mark_preempting()
        self._wb.finish(exit_code=EXIT_CODES[Status.KILLED])

    # -- plumbing -------------------------------------------------------------------------------

    def _take(self, key: str, step: int, timestamp: float) -> tuple[str, int, float] | None:
        """The item's identity, or None when an earlier delivery of it already wrote it."""
        ident = (key, step, timestamp)
        if ident in self._earlier or (self._retrying and ident in self._written):
            return None
        return ident

    @contextlib.contextmanager
    def _delivery(self) -> Iterator[None]:
        try:
            yield
            self._barrier()
        except BaseException:
            self._retrying = True  # loggerhub calls again with the same record
            raise
        self._retrying = False
        self._written.clear()

    def _barrier(self) -> None:
        """Return once wandb-core has written everything sent so far into the .wandb file, so that
        what loggerhub counts as delivered survives the delivery process being killed. wandb has no
        flush call; wandb-core writes records in order, so a summary update sent last and seen in
        the file marks all of them."""
        if self._tail is None:
            return
        self._barriers += 1
        self._wb.summary[BARRIER] = self._barriers
        wanted = json.dumps(self._barriers)
        deadline = time.monotonic() + WRITE_TIMEOUT
        while True:
            for record in self._tail.poll():
                if record.WhichOneof("record_type") == "summary" and any(
                        (list(item.nested_key) or [item.key]) == [BARRIER] and item.value_json == wanted
                        for item in record.summary.update):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"wandb-core did not write the run's .wandb file within {WRITE_TIMEOUT:.0f} s")
            time.sleep(FLUSH_SECONDS / 5)

    def _log(self, values: dict[str, Any], step: int, timestamp: float, epoch: int | None) -> None:
        row = {**values, keys.STEP: step, "_timestamp": timestamp}
        if epoch is not None:
            row[keys.EPOCH] = epoch
        self._wb.log(row, step=self._next_row, commit=True)
        self._next_row += 1
        self._written.update((key if not _is_chart(value) else f"{key}_table", step, timestamp)
                             for key, value in values.items() if keys.from_tracker(key) is not None)

    def _upload(self, record: ArtifactRecord, kind: str, aliases: list[str]) -> None:
        if not record.path.exists():
            raise Rejected(f"artifact {record.name!r}: its copy in the run directory is gone ({record.path})")
        artifact = wandb.Artifact(artifact_name(record.name), type=kind, metadata={
            "loggerhub/name": record.name, "loggerhub/step": record.step, "loggerhub/timestamp": record.timestamp,
            "loggerhub/kind": record.kind.value, "loggerhub/is_dir": record.is_dir})
        # "immutable": W&B references loggerhub's copy instead of staging a second one; the copy
        # in the run directory never changes.
        if record.is_dir:
            artifact.add_dir(str(record.path), policy="immutable")
        else:
            artifact.add_file(str(record.path), name=record.name.rsplit("/", 1)[-1], policy="immutable")
        self._wb.log_artifact(artifact, aliases=aliases)


def _nanoseconds(timestamp: float) -> int:
    return round(timestamp * 1e9)


def _is_chart(value: Any) -> bool:
    return isinstance(value, wandb.plot.CustomChart)


def _media(path: Path, key: str) -> str:
    if not path.is_file():
        raise Rejected(f"image {key!r}: its file in the run directory is gone ({path})")
    return str(path)


def _tags(tags: Mapping[str, str]) -> list[str]:
    # W&B tags are plain strings of at most 64 characters.
    return [(f"{key}:{value}" if value else key)[:64] for key, value in tags.items()]


def box_data(boxes: Sequence[Box]) -> dict[str, Any]:
    """W&B's native box annotation: pixel positions, class ids with labels, the label as caption."""
    given = [box.class_id for box in boxes if box.class_id is not None]
    next_id = max(given, default=-1) + 1
    by_label: dict[str | None, int] = {}
    labels: dict[int, str] = {}
    entries = []
    for box in boxes:
        class_id = box.class_id
        if class_id is None:
            if box.label not in by_label:
                by_label[box.label] = next_id
                next_id += 1
            class_id = by_label[box.label]
        labels.setdefault(class_id, box.label if box.label is not None else str(class_id))
        entry: dict[str, Any] = {
            "position": {"minX": box.x0, "maxX": box.x1, "minY": box.y0, "maxY": box.y1},
            "domain": "pixel", "class_id": class_id,
        }
        if box.label is not None:
            entry["box_caption"] = box.label
        if box.score is not None:
            entry["scores"] = {"score": box.score}
        entries.append(entry)
    return {"box_data": entries, "class_labels": labels}


def confusion_chart(key: str, table: TableRecord) -> Any:
    """W&B's confusion-matrix chart (the table ``wandb.plot.confusion_matrix`` builds)."""
    labels = list(table.columns)
    data = [[labels[i], labels[j], count] for i, row in enumerate(table.rows) for j, count in enumerate(row)]
    return wandb.plot_table(CONFUSION_SPEC, wandb.Table(columns=list(CONFUSION_COLUMNS), data=data),
                            dict(zip(CONFUSION_COLUMNS, CONFUSION_COLUMNS, strict=True)), {"title": key})
