"""Read a TensorBoard run directory back as TensorBoard's own ``EventAccumulator`` sees it.

Used by this backend's tests and, on resume, by the backend itself (which tags hold which
plugin's data). Tags stay TensorBoard tags; ``keys.from_tracker`` turns them into loggerhub keys.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard import data_compat
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api_pb2 as hp_api
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.util import tensor_util

from loggerhub_tensorboard import keys

STATUS_TAG = keys.reserved("status")
ERROR_TAG = keys.reserved("error")
PARAMS_TAG = keys.reserved("params")
CONTEXT_TAG = keys.reserved("context")
REQUIREMENTS_TAG = keys.reserved("context/requirements")
DIFF_TAG = keys.reserved("context/git_diff")
CONSOLE_PREFIX = keys.reserved("console/")
FILE_FOLDERS = ("artifacts", "checkpoints")


@dataclass(frozen=True)
class Scalar:
    step: int
    wall_time: float
    value: float


@dataclass(frozen=True)
class Image:
    step: int
    wall_time: float
    width: int
    height: int
    png: bytes


@dataclass(frozen=True)
class Text:
    step: int
    wall_time: float
    text: str


@dataclass
class TensorBoardRun:
    """One logdir, read back. Series are in the order TensorBoard reads them (file by file)."""

    logdir: Path
    event_files: list[Path]
    plugins: dict[str, str] = field(default_factory=dict)
    scalars: dict[str, list[Scalar]] = field(default_factory=dict)
    images: dict[str, list[Image]] = field(default_factory=dict)
    texts: dict[str, list[Text]] = field(default_factory=dict)
    #: The first HParams session start of the run, as TensorBoard shows it.
    hparams: dict[str, bool | float | str] = field(default_factory=dict)
    #: The first HParams session end's status (``STATUS_SUCCESS`` ...), as TensorBoard shows it.
    hparams_status: str | None = None
    #: The first HParams session end's end time (seconds since the epoch), as TensorBoard shows it.
    hparams_end_time: float | None = None
    #: The last status this backend wrote: FINISHED, FAILED or KILLED.
    status: str | None = None
    #: The wall time of that status: when the run ended.
    ended_at: float | None = None
    #: Why the run failed at that end (markdown: type, message, traceback), if it says.
    error: str | None = None
    #: Files copied under ``artifacts/`` and ``checkpoints/``, relative to the logdir.
    files: set[str] = field(default_factory=set)


def event_files(logdir: str | Path) -> list[Path]:
    """The event files of one run, in the order TensorBoard reads them (subdirectories are other runs)."""
    folder = Path(logdir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if "tfevents" in p.name and p.is_file())


@dataclass
class Scan:
    """What a writer joining a logdir needs to know about the event files already there."""

    #: Tag -> the plugin whose data it holds: the first one per tag, as TensorBoard decides.
    plugins: dict[str, str] = field(default_factory=dict)
    last_step: int = 0
    last_wall_time: float = 0.0
    #: Tag -> the latest ``(wall_time, step)`` of a value under it: how far the tag was written.
    marks: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: SHA-256 digests of the texts under ``_loggerhub_/params`` (params carry no time of their own).
    params_texts: set[str] = field(default_factory=set)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def scan(logdir: str | Path) -> Scan:
    """Reads the records without checking their CRCs: tensorboard's pure-Python CRC takes most
    of the time of a full read, and the backend scans on every resume."""
    found = Scan()
    plugins = found.plugins
    marks = found.marks
    for path in event_files(logdir):
        for record in _records(path):
            event = event_pb2.Event.FromString(record)
            if not event.HasField("summary"):
                continue
            found.last_step = max(found.last_step, event.step)
            found.last_wall_time = max(found.last_wall_time, event.wall_time)
            mark = (event.wall_time, event.step)
            for value in event.summary.value:
                if value.tag not in marks or marks[value.tag] < mark:
                    marks[value.tag] = mark
                if value.tag == PARAMS_TAG:
                    found.params_texts.update(text_digest(s.decode("utf-8", "replace"))
                                              for s in value.tensor.string_val)
                if value.tag in plugins:
                    continue
                if not value.HasField("metadata"):
                    value = data_compat.migrate_value(value)  # simple_value, image, ... of other tools
                if value.HasField("metadata"):
                    plugins[value.tag] = value.metadata.plugin_data.plugin_name
    return found


def _records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file: length (8 bytes), its CRC (4), data, data CRC (4).
    Stops at a torn last record."""
    with path.open("rb") as handle:
        while True:
            header = handle.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                return
            yield data


def as_logged(value: float) -> float:
    """A float32 as the shortest decimal that round-trips through float32: a value logged with
    up to 7 significant digits reads back exactly."""
    return float(str(np.float32(value)))


def read_logdir(logdir: str | Path) -> TensorBoardRun:
    """Everything in one run directory, keeping every event (size guidance 0)."""
    logdir = Path(logdir)
    run = TensorBoardRun(logdir, event_files(logdir))
    sizes = {kind: 0 for kind in (ea.SCALARS, ea.IMAGES, ea.AUDIO, ea.HISTOGRAMS,
                                  ea.COMPRESSED_HISTOGRAMS, ea.TENSORS)}
    accumulator = ea.EventAccumulator(str(logdir), size_guidance=sizes)
    accumulator.Reload()
    tags = accumulator.Tags()
    for tag in tags[ea.TENSORS]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        run.plugins[tag] = plugin
        for event in accumulator.Tensors(tag):
            _add_tensor(run, plugin, tag, event)
    for tag in tags[ea.SCALARS]:  # written by other tools as simple_value
        run.plugins.setdefault(tag, "scalars")
        run.scalars.setdefault(tag, []).extend(
            Scalar(e.step, e.wall_time, as_logged(e.value)) for e in accumulator.Scalars(tag)
        )
    for tag in tags[ea.IMAGES]:
        run.plugins.setdefault(tag, "images")
        run.images.setdefault(tag, []).extend(
            Image(e.step, e.wall_time, e.width, e.height, e.encoded_image_string)
            for e in accumulator.Images(tag)
        )
    try:
        content = accumulator.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    except KeyError:  # a run without HParams, as every plain SummaryWriter run is
        content = {}
    if hp_metadata.SESSION_START_INFO_TAG in content:
        start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
        run.hparams = {name: _value(v) for name, v in start.hparams.items()}
    if hp_metadata.SESSION_END_INFO_TAG in content:
        end = hp_metadata.parse_session_end_info_plugin_data(content[hp_metadata.SESSION_END_INFO_TAG])
        run.hparams_status = hp_api.Status.Name(end.status)
        run.hparams_end_time = end.end_time_secs
    statuses = run.texts.get(STATUS_TAG)
    if statuses:
        run.status, run.ended_at = statuses[-1].text, statuses[-1].wall_time
        # Written in the status's own event: an older error belongs to an earlier end.
        errors = [e for e in run.texts.get(ERROR_TAG, []) if e.wall_time == run.ended_at]
        run.error = errors[-1].text if errors else None
    for folder in FILE_FOLDERS:
        root = logdir / folder
        run.files.update(str(p.relative_to(logdir).as_posix()) for p in root.rglob("*") if p.is_file())
    return run


def _add_tensor(run: TensorBoardRun, plugin: str, tag: str, event: Any) -> None:
    array = tensor_util.make_ndarray(event.tensor_proto)
    if plugin == "scalars":
        value = float(array.item())
        if array.dtype == np.float32:
            value = as_logged(value)
        run.scalars.setdefault(tag, []).append(Scalar(event.step, event.wall_time, value))
    elif plugin == "images":
        width, height, *encoded = array.ravel().tolist()
        for png in encoded:
            run.images.setdefault(tag, []).append(
                Image(event.step, event.wall_time, int(width), int(height), png)
            )
    elif plugin == "text":
        text = "\n".join(item.decode("utf-8") for item in array.ravel().tolist())
        run.texts.setdefault(tag, []).append(Text(event.step, event.wall_time, text))


def _value(value: Any) -> bool | float | str:
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind in ("bool_value", "number_value", "string_value") else str(value)
