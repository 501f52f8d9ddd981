"""One loggerhub run delivered into one Neptune 1.x run. Imports the Neptune client.

The layout this writes (see README.md for the why):

* ``parameters/<key>``: params, one atom each
* ``<key>``: metrics (float series), images and figures (image series), text (string series),
  tables (a CSV file)
* ``models/<name>``: checkpoints and model artifacts; ``artifacts/<name>``: other artifacts
* ``loggerhub/...``: run_id, part, status, start and end time, the failure, and what Neptune
  cannot hold in the fields above
* ``sys/failed`` and ``monitoring/traceback``: a run that did not finish, where Neptune's own
  client puts an uncaught exception
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob
import io
import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import neptune
from neptune import attributes as attrs
from neptune.attributes.constants import MONITORING_TRACEBACK_ATTRIBUTE_PATH, SYSTEM_FAILED_ATTRIBUTE_PATH
from neptune.attributes.namespace import Namespace
from neptune.exceptions import FileNotFound, MetadataInconsistency, OperationNotSupported
from neptune.metadata_containers.run import generate_monitoring_namespace
from neptune.types import File, FileSet, GitRef
from neptune.types.series import FloatSeries

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
    TextRecord,
)
from loggerhub_hookspecs.kit import TrackerSession, box_dict, draw_boxes
from loggerhub_neptune import offline
from loggerhub_neptune.keys import KeyCollision, KeyMap, monitoring_series

MODES = ("async", "sync", "offline", "debug")
OPTIONS = frozenset({"project", "mode", "data_dir", "capture_hardware_metrics", "git_ref"})
#: neptune ignores a longer custom_run_id (neptune/internal/utils/limits.py).
CUSTOM_RUN_ID_MAX = 36
#: neptune truncates longer string series values (neptune/types/series/string_series.py).
STRING_SERIES_MAX = 1000
#: neptune blanks larger images (neptune/internal/utils/limits.py).
IMAGE_MAX_BYTES = 32 * 1024 * 1024
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

PARAMS = "parameters"
MODELS = "models"
ARTIFACTS = "artifacts"
OWN = "loggerhub"
BOXES = f"{OWN}/boxes"
NONFINITE = f"{OWN}/nonfinite"
LONG_TEXTS = f"{OWN}/long_texts"
FIGURES = f"{OWN}/figures"
STARTED_AT = f"{OWN}/started_at"
ENDED_AT = f"{OWN}/ended_at"
ERROR_TYPE = f"{OWN}/error/type"
ERROR_MESSAGE = f"{OWN}/error/message"
GROUP, RANK, WORLD_SIZE = f"{OWN}/group", f"{OWN}/rank", f"{OWN}/world_size"
#: Neptune's group tags: the runs table groups runs by them by default.
GROUP_TAGS = "sys/group_tags"
#: Where Neptune's client writes the machine's name (``sys/hostname``) and, with
#: ``dependencies="infer"``, the installed packages and, for a dirty checkout, ``git diff HEAD``.
HOSTNAME = "sys/hostname"
REQUIREMENTS = "source_code/requirements"
DIFF = "source_code/diff"
#: The git state: Neptune's own ``source_code/git`` is made by its server from what the client
#: sends when it creates a run, which an offline run has no way to carry.
GIT = f"{OWN}/git"
CONTEXT = f"{OWN}/context"


class _Conflict(Exception):
    """A key whose Neptune field already exists with another type, or as a namespace."""


@dataclass(frozen=True)
class Settings:
    mode: str
    project: str | None
    data_directory: Path  # NEPTUNE_DATA_DIRECTORY, i.e. the ``.neptune`` folder itself
    capture_hardware_metrics: bool
    git_ref: bool

    @classmethod
    def resolve(cls, options: Mapping[str, Any], state: Mapping[str, Any]) -> Settings:
        """The settings of a delivery. Precedence, highest first: what a resumed run started with
        (``state``), the loggerhub option, Neptune's environment variable, the default."""
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise Rejected(f"unknown neptune option(s) {unknown}; known: {sorted(OPTIONS)}")
        if state.get("mode"):
            mode, source = state["mode"], "the mode this run started with"
        elif options.get("mode"):
            mode, source = options["mode"], "neptune option mode"
        elif os.environ.get("NEPTUNE_MODE"):
            mode, source = os.environ["NEPTUNE_MODE"], "NEPTUNE_MODE"
        else:
            mode = "async" if os.environ.get("NEPTUNE_API_TOKEN") else "offline"
            source = "default"
        if mode not in MODES:
            raise Rejected(f"{source} is {mode!r}: expected one of {', '.join(MODES)}")
        project = options.get("project") or os.environ.get("NEPTUNE_PROJECT") or state.get("project")
        if mode in ("async", "sync") and not project:
            # Not Rejected: setting NEPTUNE_PROJECT and running `loggerhub sync` fixes it.
            raise ValueError(f"neptune mode {mode!r} needs a project: set options.project or NEPTUNE_PROJECT")
        # Debug mode keeps nothing, yet the client still creates an empty ``sync`` folder there.
        if state.get("data_directory"):
            data_directory = Path(state["data_directory"])
        elif options.get("data_dir"):
            data_directory = Path(options["data_dir"]).expanduser().absolute() / ".neptune"
        else:
            data_directory = Path(os.environ.get("NEPTUNE_DATA_DIRECTORY", ".neptune")).absolute()
        return cls(
            mode=mode,
            project=project,
            data_directory=data_directory,
            capture_hardware_metrics=bool(options.get("capture_hardware_metrics", False)),
            git_ref=bool(options.get("git_ref", False)),
        )


def custom_run_id(run_id: str) -> str:
    """loggerhub's run id, or a stable 36-character stand-in when Neptune would ignore it."""
    if len(run_id) <= CUSTOM_RUN_ID_MAX:
        return run_id
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"loggerhub:{run_id}"))


class _Steps:
    """Which operations of the record being delivered already ran.

    A hook that fails half-way is called again with the same record; this keeps the retry from
    appending the first half twice. It is cleared when a hook completes.
    """

    def __init__(self) -> None:
        self._record: object = None
        self._done: set[str] = set()

    def start(self, record: object) -> None:
        if record != self._record:
            self._record, self._done = record, set()

    def once(self, name: str, action: Callable[[], object]) -> None:
        if name not in self._done:
            action()
            self._done.add(name)

    def finish(self) -> None:
        self._record, self._done = None, set()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


class NeptuneSession(TrackerSession):
    """The Neptune run of one loggerhub run, in one delivery process.

    An offline run cannot be reopened, so each session after a resume writes a new offline
    container, a "part" of the run. When the delivery before it died between the client's
    acknowledgement and loggerhub's offset commit, its last record comes again; the session reads
    the last value of every series from the run's previous container and skips the points that
    are already there, so the redelivery leaves no trace (see README, "Delivery guarantees").
    """

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        super().__init__(run, state, resumed=resumed)
        settings = self.settings = Settings.resolve(run.options, state)
        self.keys = KeyMap()
        self._steps = _Steps()
        self._figures: set[str] = set()
        #: The last value of each series in the run's previous container, by path: while set, a
        #: point equal to it (and the points before it in the same call) was delivered already.
        self._delivered: dict[str, tuple[Any, ...]] = {}
        # The client reads this when it creates the run's folder; this process is ours alone.
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(settings.data_directory)
        logging.getLogger("neptune").setLevel(logging.WARNING)  # no banner in the trainer's terminal
        self.neptune_run = self._init_run(settings)
        try:
            self._describe(settings)
        except BaseException:
            self.close()
            raise

    def _init_run(self, settings: Settings) -> Any:
        kwargs: dict[str, Any] = dict(
            mode=settings.mode,
            capture_stdout=False,  # these would capture the delivery process, not the trainer
            capture_stderr=False,
            capture_traceback=False,
            capture_hardware_metrics=settings.capture_hardware_metrics,
            git_ref=None if settings.git_ref else GitRef.DISABLED,
            source_files=[],
        )
        if settings.project:
            kwargs["project"] = settings.project
        if self.resumed and settings.mode in ("async", "sync") and self.state.get("sys_id"):
            return neptune.init_run(with_id=self.state["sys_id"], **kwargs)
        tags = [f"{k}:{v}" if v else k for k, v in self.run.tags.items()]
        return neptune.init_run(custom_run_id=custom_run_id(self.run.run_id), name=self.run.name,
                                tags=tags or None, **kwargs)

    def _describe(self, settings: Settings) -> None:
        run = self.neptune_run
        # With source_files=[] the client still records the running script, loggerhub's delivery
        # module here, which says nothing about the training code.
        for path in ("source_code/entrypoint", "source_code/files"):
            if run.exists(path):
                del run[path]
        state = self.state
        state.update(mode=settings.mode, custom_run_id=custom_run_id(self.run.run_id),
                     data_directory=str(settings.data_directory))
        if settings.project:
            state["project"] = settings.project
        earlier: list[dict[str, Any]] = []
        part = None
        if settings.mode == "offline":
            # The run's containers are found on disk, by loggerhub/run_id, rather than in the
            # state: a delivery may die after creating one and before its state is committed.
            container = run.get_url().rpartition("/")[2]  # "offline/<container id>"
            earlier = [c for c in offline.run_containers(settings.data_directory, self.run.run_id)
                       if c["container_id"] != container]
            part = max((c["part"] for c in earlier), default=0) + 1
        run[f"{OWN}/run_id"] = self.run.run_id
        run[f"{OWN}/project"] = self.run.project
        run[f"{OWN}/status"] = "RUNNING"
        run[STARTED_AT] = _utc(self.run.started_at)
        if self.run.group is not None:
            run[GROUP_TAGS].add([self.run.group])
            run[GROUP] = self.run.group
            if self.run.rank is not None:
                run[RANK] = self.run.rank
            if self.run.world_size is not None:
                run[WORLD_SIZE] = self.run.world_size
        if part is not None:
            # An offline run cannot be reopened: each delivery after a resume is a new container.
            run[f"{OWN}/part"] = part
            if part > 1 and self.run.config:
                # Each part becomes a run of its own when synced; give it the run's config too.
                # Part 1 already holds these, so a key Neptune refuses here loses nothing.
                with contextlib.suppress(Rejected):
                    self.log_params(self.run.config)
        if settings.mode in ("async", "sync"):
            state["sys_id"] = run["sys/id"].fetch()
            state["url"] = run.get_url()
        run.wait(disk_only=True)
        for container in earlier:
            # The redelivered record may have been stored by any earlier delivery (the last one
            # may have died before storing anything), so every part counts, the latest last.
            self._delivered.update(offline.last_series_values(container["dir"]))

    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        run = self.neptune_run
        run[f"{OWN}/status"] = status.value
        run[ENDED_AT] = _utc(ended_at)
        run[SYSTEM_FAILED_ATTRIBUTE_PATH] = status is not Status.FINISHED
        if error is not None:
            run[ERROR_TYPE] = error.type
            run[ERROR_MESSAGE] = error.message
            # Where the client itself logs an uncaught exception: a header line, then the frames.
            lines = [f"{error.type}: {error.message}"[:STRING_SERIES_MAX]]
            lines += [line[:STRING_SERIES_MAX] for line in error.traceback.splitlines() if line.strip()]
            run[MONITORING_TRACEBACK_ATTRIBUTE_PATH].extend(lines)
        run.wait(disk_only=True)
        run.stop()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.neptune_run.stop()

    # -- data -------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        def body() -> list[str]:
            refused = []
            for key, value in params.items():
                try:
                    path = self.keys.path(key, PARAMS)
                    stored = _param_value(value)
                    self._check(path, _ATOM_TYPES[type(stored)], replace=True)
                except (KeyCollision, _Conflict) as error:
                    refused.append(f"param {key!r}: {error}")
                    continue
                self._steps.once(path, functools.partial(self._assign, path, stored))
            return refused

        self._deliver(params, body)

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        def body() -> list[str]:
            groups: dict[str, list[MetricPoint]] = {}
            refused = []
            for point in points:
                try:
                    groups.setdefault(self.keys.path(point.key), []).append(point)
                except KeyCollision as error:
                    refused.append(f"metric {point.key!r}: {error}")
            for path, series in groups.items():
                key = series[0].key
                finite = [p for p in series if math.isfinite(p.value)]
                other = [p for p in series if not math.isfinite(p.value)]
                try:
                    if finite:
                        self._check(path, attrs.FloatSeries)
                    if other:
                        companion = self.keys.path(key, NONFINITE)
                        self._check(companion, attrs.StringSeries)
                except (KeyCollision, _Conflict) as error:
                    refused.append(f"metric {key!r}: {error}")
                    continue
                finite = self._new(path, finite)
                other = self._new(companion, other) if other else other
                if finite:
                    self._steps.once(path, functools.partial(
                        self._extend, path, [x.value for x in finite], finite))
                if other:
                    self._steps.once(companion, functools.partial(
                        self._extend, companion, [_nonfinite(x.value) for x in other], other))
            return refused

        self._deliver(points, body)

    @property
    def monitoring(self) -> str:
        """The run's monitoring namespace, ``monitoring/<hash>`` as Neptune's client names it per
        process; the hash is of loggerhub's run id, so every part of a run writes the same one."""
        return str(generate_monitoring_namespace(self.run.run_id))

    def log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        # The number of GPUs decides Neptune's GPU series names ("gpu" for one, "gpu_0" ...):
        # the context says it; without one, the sample does.
        gpus = self.state.get("gpu_count") or len({p.key.split("/")[2] for p in points
                                                   if p.key.startswith("system/gpu/")})
        native = [(p, monitoring_series(p.key, gpus)) for p in points]

        def body() -> list[str]:
            refused = []
            for point, series in native:
                if not math.isfinite(point.value):
                    refused.append(f"system metric {point.key!r}: {point.value} is not a sample")
                    continue
                if series is None:
                    # A series a newer loggerhub samples goes where any metric goes.
                    path, value = self.keys.path(point.key), point.value
                else:
                    path, value = f"{self.monitoring}/{series.name}", point.value * series.factor
                    if self.neptune_run.get_attribute(path) is None:
                        percent = series.unit == "%"
                        self._steps.once(f"config {path}", functools.partial(self._assign, path, FloatSeries(
                            [], min=0.0 if percent else None, max=100.0 if percent else None, unit=series.unit)))
                self._check(path, attrs.FloatSeries)
                if self._new_sample(path, point):
                    # No step for Neptune's series, like its own monitor: the server numbers them.
                    self._steps.once(path, functools.partial(
                        self.neptune_run[path].extend, [value], steps=None if series else [point.step],
                        timestamps=[point.timestamp]))
            return refused

        self._deliver(points, body)

    def log_console(self, output: ConsoleRecord) -> None:
        def body() -> list[str]:
            path = f"{self.monitoring}/{output.stream}"
            self._check(path, attrs.StringSeries)
            lines = [line[:STRING_SERIES_MAX] for line in output.lines]
            last = self._delivered.get(path)
            if lines and (last is None or last[1:] != (float(output.timestamp), lines[-1])):
                self._steps.once(path, lambda: self.neptune_run[path].extend(
                    lines, timestamps=[output.timestamp] * len(lines)))
            return []

        if output.stream not in ("stdout", "stderr"):
            raise Rejected(f"console stream {output.stream!r}: expected stdout or stderr")
        self._deliver(output, body)

    def log_context(self, context: RunContext) -> None:
        def body() -> list[str]:
            run = self.neptune_run
            fields: dict[str, Any] = {
                HOSTNAME: context.hostname,
                f"{self.monitoring}/hostname": context.hostname,
                f"{CONTEXT}/command": json.dumps(list(context.command), ensure_ascii=False),
                f"{CONTEXT}/python_version": context.python_version,
                f"{CONTEXT}/python_executable": context.python_executable,
                f"{CONTEXT}/os": context.os,
                f"{CONTEXT}/cpu": context.cpu,
                f"{CONTEXT}/gpus": json.dumps(list(context.gpus), ensure_ascii=False),
                f"{CONTEXT}/environment": json.dumps(dict(context.environment), ensure_ascii=False),
                f"{CONTEXT}/captured_at": _utc(context.timestamp),
            }
            if context.cpu_count is not None:
                fields[f"{CONTEXT}/cpu_count"] = context.cpu_count
            git = context.git
            if git is not None:
                fields.update({f"{GIT}/commit": git.commit, f"{GIT}/dirty": git.dirty,
                               f"{GIT}/untracked": json.dumps(list(git.untracked), ensure_ascii=False),
                               f"{GIT}/diff_truncated": git.diff_truncated})
                if git.branch is not None:
                    fields[f"{GIT}/branch"] = git.branch
                if git.remote is not None:
                    fields[f"{GIT}/remote"] = git.remote
            for path, value in fields.items():
                if isinstance(value, str):
                    value = value[:STRING_SERIES_MAX * 16]  # Neptune's string atoms end at 16384
                self._check(path, _ATOM_TYPES.get(type(value), attrs.Datetime), replace=True)
                self._steps.once(path, functools.partial(self._assign, path, value))
            if context.packages:
                self._check(REQUIREMENTS, attrs.File)
                # As the client's dependencies="infer" uploads them: name==version lines.
                self._steps.once(REQUIREMENTS, lambda: run[REQUIREMENTS].upload(
                    File.from_content(context.requirements())))
            if git is not None and git.diff_path is not None:
                try:
                    patch = git.diff_path.read_bytes()
                except FileNotFoundError as error:
                    raise Rejected(f"git diff {git.diff_path} is gone from the run directory") from error
                self._check(DIFF, attrs.File)
                # The content, as the client's own git tracking uploads it: the op log then holds
                # the diff itself (size-capped by loggerhub), not a path into the run directory.
                self._steps.once(DIFF, lambda: run[DIFF].upload(File.from_content(patch, extension="patch")))
            if context.gpus:
                self.state["gpu_count"] = len(context.gpus)
            return []

        self._deliver(context, body)

    def log_image(self, image: ImageRecord) -> None:
        def body() -> list[str]:
            png = _png(image)
            if len(png) > IMAGE_MAX_BYTES:
                raise Rejected(f"image {image.key!r}: {len(png)} bytes; Neptune holds images up to 32 MiB")
            path = self._path(image.key, attrs.FileSeries)
            if image.boxes:
                boxes_path = self._path(image.key, attrs.StringSeries, BOXES)
                try:
                    png = draw_boxes(png, image.boxes)[0]
                except OSError as error:
                    raise Rejected(f"image {image.key!r}: Pillow cannot read it: {error}") from error
            if self._new(path, [image]):
                self._steps.once("image", lambda: self.neptune_run[path].append(
                    File.from_content(png, extension="png"), step=image.step, timestamp=image.timestamp,
                    name=image.caption))
            if image.boxes:
                # One entry per box keeps each under the 1000-character limit of a string series
                # value; no step, because a series takes one value per step.
                values = [box_json(box, image.step, i) for i, box in enumerate(image.boxes)]
                keep = len(self._new_values(boxes_path, values, image.timestamp))
                values = values[len(values) - keep:]
                if values:
                    self._steps.once("boxes", lambda: self.neptune_run[boxes_path].extend(
                        values, timestamps=[image.timestamp] * len(values)))
            return []

        self._deliver(image, body)

    def log_figure(self, figure: FigureRecord) -> None:
        def body() -> list[str]:
            path = self._path(figure.key, attrs.FileSeries)
            if self._new(path, [figure]):
                self._steps.once("image", lambda: self.neptune_run[path].append(
                    File.from_content(_png(figure), extension="png"), step=figure.step,
                    timestamp=figure.timestamp))
            if path not in self._figures:
                self._check(FIGURES, attrs.StringSet)
                self._steps.once("mark", lambda: self.neptune_run[FIGURES].add([path]))
                self._figures.add(path)
            return []

        self._deliver(figure, body)

    def log_artifact(self, artifact: ArtifactRecord) -> None:
        namespace = MODELS if artifact.kind is ArtifactKind.MODEL else ARTIFACTS
        self._upload(artifact, namespace)

    def log_checkpoint(self, checkpoint: ArtifactRecord) -> None:
        self._upload(checkpoint, MODELS)

    def _upload(self, artifact: ArtifactRecord, namespace: str) -> None:
        def body() -> list[str]:
            source = os.path.abspath(artifact.path)
            if not os.path.exists(source):
                raise Rejected(f"artifact {artifact.name!r}: {source} is gone from the run directory")
            if artifact.is_dir:
                path = self._path(artifact.name, attrs.FileSet, namespace)
                # assign, not upload_files: a re-logged directory replaces the earlier set.
                self._steps.once("upload", lambda: self.neptune_run[path].assign(FileSet([glob.escape(source)])))
            else:
                path = self._path(artifact.name, attrs.File, namespace)
                self._steps.once("upload", lambda: self.neptune_run[path].upload(File(source)))
            return []

        self._deliver(artifact, body)

    def log_text(self, text: TextRecord) -> None:
        def body() -> list[str]:
            path = self._path(text.key, attrs.StringSeries)
            if self._new(path, [text]):
                self._steps.once("text", lambda: self.neptune_run[path].append(
                    text.text[:STRING_SERIES_MAX], step=text.step, timestamp=text.timestamp))
            if len(text.text) > STRING_SERIES_MAX:
                full = f"{self.keys.path(text.key, LONG_TEXTS)}/{text.step}"
                self._check(full, attrs.File)
                self._steps.once("full", lambda: self.neptune_run[full].upload(
                    File.from_content(text.text.encode("utf-8"), extension="txt")))
            return []

        self._deliver(text, body)

    def log_table(self, table: TableRecord) -> None:
        def body() -> list[str]:
            path = self._path(table.key, attrs.File)
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(table.columns)
            writer.writerows(table.rows)
            self._steps.once("table", lambda: self.neptune_run[path].upload(
                File.from_content(out.getvalue(), extension="csv")))
            return []

        self._deliver(table, body)

    # -- helpers ----------------------------------------------------------------------------------

    def _deliver(self, record: object, body: Callable[[], list[str]]) -> None:
        self._steps.start(record)
        try:
            refused = body()
            # Returning acknowledges the record, so it must be in the client's files by then.
            self.neptune_run.wait(disk_only=True)
        except (KeyCollision, _Conflict, MetadataInconsistency, OperationNotSupported, FileNotFound,
                TypeError, ValueError) as error:
            self._done()
            raise Rejected(f"Neptune cannot store this record: {error}") from error
        except Rejected:
            self._done()
            raise
        self._done()
        if refused:
            raise Rejected("; ".join(refused) + " (the record's other values were stored)")

    def _done(self) -> None:
        self._steps.finish()
        # Only the first record after a resume can be one the previous delivery had stored.
        self._delivered = {}

    def _new(self, path: str, items: Sequence[Any]) -> list[Any]:
        """``items`` (points, images or texts of one series, in order) that the run's previous
        container does not end with: a redelivered record's values are skipped."""
        last = self._delivered.get(path)
        if last is None:
            return list(items)
        for index, item in enumerate(items):
            if (float(item.step), float(item.timestamp)) == last[:2]:
                return list(items[index + 1:])
        return list(items)

    def _new_sample(self, path: str, point: MetricPoint) -> bool:
        """Whether a system sample is not the one the run's previous container ends with."""
        last = self._delivered.get(path)
        return last is None or last[1] != float(point.timestamp)

    def _new_values(self, path: str, values: Sequence[str], timestamp: float) -> list[str]:
        """The same as :meth:`_new`, for a series without steps (the boxes)."""
        last = self._delivered.get(path)
        if last is None:
            return list(values)
        for index, value in enumerate(values):
            if (float(timestamp), value) == last[1:]:
                return list(values[index + 1:])
        return list(values)

    def _assign(self, path: str, value: object) -> None:
        self.neptune_run[path] = value

    def _extend(self, path: str, values: Sequence[float | str], points: Sequence[MetricPoint]) -> None:
        self.neptune_run[path].extend(list(values), steps=[p.step for p in points],
                                      timestamps=[p.timestamp for p in points])

    def _path(self, key: str, kind: type, namespace: str | None = None) -> str:
        path = self.keys.path(key, namespace)
        self._check(path, kind)
        return path

    def _check(self, path: str, kind: type, *, replace: bool = False) -> None:
        """Make sure ``path`` can take a field of ``kind``; ``replace`` drops an atom of another type."""
        run = self.neptune_run
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            found = run.get_attribute(prefix)
            if found is None:
                break
            if not isinstance(found, Namespace):
                raise _Conflict(f"Neptune field {prefix!r} is a {type(found).__name__}, so it cannot "
                                f"also be a namespace holding {path!r}")
        found = run.get_attribute(path)
        if found is None:
            return
        if isinstance(found, Namespace):
            raise _Conflict(f"Neptune field {path!r} is already a namespace (another key starts with "
                            f"'{path}/'), so it cannot hold a {kind.__name__}")
        if isinstance(found, kind):
            return
        if replace and type(found) in _ATOM_TYPES.values():
            del run[path]  # a param changed type: the later value wins, as with any param
            return
        raise _Conflict(
            f"Neptune field {path!r} already holds a {type(found).__name__}, not a {kind.__name__}")


_ATOM_TYPES: dict[type, type] = {
    str: attrs.String,
    int: attrs.Integer,
    float: attrs.Float,
    bool: attrs.Boolean,
}


def _param_value(value: Any) -> str | int | float | bool:
    """A param as a Neptune atom: bool, 32-bit int, finite float and str stay themselves; the
    rest (None, lists, larger ints, NaN/inf) become JSON text, which reads back losslessly."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int) and INT32_MIN <= value <= INT32_MAX:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, float):
        return _nonfinite(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _png(record: ImageRecord | FigureRecord) -> bytes:
    try:
        return record.png_bytes()
    except FileNotFoundError as error:
        raise Rejected(f"{record.key!r}: {record.path} is gone from the run directory") from error


def _nonfinite(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def box_json(box: Box, step: int, index: int) -> str:
    """One box as the JSON text stored in ``loggerhub/boxes/<key>``."""
    return json.dumps({"step": step, "index": index, **box_dict(box)}, ensure_ascii=False, separators=(",", ":"))


__all__ = ["NeptuneSession", "Settings", "box_json", "custom_run_id"]
