"""``loggerhub import tensorboard LOGDIR``: TensorBoard runs back into loggerhub runs.

Every folder under LOGDIR that holds event files is one run, as TensorBoard shows it. A run that
this backend wrote carries ``_loggerhub_/run`` (name, project, run id, tags); its own tags
(``_loggerhub_/...``) are inverted: params, status, box annotations, artifact notes and the
``artifacts/`` and ``checkpoints/`` folders beside its event files. The run ends at the wall
time of its last status (the journal's end), with the error written beside it. Any other logdir
(a user's own ``SummaryWriter``) is read the same way for scalars, images, text and HParams; it
ends at the HParams session's ``end_time_secs`` when the writer set one, else at its last record.

Data is read with :func:`reader.read_logdir` (TensorBoard's ``EventAccumulator``). A cheap first
pass over the raw events counts what each tag holds, so that what has no loggerhub record
(histograms, PR curves, audio, graphs, ...) and what the accumulator drops (points of a tag
logged again at an earlier step) are reported instead of vanishing.

Event files are hostile input. The first pass also checks every record: its length against
``Limits.item_bytes`` (before reading it), that it decodes, and that no tensor would take more
than ``item_bytes`` once decoded. A record or value that fails is skipped and reported as
``<event file>:<record number>``, and the accumulator then reads a copy of the run's event files
that holds only the records that passed. Event files and the backend's ``artifacts/`` and
``checkpoints/`` copies are read only inside the logdir: a symlink out of it is not followed.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import html
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loggerhub_hookspecs import ArtifactKind, Box, RunError, Status
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Emit,
    Importer,
    OutsideSource,
    Pending,
    RunBuilder,
    Source,
    contained,
    write_in_order,
    write_metrics,
)
from loggerhub_tensorboard import keys

if TYPE_CHECKING:
    from loggerhub_tensorboard import reader

#: The backend's folders of copied files beside its event files (``reader.FILE_FOLDERS``).
FILE_FOLDERS = ("artifacts", "checkpoints")

RUN_TAG = keys.reserved("run")
PARAMS_TAG = keys.reserved("params")
STATUS_TAG = keys.reserved("status")
ANNOTATIONS = keys.reserved("annotations/")
SYSTEM_PREFIX = "system/"
CONSOLE_PREFIX = keys.reserved("console/")
#: The plugins whose data becomes loggerhub records; the others are reported as not mapped.
MAPPED_PLUGINS = frozenset({"scalars", "images", "text", "hparams"})
#: Events that are not summaries, by the field they set.
OTHER_EVENTS = {"graph_def": "graph", "meta_graph_def": "meta graph", "tagged_run_metadata": "run metadata",
                "session_log": "session log (restart marker)", "log_message": "log message"}
HPARAMS_STATUS = {"STATUS_SUCCESS": Status.FINISHED, "STATUS_FAILURE": Status.FAILED}
#: HParams numbers are doubles: the backend writes larger integers as strings.
_MAX_EXACT_INT = 2**53
_NOTE = re.compile(r"^(\w+) (?:file|directory), \d+ bytes: `")

@dataclass
class _Census:
    """What the raw events of a run hold: values per tag and plugin, other events by kind."""

    values: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    #: Event files, and records or values in them, that are not read (reported): the run is
    #: then read from a copy holding only the records that passed.
    refused: int = 0

    @property
    def tags(self) -> set[str]:
        return {tag for tag, _ in self.values}


class TensorBoardImporter(Importer):
    name = "tensorboard"
    location_help = "a TensorBoard logdir"

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        """Import every run (folder with event files) under the logdir."""
        root = Path(source.location).expanduser().absolute()
        if not root.is_dir():
            raise FileNotFoundError(f"no TensorBoard logdir at {root}")
        runs = _find_runs(root, source)
        if not runs:
            raise FileNotFoundError(f"no TensorBoard event files under {root}")
        claimed = {folder for folder, _ in runs}
        outside = 0 if root in claimed else _count_files(root, claimed, set())
        if outside:
            builder_factory.unmapped("tensorboard: file outside any run folder", outside)
        for folder, census in runs:
            _import_run(root, folder, census, claimed, builder_factory, source)


#: ``loggerhub.importers`` entry point.
import_runs = TensorBoardImporter()


# --------------------------------------------------------------------------- finding runs


def _find_runs(root: Path, source: Source) -> list[tuple[Path, _Census]]:
    """Folders with event files, parents first. The ``artifacts/`` and ``checkpoints/`` of a run
    this backend wrote are its files, not runs, whatever they hold."""
    runs = []
    pending = [root]
    visited = 0
    while pending:
        folder = pending.pop(0)
        visited += 1
        if visited > source.limits.files:
            source.skip(folder, None, f"more than {source.limits.files} folders under the logdir; "
                                      "the rest is not searched")
            break
        ours = False
        if _event_files(folder):
            census = _count(folder, source)
            runs.append((folder, census))
            ours = RUN_TAG in census.tags
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
            if not (ours and child.name in FILE_FOLDERS):
                pending.append(child)
    return runs


def _event_files(folder: Path) -> list[Path]:
    """``reader.event_files``: what TensorBoard reads as the folder's event files."""
    return sorted(p for p in folder.iterdir() if "tfevents" in p.name and p.is_file())


def _records(path: Path, source: Source) -> Iterator[tuple[int, bytes | None]]:
    """``(record number, data)`` of a TFRecord file: length (8 bytes), its CRC (4), data, data
    CRC (4). A length over ``item_bytes`` is refused before anything is read (``None``), and ends
    the file: nothing after it can be found. Stops at a torn last record."""
    limit = source.limits.item_bytes
    with path.open("rb") as handle:
        number = 0
        while True:
            header = handle.read(12)
            if len(header) < 12:
                return
            number += 1
            (length,) = struct.unpack("<Q", header[:8])
            if length > limit:
                yield number, None
                return
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                return
            yield number, data


def _count(folder: Path, source: Source) -> _Census:
    """Counts without CRC checks, like :func:`reader.scan` (this pass only sizes the report), and
    checks every record (see the module docstring)."""
    from google.protobuf.message import DecodeError
    from tensorboard import data_compat
    from tensorboard.compat.proto import event_pb2

    census = _Census()
    plugins: dict[str, str] = {}  # a tag's plugin is named by its first value's metadata only
    for path in _event_files(folder):
        try:
            source.contained(path)
        except OutsideSource as error:
            source.skip(path, None, f"not read: {error}")
            census.refused += 1
            continue
        for number, record in _records(path, source):
            if record is None:
                source.skip(path, number, f"a record longer than {source.limits.item_bytes} bytes; the rest "
                                          "of the file is not read (raise with --limit item_bytes=SIZE)")
                census.refused += 1
                continue
            try:
                event = event_pb2.Event.FromString(record)
                _check_tensors(event, source.limits.item_bytes)
            except (DecodeError, ValueError, RecursionError) as error:
                source.skip(path, number, f"an unreadable event: {type(error).__name__}: {error}")
                census.refused += 1
                continue
            kind = event.WhichOneof("what")
            if kind != "summary":
                if kind in OTHER_EVENTS:
                    census.events[OTHER_EVENTS[kind]] += 1
                continue
            for value in event.summary.value:
                if not value.HasField("metadata"):
                    value = data_compat.migrate_value(value)
                named = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
                plugin = plugins.setdefault(value.tag, named or value.WhichOneof("value") or "unknown")
                census.values[(value.tag, plugin)] += 1
    return census


def _check_tensors(event: Any, limit: int) -> None:
    """ValueError if a tensor of the event would take more than ``limit`` bytes once decoded: its
    shape, not its (tiny) encoding, decides (a string tensor of shape [1e8] fills 800 MB)."""
    if not event.HasField("summary"):
        return
    for value in event.summary.value:
        if not value.HasField("tensor"):
            continue
        elements = 1
        for dim in value.tensor.tensor_shape.dim:
            if dim.size < 0:
                raise ValueError(f"tag {value.tag[:80]!r}: a tensor dimension below zero")
            elements *= dim.size
            if elements * 8 > limit:
                raise ValueError(f"tag {value.tag[:80]!r}: a tensor of more than {limit // 8} elements")


def _clean_copy(folder: Path, target: Path, source: Source) -> Path:
    """The folder's event files holding only the records that passed :func:`_count`, written
    again with their CRCs: what the accumulator reads when something was refused."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in _event_files(folder):
        try:
            source.contained(path)
        except OutsideSource:
            continue
        with (target / path.name).open("wb") as out:
            writer = RecordWriter(out)
            for _, record in _records(path, source):
                if record is None:
                    break
                try:
                    _check_tensors(event_pb2.Event.FromString(record), source.limits.item_bytes)
                except (DecodeError, ValueError, RecursionError):
                    continue
                writer.write(record)
    return target


def _source_id(root: Path, folder: Path, loggerhub_id: str | None) -> str:
    """The run's path under the logdir (the logdir's own name for itself), plus loggerhub's run
    id when the run has one; long ones are shortened with a hash, to stay distinct once slugged."""
    relative = folder.relative_to(root).as_posix()
    text = root.resolve().name if relative == "." else relative
    if loggerhub_id and loggerhub_id not in text.split("/"):
        text = f"{text}@{loggerhub_id}"
    if len(text) > 100:
        text = f"{text[:80]}~{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return text


# --------------------------------------------------------------------------- one run


def _import_run(root: Path, folder: Path, census: _Census, claimed: set[Path], factory: BuilderFactory,
                source: Source) -> None:
    from loggerhub_tensorboard import reader

    with source.temporary() as tmp:
        try:
            # Something was refused: TensorBoard reads only the records that passed.
            run = reader.read_logdir(_clean_copy(folder, tmp, source) if census.refused else folder)
        except Exception as error:  # noqa: BLE001 - whatever TensorBoard fails on, the run is reported
            source.skip(folder, None, f"the run is not imported: TensorBoard cannot read it: {type(error).__name__}")
            return
    ours = RUN_TAG in census.tags
    info = _run_info(run) if ours else {}
    times = [s.wall_time for series in run.scalars.values() for s in series]
    times += [i.wall_time for series in run.images.values() for i in series]
    times += [t.wall_time for series in run.texts.values() for t in series]
    started = info.get("ts") or (min(times) if times else 0.0)
    config, later_params = _params(run, ours)
    builder = factory(
        source_id=_source_id(root, folder, info.get("run id")),
        name=info.get("name") or (root.resolve().name if folder == root else folder.relative_to(root).as_posix()),
        started_at=started,
        config=config,
        tags=info.get("tags"),
        source_project=info.get("project"),
    )
    if builder is None:
        return
    where = folder.relative_to(root).as_posix()
    with builder:
        _report_census(run, census, builder)
        items = _scalar_items(run, where, source, system=ours)
        if ours:
            items += _console_items(run, where)
        items += _image_items(run, builder, where)
        items += _text_items(run, builder, where)
        items += [Pending(ts, 0, -1, _params_emit(values), where=(f"{where} [params]", None))
                  for ts, values in later_params]
        copies: set[Path] = set()
        if ours:
            items += _file_items(folder, run, copies, builder, source)
        _report_other_files(folder, claimed, copies, builder)
        write_in_order(items, builder, source)
        status, end = _status(run, builder)
        cause = _error(run.error, builder) if run.error is not None and status is not Status.FINISHED else None
        builder.end(status, end if end is not None else max([started, *(item.ts for item in items)]), cause)


def _run_info(run: reader.TensorBoardRun) -> dict[str, Any]:
    """The backend's ``_loggerhub_/run`` table: run id, name, project, tags; its time is the start."""
    texts = run.texts.get(RUN_TAG) or []
    if not texts:
        return {}
    rows = parse_table(texts[0].text)[1]
    info: dict[str, Any] = {"ts": texts[0].wall_time, "tags": {}}
    for row in rows:
        if len(row) != 2:
            continue
        name, value = row
        if name.startswith("tag: "):
            info["tags"][name[len("tag: "):]] = value
        elif name in ("run id", "name", "project"):
            info[name] = value
    return info


def _report_census(run: reader.TensorBoardRun, census: _Census, builder: Any) -> None:
    read = Counter({tag: len(series) for tag, series in run.scalars.items()})
    read.update({tag: len(series) for tag, series in run.images.items()})
    read.update({tag: len(series) for tag, series in run.texts.items()})
    for (tag, plugin), count in sorted(census.values.items()):
        if plugin not in MAPPED_PLUGINS:
            builder.unmapped(f"tensorboard: {plugin} data", count)
        elif plugin != "hparams" and count > read[tag]:
            # After a restart (SessionLog.START, purge_step) TensorBoard, and so the accumulator,
            # drops the values logged before it at the steps from the restart on.
            builder.unmapped(f"tensorboard: {plugin} values purged by a restart, as TensorBoard shows",
                             count - read[tag])
    for kind, count in sorted(census.events.items()):
        builder.unmapped(f"tensorboard: {kind}", count)


# --------------------------------------------------------------------------- params


def _params(run: reader.TensorBoardRun, ours: bool) -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
    """The HParams session start is the config. In a run this backend wrote, each
    ``_loggerhub_/params`` table is one ``log_params`` call: the values it shows as ``str(value)``
    restore the types HParams lost (``3`` vs ``3.0``, lists, ``None``), and values the session
    start does not hold yet are params logged later, at the table's time."""
    config: dict[str, Any] = dict(run.hparams)  # the backend names hparams by their keys, unescaped
    if not ours:
        return config, []
    known = dict(config)
    later: list[tuple[float, dict[str, Any]]] = []
    for text in run.texts.get(PARAMS_TAG) or []:
        changed: dict[str, Any] = {}
        for row in parse_table(text.text)[1]:
            if len(row) != 2:
                continue
            key, shown = row
            value = _typed(shown, config.get(key))
            if key in config and _same(config[key], value):
                config[key] = value  # the type the table shows
            if key not in known or not _same(known[key], value):
                changed[key] = value
            known[key] = value
        if changed:
            later.append((text.wall_time, changed))
    return config, later


def _typed(shown: str, hparam: Any = None) -> Any:
    """A param as ``str(value)`` showed it, back to its value: ``True``, ``3``, ``0.5``, ``None``,
    ``[64, 128]``; anything else stays the string it is. ``hparam``, the same param in the
    session start, tells a string that reads as a number from a number: HParams keeps bools and
    numbers up to 2**53 as such, so if it holds the shown text as a string, a string it was."""
    value = _literal(shown)
    if isinstance(hparam, str) and hparam == shown and (
            isinstance(value, bool) or (isinstance(value, int) and abs(value) <= _MAX_EXACT_INT)
            or (isinstance(value, float) and math.isfinite(value))):
        return shown
    return value


def _literal(shown: str) -> Any:
    if shown in ("True", "False"):
        return shown == "True"
    if shown == "None":
        return None
    if re.fullmatch(r"-?\d+", shown):
        return int(shown)
    if shown in ("nan", "inf", "-inf") or re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)(e[-+]?\d+)?", shown):
        return float(shown)
    if shown.startswith("[") and shown.endswith("]"):
        with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
            value = ast.literal_eval(shown)
            if isinstance(value, list):
                return value
    return shown


def _same(left: Any, right: Any) -> bool:
    """Equal as HParams holds them: numbers as doubles, anything else by its text."""
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return float(left) == float(right) or (math.isnan(float(left)) and math.isnan(float(right)))
    return str(left) == str(right)


def _params_emit(values: dict[str, Any]) -> Emit:
    return lambda b, step, ts: b.params(values, ts)


# --------------------------------------------------------------------------- data


def _scalar_items(run: reader.TensorBoardRun, where: str, source: Source, *, system: bool) -> list[Pending]:
    """Points of one step and wall time share one event, as loggerhub logged them together.
    With ``system`` (the backend's runs), the ``system/`` series are its system metrics."""
    groups: dict[tuple[float, int], list[dict[str, float]]] = {}
    samples: dict[float, dict[str, float]] = {}
    for tag, series in run.scalars.items():
        key = keys.from_tracker(tag)
        if key is None:
            continue  # reported by the census as the plugin data it is
        if system and key.startswith(SYSTEM_PREFIX):
            for point in series:
                samples.setdefault(point.wall_time, {})[key] = point.value
            continue
        for point in series:
            records = groups.setdefault((point.wall_time, point.step), [])
            target = next((values for values in records if key not in values), None)
            if target is None:
                target = {}
                records.append(target)
            target[key] = point.value
    items = [Pending(ts, step, 0, _metrics(values, source, (f"{where} [scalars at step {step}]", None)),
                     where=(f"{where} [scalars at step {step}]", None))
             for (ts, step), records in groups.items() for values in records]
    # The backend's step of a sample is seconds since the start: each gets the training step
    # reached at its time instead.
    items += [Pending(ts, -1, 0, _system(values), auto_step=True, where=(f"{where} [system metrics]", None))
              for ts, values in samples.items()]
    return items


def _system(values: dict[str, float]) -> Emit:
    return lambda b, step, ts: b.system_metrics(values, step, ts)


def _console_items(run: reader.TensorBoardRun, where: str) -> list[Pending]:
    """The backend's console texts (``_loggerhub_/console/<stream>``, a verbatim block each)."""
    items = []
    for tag, series in run.texts.items():
        if tag.startswith(CONSOLE_PREFIX):
            stream = tag[len(CONSOLE_PREFIX):]
            for text in series:
                lines = [line.removeprefix("    ") for line in text.text.split("\n")]
                items.append(Pending(text.wall_time, text.step, 2, _console(stream, lines),
                                     where=(f"{where} [console {stream[:40]} step {text.step}]", None)))
    return items


def _console(stream: str, lines: list[str]) -> Emit:
    return lambda b, step, ts: b.console(stream, lines, step, ts)


def _metrics(values: dict[str, float], source: Source, where: tuple[str, int | None]) -> Emit:
    return lambda b, step, ts: write_metrics(b, values, step, ts, source, where)


def _image_items(run: reader.TensorBoardRun, builder: RunBuilder, where: str) -> list[Pending]:
    notes = {(tag[len(ANNOTATIONS):], text.step, text.wall_time): text.text
             for tag, series in run.texts.items() if tag.startswith(ANNOTATIONS) for text in series}
    items = []
    for tag, series in run.images.items():
        key = keys.from_tracker(tag)
        if key is None:
            builder.unmapped(f"tensorboard: images under a reserved tag ({tag[:60]!r})", len(series))
            continue
        for image in series:
            note = notes.pop((tag, image.step, image.wall_time), None)
            items.append(Pending(image.wall_time, image.step, 1, _image(key, image, note),
                                 where=(f"{where} [image {tag[:80]} step {image.step}]", None)))
    if notes:
        builder.unmapped("tensorboard: box annotation without its image", len(notes))
    return items


def _image(key: str, image: reader.Image, note: str | None) -> Emit:
    """The PNG as TensorBoard holds it (with the boxes drawn in); the boxes and caption from the
    backend's annotation note (read when the image is written, so a bad note is reported there)."""
    def emit(b: Any, step: int, ts: float) -> None:
        boxes: list[Box] = []
        caption = None
        if note is not None:
            data = json.loads(note)
            caption = data.get("caption")
            boxes = [Box(b["x0"], b["y0"], b["x1"], b["y1"], b.get("label"), b.get("score"), b.get("class_id"))
                     for b in data.get("boxes") or []]
        b.image(key, image.png, step, ts, boxes=boxes, caption=caption)

    return emit


def _text_items(run: reader.TensorBoardRun, builder: RunBuilder, where: str) -> list[Pending]:
    items = []
    for tag, series in run.texts.items():
        key = keys.from_tracker(tag)
        if key is None:
            if not tag.startswith(keys.LOGGERHUB_PREFIX):
                builder.unmapped(f"tensorboard: text under a reserved tag ({tag[:60]!r})", len(series))
            continue  # the backend's own: run, params, status, annotations, artifact notes
        for text in series:
            items.append(Pending(text.wall_time, text.step, 2, _text(key, text),
                                 where=(f"{where} [text {tag[:80]} step {text.step}]", None)))
    return items


def _text(key: str, text: reader.Text) -> Emit:
    return lambda b, step, ts: b.text(key, text.text, step, ts)


# --------------------------------------------------------------------------- files and status


def _file_items(folder: Path, run: reader.TensorBoardRun, copies: set[Path], builder: RunBuilder,
                source: Source) -> list[Pending]:
    """The backend's copies under ``artifacts/`` and ``checkpoints/``, at the time of their note
    (added to ``copies``). A name logged again replaced the earlier copy: only the last version is
    still there. A name that leaves its folder, or a symlink out of the logdir, is refused."""
    items = []
    for place in FILE_FOLDERS:
        prefix = keys.reserved(place + "/")
        for tag, series in run.texts.items():
            if not tag.startswith(prefix):
                continue
            name = tag[len(prefix):]
            note = series[-1]
            if len(series) > 1:
                builder.unmapped(f"tensorboard: earlier copy under {place}/, replaced by a later one of its name",
                                 len(series) - 1)
            match = _NOTE.match(note.text)
            kind = ArtifactKind(match.group(1)) if match and match.group(1) in ArtifactKind._value2member_map_ \
                else ArtifactKind.MODEL if place == "checkpoints" else ArtifactKind.FILE
            path = folder / place / name
            copies.add(path)
            items.append(Pending(note.wall_time, note.step, 3,
                                 _artifact(folder / place, name, kind, place == "checkpoints", source),
                                 where=(f"{folder.name}/{place}/{name[:120]}", None)))
    return items


def _artifact(place: Path, name: str, kind: ArtifactKind, checkpoint: bool, source: Source) -> Emit:
    def emit(b: Any, step: int, ts: float) -> None:
        path = source.tree(contained(place, name))
        b.artifact(path, name, ts, kind=kind, step=step, checkpoint=checkpoint)

    return emit


def _report_other_files(folder: Path, runs: set[Path], copies: set[Path], builder: Any) -> None:
    """Files in the run's folder that no record holds (neither its event files, nor the backend's
    copies, nor another run's): counted, since nothing imports them."""
    count = _count_files(folder, runs, copies)
    if count:
        builder.unmapped("tensorboard: file in a run folder that no record holds", count)


def _count_files(folder: Path, runs: set[Path], copies: set[Path]) -> int:
    """Files under ``folder``, outside the other ``runs`` and the ``copies``, except the event
    files of ``folder`` itself."""
    count = 0
    pending = [folder]
    while pending:
        current = pending.pop()
        for path in current.iterdir():
            if path in copies or path in runs:
                continue
            if path.is_dir() and not path.is_symlink():
                pending.append(path)
            elif current != folder or "tfevents" not in path.name:
                count += 1
    return count


def _status(run: reader.TensorBoardRun, builder: Any) -> tuple[Status, float | None]:
    """The backend's ``_loggerhub_/status`` (the last one) and its time, the journal's end; else
    the HParams session end and its ``end_time_secs`` (0 when the writer gave none)."""
    if run.status is not None:
        try:
            return Status(run.status), run.ended_at
        except ValueError:
            builder.unmapped(f"tensorboard: unknown status {run.status[:40]!r}, imported as FINISHED")
            return Status.FINISHED, run.ended_at
    end = run.hparams_end_time or None
    if run.hparams_status in HPARAMS_STATUS:
        return HPARAMS_STATUS[run.hparams_status], end
    if run.hparams_status == "STATUS_RUNNING":
        builder.unmapped("tensorboard: HParams status RUNNING, imported as KILLED")
        return Status.KILLED, end
    return Status.FINISHED, None  # a plain logdir records no status: its writer simply stopped


_ERROR_HEAD = re.compile(r"^\*\*[A-Z]+\*\*: (?P<type>(?:[^:\\]|\\.)*): (?P<message>.*)$")


def _error(markdown: str, builder: Any) -> RunError | None:
    """The backend's ``_loggerhub_/error`` text back to a RunError: the head line
    ``**STATUS**: type: message`` (escaped as a table cell), then the traceback, indented."""
    head, _, rest = markdown.partition("\n")
    match = _ERROR_HEAD.match(head)
    if match is None:
        builder.unmapped("tensorboard: error text not in the backend's form")
        return None
    lines = rest.split("\n")[1:]  # after the blank line
    trace = "".join(line.removeprefix("    ") + "\n" for line in lines)
    return RunError(_uncell(match["type"]), _uncell(match["message"]), trace)


# --------------------------------------------------------------------------- markdown tables


def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a table the backend rendered (``_session.markdown_table``)."""
    lines = text.split("\n")
    if len(lines) < 2 or not lines[0].startswith("|"):
        return [], []
    header = _cells(lines[0])
    return header, [_cells(line) for line in lines[2:] if line.startswith("|")]


def _uncell(text: str) -> str:
    """One table cell's text as it was before ``_session._cell`` escaped it."""
    return _cells(f"| {text} |")[0]


def _cells(line: str) -> list[str]:
    """Split a row on unescaped ``|`` and undo the cell escapes: ``<br>``, backslashes, HTML."""
    cells: list[str] = []
    current: list[str] = []
    index = 1  # after the leading "|"
    while index < len(line):
        char = line[index]
        if char == "\\" and index + 1 < len(line):
            current.append(line[index + 1])
            index += 2
            continue
        if char == "|":
            cells.append("".join(current)[1:-1])  # the space on each side
            current = []
        else:
            current.append(char)
        index += 1
    return [html.unescape(cell.replace("<br>", "\n")) for cell in cells]
