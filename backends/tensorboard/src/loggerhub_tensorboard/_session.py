"""One run's TensorBoard logdir: its event files, drawn images, hparams and copied artifacts.

Imported only by a delivery worker, from ``loggerhub_run_start`` / ``loggerhub_run_resume``.
"""

from __future__ import annotations

import atexit
import contextlib
import html
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.plugins.hparams import api_pb2 as hp_api
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import plugin_data_pb2 as hp_data
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from loggerhub_hookspecs import (
    ArtifactRecord,
    ConsoleRecord,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    Phase,
    Rejected,
    RunContext,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TableRole,
    TextRecord,
    Unsupported,
)
from loggerhub_hookspecs.kit import TrackerSession, box_dict, draw_boxes
from loggerhub_hookspecs.telemetry import seconds_since_start
from loggerhub_tensorboard import keys, reader

SCALARS = scalar_metadata.PLUGIN_NAME
IMAGES = image_metadata.PLUGIN_NAME
TEXT = text_metadata.PLUGIN_NAME

RUN_TAG = keys.reserved("run")
PARAMS_TAG = reader.PARAMS_TAG
STATUS_TAG = reader.STATUS_TAG
ERROR_TAG = reader.ERROR_TAG
CONTEXT_TAG = reader.CONTEXT_TAG
REQUIREMENTS_TAG = reader.REQUIREMENTS_TAG
DIFF_TAG = reader.DIFF_TAG

OPTION_NAMES = ("logdir", "flush_secs", "hparams_experiment")

# TensorBoard 2.21's hparams API has no "aborted" status: a killed run did not succeed.
HPARAMS_STATUS = {
    Status.FINISHED: hp_api.STATUS_SUCCESS,
    Status.FAILED: hp_api.STATUS_FAILURE,
    Status.KILLED: hp_api.STATUS_FAILURE,
}

# With flush_secs > 0, these boundaries flush the writer: the data of an epoch shows at its end.
FLUSH_PHASES = frozenset({Phase.EPOCH_END, Phase.VALIDATION_END, Phase.TRAIN_END})

# Integers beyond this lose digits as the doubles that HParams numbers are.
_MAX_EXACT_INT = 2**53


def annotations_tag(tag: str) -> str:
    return keys.reserved(f"annotations/{tag}")


def artifact_tag(folder: str, name: str) -> str:
    return keys.reserved(f"{folder}/{name}")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    logdir: Path
    flush_secs: float
    hparams_experiment: bool


def parse_options(run: RunInfo) -> Options:
    """The backend's options. A bad one is reported and replaced by its default, because the
    options are frozen in the journal: failing would block this run's delivery for good."""
    raw = dict(run.options)
    for name in sorted(set(raw) - set(OPTION_NAMES)):
        _warn(f"ignoring unknown option {name!r} (known: {', '.join(OPTION_NAMES)})")
    logdir = raw.get("logdir")
    if logdir in (None, ""):
        # The ranks of a group share one logdir beside their runs, so that one TensorBoard
        # shows them side by side.
        path = (run.dir.parent if run.group is not None else run.dir) / "tensorboard"
    else:
        path = Path(str(logdir).replace("{project}", run.project).replace("{run_id}", run.run_id))
    if run.group is not None:
        # TensorBoard's run selector then lists <group>/rank_0, <group>/rank_1, ...
        rank = f"rank_{run.rank}" if run.rank is not None else _path_part(run.run_id)
        path = path / _path_part(run.group) / rank
    flush_secs = raw.get("flush_secs", 0)
    if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not flush_secs >= 0:
        _warn(f"flush_secs must be a number >= 0, got {flush_secs!r}; using 0")
        flush_secs = 0
    experiment = raw.get("hparams_experiment", False)
    if not isinstance(experiment, bool):
        _warn(f"hparams_experiment must be true or false, got {experiment!r}; using false")
        experiment = False
    return Options(path.expanduser().absolute(), float(flush_secs), experiment)


def _path_part(name: str) -> str:
    """``name`` as one directory name: no separator, no ``.`` or ``..``."""
    part = re.sub(r"[^\w.=+-]", "_", name)[:200]
    return "_" + part if part in ("", ".", "..") else part


def _warn(message: str) -> None:
    print(f"loggerhub[tensorboard]: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the session


class TensorBoardSession(TrackerSession):
    """Writes one run into its logdir. A resumed delivery opens a new event file beside the
    earlier ones; TensorBoard reads all event files of a directory as one run.

    Redelivery is invisible: loggerhub delivers a record again when a delivery died after the
    record was written but before its journal offset was saved, and after a failed write. Such
    records are the first ones the session receives, so until a record turns out new, each is
    checked against what the logdir already holds (see :meth:`_already_written`).
    """

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        super().__init__(run, state, resumed=resumed)
        options = parse_options(run)
        if state.get("logdir"):
            # The logdir the run started in, even if a relative option now resolves elsewhere.
            options = replace(options, logdir=Path(state["logdir"]))
        state["logdir"] = str(options.logdir)
        self.logdir = options.logdir
        self._flush_secs = options.flush_secs
        self._experiment = options.hparams_experiment
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._params: dict[str, ParamValue] = dict(run.config)
        self._writer: EventFileWriter | None = None
        self._tags_in_file: set[str] = set()
        # TensorBoard keeps one plugin per tag (the first it reads), in every event file of the
        # run: earlier deliveries' tags, and any other writer's, count.
        self._plugins: dict[str, str] = {}
        self._step = 0
        self._wall_time = run.started_at
        self._load_logdir()
        atexit.register(self.close)
        # Asked directly, not through _already_written: the run table is no journal record.
        if not resumed and RUN_TAG not in self._marks:
            self._write_run_info()
            self.done()

    def _load_logdir(self) -> None:
        """Learn what the event files hold; a redelivered record is found among them."""
        earlier = reader.scan(self.logdir)
        for tag, plugin in earlier.plugins.items():
            self._plugins.setdefault(tag, plugin)
        self._hparams_pending = hp_metadata.SESSION_START_INFO_TAG not in earlier.plugins
        # Our own texts (params, status) go at the latest step so far: the default loader hides
        # a tag's records at steps >= that of a newer record.
        self._step = max(self._step, earlier.last_step)
        self._wall_time = max(self._wall_time, earlier.last_wall_time)
        self._marks = earlier.marks
        self._params_texts = earlier.params_texts
        self._replaying = bool(earlier.marks)
        self._in_doubt = False

    def _begin(self) -> None:
        """Start of a record: after a failed write, what reached the disk decides what is new."""
        if self._in_doubt:
            self._load_logdir()

    def _already_written(self, tag: str, step: int, wall_time: float) -> bool:
        """True for a value the logdir holds already: a record delivered again.

        Records reach the session in journal order, and a redelivery replays the records after
        the last saved offset, so the redelivered ones come first. While every record so far was
        found, a value is found when its tag was written up to its ``(wall time, step)`` or
        later; the first value that is not ends the check for the rest of the session. Times are
        the journal's, so a record logged later compares later, after any resume.
        """
        if not self._replaying:
            return False
        mark = self._marks.get(tag)
        if mark is not None and (wall_time, step) <= mark:
            return True
        self._replaying = False
        return False

    # -- records ------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        self._begin()
        self._params.update(params)
        if params:
            rows = [(key, _render(value)) for key, value in params.items()]
            text = markdown_table(("param", "value"), rows)
            # Params carry no time: a redelivered table is recognised by its text.
            if not (self._replaying and reader.text_digest(text) in self._params_texts):
                self._replaying = False
                self._text(PARAMS_TAG, text, self._step, self._wall_time)
        self.done()

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self._begin()
        self._start_hparams()
        refused: list[str] = []
        # One event per (step, time) holding its scalars as ``simple_value``: the float32 form
        # that SummaryWriter.add_scalar writes and TensorBoard reads as scalars (data_compat), at
        # a fraction of the cost of building a tensor per value.
        events: dict[tuple[int, float], list[summary_pb2.Summary.Value]] = {}
        value_of = summary_pb2.Summary.Value
        for point in points:
            tag = keys.to_tracker(point.key)
            held = self._claim(tag, SCALARS)
            if held is not None:
                refused.append(f"{point.key!r}@{point.step} (the tag holds {held})")
                continue
            if self._already_written(tag, point.step, point.timestamp):
                continue
            events.setdefault((point.step, point.timestamp), []).append(
                value_of(tag=tag, simple_value=point.value))
        if events:
            writer = self._open_writer()
            for (step, wall_time), values in events.items():
                self._step = max(self._step, step)
                self._wall_time = max(self._wall_time, wall_time)
                self._write(event_pb2.Event(step=step, wall_time=wall_time,
                                            summary=summary_pb2.Summary(value=values)), writer)
        self.done()
        if refused:
            raise Rejected(
                "TensorBoard keeps one kind of data per tag; these metric points went to tags that "
                f"already hold other data and were not written: {', '.join(refused[:20])}"
                + (f" and {len(refused) - 20} more" if len(refused) > 20 else "")
            )

    def log_image(self, image: ImageRecord) -> None:
        self._begin()
        self._start_hparams()
        tag = self._claim_or_reject(keys.to_tracker(image.key), IMAGES, image.key)
        if self._already_written(tag, image.step, image.timestamp):
            self.done()  # the session start may have been written just now
            return
        png = _media(image.path)
        width, height = image.width, image.height
        if image.boxes:
            try:
                png, width, height = draw_boxes(png, image.boxes)
            except OSError as error:  # Pillow cannot read it: retrying will not change that
                raise Rejected(f"image {image.key!r}: cannot draw its boxes: {error}") from error
        values = [(tag, IMAGES, _image_tensor(png, width, height))]
        if image.boxes or image.caption is not None:
            note = {
                "caption": image.caption,
                "width": image.width,
                "height": image.height,
                "boxes": [box_dict(box) for box in image.boxes],
            }
            # In the image's own event: the image and its note are written together or not at all.
            values.append((annotations_tag(tag), TEXT, _text_tensor(json.dumps(note, ensure_ascii=False))))
        self._emit(image.step, image.timestamp, values)
        self.done()

    def log_figure(self, figure: FigureRecord) -> None:
        self._begin()
        self._start_hparams()
        tag = self._claim_or_reject(keys.to_tracker(figure.key), IMAGES, figure.key)
        if self._already_written(tag, figure.step, figure.timestamp):
            self.done()  # the session start may have been written just now
            return
        tensor = _image_tensor(_media(figure.path), figure.width, figure.height)
        self._emit(figure.step, figure.timestamp, [(tag, IMAGES, tensor)])
        self.done()

    def log_text(self, text: TextRecord) -> None:
        self._begin()
        self._start_hparams()
        tag = self._claim_or_reject(keys.to_tracker(text.key), TEXT, text.key)
        if not self._already_written(tag, text.step, text.timestamp):
            self._text(tag, text.text, text.step, text.timestamp)
        self.done()

    def log_table(self, table: TableRecord) -> None:
        self._begin()
        self._start_hparams()
        tag = self._claim_or_reject(keys.to_tracker(table.key), TEXT, table.key)
        if not self._already_written(tag, table.step, table.timestamp):
            self._text(tag, table_markdown(table), table.step, table.timestamp)
        self.done()

    def log_artifact(self, artifact: ArtifactRecord) -> None:
        self._copy(artifact, "artifacts")

    def log_checkpoint(self, checkpoint: ArtifactRecord) -> None:
        self._copy(checkpoint, "checkpoints")

    def _copy(self, artifact: ArtifactRecord, folder: str) -> None:
        """Copy the artifact to ``<logdir>/<folder>/<name>`` and note it in the Text tab."""
        self._begin()
        self._start_hparams()
        # A redelivered copy could replace a later one of the same name: skip it altogether.
        if self._already_written(artifact_tag(folder, artifact.name), artifact.step, artifact.timestamp):
            self.done()  # the session start may have been written just now
            return
        if not artifact.path.exists():
            raise Rejected(f"artifact {artifact.name!r}: its copy in the run directory is gone: "
                           f"{artifact.path}")
        root = self.logdir / folder
        target = root / artifact.name
        target.parent.mkdir(parents=True, exist_ok=True)
        # The name is relative and free of "..": only a symlink planted under root can escape.
        if not target.parent.resolve().is_relative_to(root.resolve()):
            raise Rejected(f"artifact name leaves {root}: {artifact.name!r}")
        _remove(target)
        if artifact.is_dir:
            shutil.copytree(artifact.path, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(artifact.path, target)
        what = "directory" if artifact.is_dir else "file"
        note = f"{artifact.kind.value} {what}, {artifact.size} bytes: `{folder}/{artifact.name}`"
        self._text(artifact_tag(folder, artifact.name), note, artifact.step, artifact.timestamp)
        self.done()

    def log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Scalars under their ``system/`` keys. The event's wall time is the sample's time,
        and its step is whole seconds since the run started, so the series reads the same on
        TensorBoard's step and time axes and never steps back (a sample's training step may)."""
        self.log_metrics([replace(point, step=seconds_since_start(point.timestamp, self.run.started_at))
                          for point in points])

    def log_console(self, output: ConsoleRecord) -> None:
        """A text under ``_loggerhub_/console/<stream>`` at the record's training step, shown as
        a verbatim block."""
        self._begin()
        self._start_hparams()
        tag = console_tag(output.stream)
        step = max(0, output.step)
        if not self._already_written(tag, step, output.timestamp):
            self._text(tag, verbatim(output.lines), step, output.timestamp)
        self.done()

    def log_context(self, context: RunContext) -> None:
        """Three texts at step 0: the context as a markdown table, the requirements, and the git
        diff (when the run's checkout was dirty)."""
        self._begin()
        self._start_hparams()
        if not self._already_written(CONTEXT_TAG, 0, context.timestamp):
            values = [(CONTEXT_TAG, TEXT, _text_tensor(context_markdown(context))),
                      (REQUIREMENTS_TAG, TEXT, _text_tensor(verbatim(context.requirements().splitlines())))]
            diff = context.git.diff_path if context.git is not None else None
            missing = diff is not None and not diff.exists()
            if diff is not None and not missing:
                values.append((DIFF_TAG, TEXT, _text_tensor(verbatim(diff.read_text("utf-8", "replace").splitlines()))))
            # One event: the context tag, checked above, is on disk only with the other two.
            self._emit(0, context.timestamp, values)
            self.done()
            if missing:  # deleted from the run directory: no retry brings it back
                raise Rejected(f"the git diff is gone from the run directory (the rest of the context "
                               f"was written): {diff}")
        self.done()

    def on_event(self, event: LifecycleEvent) -> None:
        """TensorBoard has no place for lifecycle boundaries, so each is reported as skipped.

        One is still of use: with ``flush_secs`` > 0, the end of an epoch, a validation or the
        training flushes the writer, so that TensorBoard shows the epoch's data at its end (with
        0, every hook has flushed already).
        """
        if event.phase in FLUSH_PHASES and self._writer is not None:
            self._flush()
        raise Unsupported(event.phase.value)

    @classmethod
    def supported_records(cls) -> frozenset[str]:
        # on_event is overridden for the flush only: no boundary is stored.
        return super().supported_records() - {phase.value for phase in Phase}

    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        """Status (and failure), session end (and the experiment summary when asked for), then close.

        The end is stamped with the journal's ``ended_at``, never the delivery time: a run that
        ``loggerhub sync`` delivers a day later still ended when it ended.
        """
        self._begin()
        self._start_hparams()
        if not self._already_written(STATUS_TAG, self._step, ended_at):
            end_info = hp_data.SessionEndInfo(status=HPARAMS_STATUS[status], end_time_secs=ended_at)
            self._hparams(hp_metadata.SESSION_END_INFO_TAG, hp_data.HParamsPluginData(session_end_info=end_info),
                          ended_at)
            if self._experiment:
                self._write_experiment()
            # The status last: events reach the file in order, so a status on disk means the
            # whole end is, and a redelivered end is skipped only then.
            values = [(STATUS_TAG, TEXT, _text_tensor(status.value))]
            if error is not None:
                values.append((ERROR_TAG, TEXT, _text_tensor(error_markdown(status, error))))
            self._emit(self._step, ended_at, values)
        self.done()
        self.close()

    # -- hparams ------------------------------------------------------------------------------

    def _start_hparams(self) -> None:
        """Write the HParams session start, once per logdir, with the params known by then.

        TensorBoard keeps the first hparams summary of a run, so it is written with the first
        record that is not params: params logged later reach the Text tab only.
        """
        if not self._hparams_pending:
            return
        info = hp_data.SessionStartInfo(group_name=self.run.run_id, start_time_secs=self.run.started_at)
        for name, value in self._params.items():
            set_hparam(info.hparams[name], value)
        self._hparams(hp_metadata.SESSION_START_INFO_TAG, hp_data.HParamsPluginData(session_start_info=info),
                      self.run.started_at)
        self._hparams_pending = False

    def _write_experiment(self) -> None:
        types = {"bool_value": hp_api.DATA_TYPE_BOOL, "number_value": hp_api.DATA_TYPE_FLOAT64}
        infos = []
        for name, value in self._params.items():
            probe = hp_data.SessionStartInfo()
            set_hparam(probe.hparams[name], value)
            kind = probe.hparams[name].WhichOneof("kind")
            infos.append(hp_api.HParamInfo(name=name, type=types.get(kind, hp_api.DATA_TYPE_STRING)))
        metrics = [
            hp_api.MetricInfo(name=hp_api.MetricName(tag=tag))
            for tag, plugin in sorted(self._plugins.items())
            if plugin == SCALARS and not keys.is_reserved(tag)
        ]
        experiment = hp_api.Experiment(hparam_infos=infos, metric_infos=metrics,
                                       time_created_secs=self.run.started_at)
        self._hparams(hp_metadata.EXPERIMENT_TAG, hp_data.HParamsPluginData(experiment=experiment),
                      self.run.started_at)

    def _hparams(self, tag: str, data: hp_data.HParamsPluginData, wall_time: float) -> None:
        value = summary_pb2.Summary.Value(tag=tag, tensor=hp_metadata.NULL_TENSOR,
                                          metadata=hp_metadata.create_summary_metadata(data))
        self._plugins.setdefault(tag, hp_metadata.PLUGIN_NAME)
        self._write(event_pb2.Event(step=0, wall_time=wall_time, summary=summary_pb2.Summary(value=[value])))

    # -- writing ------------------------------------------------------------------------------

    def _write_run_info(self) -> None:
        run = self.run
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started_at))
        rows = [("run id", run.run_id), ("name", run.name), ("project", run.project), ("started", started)]
        rows += [(f"tag: {name}", value) for name, value in run.tags.items()]
        self._text(RUN_TAG, markdown_table(("loggerhub", ""), rows), 0, run.started_at)

    def _claim(self, tag: str, plugin: str) -> str | None:
        """None when ``tag`` may hold ``plugin``'s data, else the plugin that holds it already."""
        held = self._plugins.setdefault(tag, plugin)
        return None if held == plugin else held

    def _claim_or_reject(self, tag: str, plugin: str, key: str) -> str:
        held = self._claim(tag, plugin)
        if held is not None:
            raise Rejected(
                f"key {key!r}: its TensorBoard tag {tag!r} already holds {held} data in {self.logdir}, "
                f"and TensorBoard keeps one kind of data per tag; log this {plugin} record under "
                "another key"
            )
        return tag

    def _text(self, tag: str, text: str, step: int, wall_time: float) -> None:
        self._emit(step, wall_time, [(tag, TEXT, _text_tensor(text))])

    def _emit(self, step: int, wall_time: float, values: list[tuple[str, str, TensorProto]]) -> None:
        self._step = max(self._step, step)
        self._wall_time = max(self._wall_time, wall_time)
        writer = self._open_writer()
        summary = summary_pb2.Summary()
        for tag, plugin, tensor in values:
            # Like TensorFlow's writers: metadata on a tag's first value in each file only.
            if tag in self._tags_in_file:
                summary.value.add(tag=tag, tensor=tensor)
            else:
                summary.value.add(tag=tag, tensor=tensor, metadata=_METADATA[plugin])
        self._write(event_pb2.Event(step=step, wall_time=wall_time, summary=summary), writer)
        self._tags_in_file.update(tag for tag, _, _ in values)

    def _write(self, event: event_pb2.Event, writer: EventFileWriter | None = None) -> None:
        writer = writer or self._open_writer()
        try:
            writer.add_event(event)
        except Exception:
            self._drop_writer()
            raise

    def _open_writer(self) -> EventFileWriter:
        if self._writer is None:
            _wait_for_later_file_name(self.logdir)
            self._writer = EventFileWriter(str(self.logdir), max_queue_size=1024,
                                           flush_secs=self._flush_secs or 120)
            self._tags_in_file = set()
        return self._writer

    def done(self) -> None:
        """End of a hook: with ``flush_secs`` 0, what the hook delivered is in the file now."""
        if self._flush_secs == 0 and self._writer is not None:
            self._flush()

    def _flush(self) -> None:
        assert self._writer is not None
        try:
            self._writer.flush()
        except Exception:
            self._drop_writer()
            raise

    def _drop_writer(self) -> None:
        """After a failed write: a failed writer thread never recovers, so the retry gets a fresh
        event file, and it first reads what reached the disk (part of the record, maybe)."""
        self._in_doubt = True
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):  # it failed already; the caller raises that error
                writer.close()

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


# --------------------------------------------------------------------------- helpers


_SCALAR_SHAPE = tensor_shape_pb2.TensorShapeProto()
_METADATA = {
    SCALARS: scalar_metadata.create_summary_metadata(display_name=None, description=None),
    IMAGES: image_metadata.create_summary_metadata(display_name=None, description=None),
    TEXT: text_metadata.create_summary_metadata(display_name=None, description=None),
}
_EVENT_FILE_STAMP = re.compile(r"events\.out\.tfevents\.(\d+)\.")


def _wait_for_later_file_name(logdir: Path) -> None:
    """Event file names start with the second they were created in, then host and pid; a file
    created in the same second as an earlier one may sort (and so be read) before it. Wait for
    the next second, unless the earlier file is from a clock more than a second ahead."""
    stamps = [int(m.group(1)) for p in logdir.iterdir() if (m := _EVENT_FILE_STAMP.match(p.name))]
    if not stamps:
        return
    latest = max(stamps)
    if latest > time.time() + 1:
        return
    while int(time.time()) <= latest:
        time.sleep(0.05)


def _media(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:  # deleted from the run directory: no retry brings it back
        raise Rejected(f"media file missing from the run directory: {path}") from error


def _text_tensor(text: str) -> TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=_SCALAR_SHAPE,
                                  string_val=[text.encode("utf-8")])


def _image_tensor(png: bytes, width: int, height: int) -> TensorProto:
    # The image plugin's format: a string vector [width, height, encoded image...].
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape,
                                  string_val=[str(width).encode(), str(height).encode(), png])


def set_hparam(target: Any, value: ParamValue) -> None:
    """Set a ``google.protobuf.Value`` the way the HParams plugin can show it.

    Bools, strings and numbers keep their type; integers beyond 2**53 and NaN/inf become strings
    (numbers are doubles, and NaN breaks the plugin's JSON); anything else becomes its ``str``.
    """
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int) and abs(value) <= _MAX_EXACT_INT:
        target.number_value = value
    elif isinstance(value, float) and math.isfinite(value):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    else:
        target.string_value = str(value)


def console_tag(stream: str) -> str:
    return keys.reserved(f"console/{stream}")


def verbatim(lines: Sequence[str]) -> str:
    """``lines`` as a markdown code block (indented four spaces): shown as written."""
    return "\n".join("    " + line for line in lines)


def context_markdown(context: RunContext) -> str:
    """The run context as a two-column markdown table."""
    rows: list[tuple[str, Any]] = [
        ("command", " ".join(context.command)), ("python", context.python_version),
        ("python executable", context.python_executable), ("host", context.hostname), ("os", context.os),
        ("cpu", context.cpu), ("cpu count", "" if context.cpu_count is None else context.cpu_count),
        ("gpus", ", ".join(context.gpus)), ("packages", len(context.packages)),
    ]
    git = context.git
    if git is not None:
        rows += [("git commit", git.commit), ("git branch", git.branch or ""), ("git remote", git.remote or ""),
                 ("git dirty", str(git.dirty).lower()), ("git untracked", ", ".join(git.untracked))]
        if git.diff_truncated:
            rows.append(("git diff", "cut at loggerhub's size limit"))
    rows += [(f"env {name}", value) for name, value in sorted(context.environment.items())]
    return markdown_table(("context", ""), rows)


def error_markdown(status: Status, error: RunError) -> str:
    """Why the run failed, for the Text tab: the type and message, then the traceback."""
    lines = [f"**{status.value}**: {_cell(error.type)}: {_cell(error.message)}"]
    if error.traceback:
        # An indented block: markdown shows it verbatim, whatever characters it holds.
        lines += ["", *("    " + line for line in error.traceback.splitlines())]
    return "\n".join(lines)


def _render(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _cell(value: Any) -> str:
    """A markdown table cell that shows ``value`` literally."""
    text = html.escape(_render(value), quote=False)
    text = re.sub(r"([\\`*_\[\]|])", r"\\\1", text)
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    if not header:
        return "(empty table)"
    lines = ["| " + " | ".join(_cell(c) for c in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def table_markdown(table: TableRecord) -> str:
    if table.role is TableRole.CONFUSION_MATRIX:
        header = ("true \\ predicted", *table.columns)
        rows = [(label, *row) for label, row in zip(table.columns, table.rows, strict=False)]
        return markdown_table(header, rows)
    return markdown_table(table.columns, table.rows)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link_or_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Any:
    """Hard-link when the logdir shares a filesystem with the run directory: a checkpoint then
    takes no second copy of disk space. The journal replaces, never rewrites, its copies."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target

