"""Import Neptune runs into loggerhub: offline run folders, and Parquet exports of neptune-exporter.

Registered as the ``neptune`` importer (``loggerhub import neptune PATH``); see
``loggerhub.importing`` for the framework and ``docs/migrating-off-neptune.md`` for the user's
side. ``PATH`` is one of:

* an offline container ``.neptune/offline/run__<id>__<pid>__<key>/``, a ``.neptune`` or
  ``.neptune/offline`` folder, a folder holding ``.neptune``, or any folder below which such
  folders lie;
* a folder of Parquet files written by ``neptune-exporter export`` (its ``--data-path``), or one
  such file. The exporter's files (``--files-path``) are looked up in ``files_dir`` when given,
  else in ``<PATH>/../files``, ``<PATH>/files`` and ``PATH``: the exporter's default layout is
  ``exports/data`` beside ``exports/files``, and that pair is the export being imported.

Input is hostile: files are read only inside the folder being imported (the export, for
Parquet; symlinks resolved first). The Neptune client keeps an uploaded file as the path it had
on the logging machine, outside its ``.neptune`` folder: such files need ``--allow-read DIR``
(reported), or ``files_dir`` for an export. Unreadable lines, operations and rows are skipped and
reported with their file and line (row).

Both are first turned into the field dicts of :mod:`loggerhub_neptune.offline`
(``read_container``), so one mapping serves both. A run written by loggerhub's own Neptune backend
(it carries ``loggerhub/run_id``) has its parts merged and the backend's conventions inverted
(README.md, "What goes where"); any other run is mapped by field type.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import glob
import io
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from loggerhub_hookspecs import ArtifactKind, Box, RunError, Status, TableRole
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Importer,
    Limits,
    Option,
    OutsideSource,
    Pending,
    RunBuilder,
    Source,
    TooLarge,
    contained_member,
    safe_name,
    write_in_order,
    write_metrics,
)
from loggerhub_neptune import offline
from loggerhub_neptune.keys import RESERVED_ROOTS, from_segment_path, from_tracker, system_key, to_tracker

__all__ = ["NeptuneImporter", "import_runs"]

SOURCE = "neptune"
OWN = "loggerhub"
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"})
#: ``sys/*`` fields that describe the run (name, tags, status, id, times); the others are reported.
USED_SYS = frozenset({"sys/name", "sys/tags", "sys/failed", "sys/id", "sys/custom_run_id",
                      "sys/description", "sys/creation_time", "sys/modification_time", "sys/hostname"})
#: ``loggerhub/*`` bookkeeping of the backend, read for the run itself.
USED_OWN = frozenset({"loggerhub/run_id", "loggerhub/project", "loggerhub/part", "loggerhub/status",
                      "loggerhub/ended_at", "loggerhub/error/type", "loggerhub/error/message"})
#: Where the backend (like Neptune's client) keeps the traceback of a run that failed.
TRACEBACK = "monitoring/traceback"
#: The run's environment: where Neptune's client (``dependencies="infer"``, its git tracking) and
#: the backend put it; read into one ``context`` record.
REQUIREMENTS, DIFF, HOSTNAME = "source_code/requirements", "source_code/diff", "sys/hostname"
CONTEXT, GIT = f"{OWN}/context/", f"{OWN}/git/"
#: Fields of a monitoring namespace that describe the process rather than sample it.
PROCESS_FIELDS = frozenset({"hostname", "pid", "tid"})
BOXES, NONFINITE, LONG_TEXTS, FIGURES = (f"{OWN}/boxes/", f"{OWN}/nonfinite/", f"{OWN}/long_texts/",
                                         f"{OWN}/figures")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_INTEGER = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_ATOMS = ("float", "int", "bool", "string", "datetime")


class NeptuneImporter(Importer):
    name = SOURCE
    location_help = "a Neptune offline folder (.neptune, a container) or a neptune-exporter Parquet export"
    options = (Option("files_dir", "the exporter's --files-path, when not beside the Parquet data (allowed "
                                   "to be read, and reported)", "DIR"),)

    def source(self, location: str, limits: Limits, allow: Sequence[Path], options: Mapping[str, Any]) -> Source:
        """The folder being imported: PATH; for an exporter's ``data`` folder (or a file in it)
        beside its ``files`` folder, the export that holds both."""
        source = super().source(location, limits, allow, options)
        assert source.root is not None
        folder = source.root
        if not (folder / "files").is_dir() and (folder.parent / "files").is_dir() and not _offline_containers(
                folder, None):
            source.root = folder.parent
        if options.get("files_dir"):
            source.allow += (Path(options["files_dir"]).expanduser().absolute(),)
        return source

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        """Import every Neptune run found at the location (see the module docstring)."""
        path = Path(source.location).expanduser().absolute()
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        containers = [] if path.is_file() else _offline_containers(path, source)
        if containers:
            runs = _offline_runs(containers, source)
        else:
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if p.is_file())
            runs = _parquet_runs(path, files, options.get("files_dir"), source)
        found = False
        for run in runs:
            found = True
            _import_run(run, builder_factory, source)
        if not found:
            raise LookupError(f"no Neptune offline runs or neptune-exporter Parquet files under {path}")


#: ``loggerhub.importers`` entry point.
import_runs = NeptuneImporter()


# ---------------------------------------------------------------------------------------------
# Sources: each yields runs as a list of parts, each part a field dict shaped like
# offline.read_container()["fields"], plus what the mapping needs beside the fields.


@dataclass
class Part:
    """One stored Neptune run: an offline container, or one run of a Parquet export."""

    id: str  # the offline container id, or the export's project and run id
    fields: dict[str, dict[str, Any]]
    times: dict[str, float] = field(default_factory=dict)  # path -> when the field was written
    first: float | None = None
    last: float | None = None
    project: str | None = None
    #: Field path -> the log file and line of its first operation, for reports.
    where: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        """loggerhub's run id, in a run its Neptune backend wrote."""
        value = self.fields.get(f"{OWN}/run_id", {}).get("value")
        return value if isinstance(value, str) and value else None


def _offline_containers(path: Path, source: Source | None) -> list[Path]:
    if (path / "metadata.json").is_file():
        return [path]
    found = _containers(path)
    if not found and path.name == offline.OFFLINE_DIRECTORY:
        found = _containers(path.parent)
    if not found and source is not None:
        found = [c for data in sorted(path.rglob(offline.DATA_DIRECTORY)) if not data.is_symlink()
                 for c in _containers(data)]
    return found


def _containers(data_dir: Path) -> list[Path]:
    """``offline.find_containers``, for any ``metadata.json``: oldest first, by its text."""
    root = offline.offline_root(data_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / "metadata.json").is_file()]
    return sorted(found, key=lambda p: (str(_json_file(p / "metadata.json").get("createdAt", "")), p.name))


def _offline_runs(containers: list[Path], source: Source) -> Iterator[list[Part]]:
    """Containers grouped into runs: the parts of one loggerhub run become one run."""
    groups: dict[str, list[tuple[int, Part]]] = {}
    for order, container in enumerate(containers):
        meta = _json_file(container / "metadata.json")
        if meta.get("containerType", "run") != "run":
            source.skip(container / "metadata.json", None,
                        f"holds a {str(meta['containerType'])[:40]}, not a run; it was not imported")
            continue
        part, run_id, number = _scan(container, source)
        key = f"loggerhub:{run_id}" if run_id else f"container:{container}"
        groups.setdefault(key, []).append((number if run_id else order, part))
    for members in groups.values():
        parts = [part for _, part in sorted(members, key=lambda member: member[0])]
        for part in parts:  # read one run at a time: image series are held in memory
            folder = Path(part.id)
            fields: dict[str, dict[str, Any]] = {}
            for op, where in _operations(folder, source, report=False):
                try:
                    offline._apply(fields, op, folder)
                except (ValueError, TypeError, KeyError, AttributeError) as error:
                    source.skip(*where, f"an operation this reader cannot apply: {type(error).__name__}")
            name = folder.name.split("__")
            part.id, part.fields = (name[1] if len(name) > 1 else folder.name), fields
        yield parts


def _scan(container: Path, source: Source) -> tuple[Part, str | None, int]:
    """A container's field times, and its loggerhub run id and part number when it has them."""
    # Until the container is read, the part's id is the folder to read.
    part = Part(id=str(container), fields={}, first=_iso_seconds(
        _json_file(container / "metadata.json").get("createdAt")))
    run_id, number = None, 0
    for op, where in _operations(container, source, report=True):
        part.where.setdefault("/".join(op["path"]), where)
        at = op.get("at")
        if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
            part.times["/".join(op["path"])] = at
            part.first = at if part.first is None else min(part.first, at)
            part.last = at if part.last is None else max(part.last, at)
        if op["path"] == [OWN, "run_id"] and op["type"] == "AssignString" and isinstance(op.get("value"), str):
            run_id = op["value"]
        elif op["path"] == [OWN, "part"] and op["type"] == "AssignInt" and type(op.get("value")) is int:
            number = op["value"]
    return part, run_id, number


def _operations(container: Path, source: Source, *, report: bool) -> Iterator[tuple[dict[str, Any], tuple[str, int]]]:
    """The container's operations, each checked, with its file and line (``offline.read_operations``
    for hostile input). A line that does not parse, torn or not, is skipped, and reported once
    (by the first pass, ``report``)."""
    logs = []
    for log in container.glob("data-*.log"):
        number = log.stem.split("-")[-1]
        if number.isdigit() and log.is_file():
            logs.append((int(number), log))
    for _, log in sorted(logs):
        where = f"{container.name}/{log.name}"
        checked = source.lines(source.contained(log)) if report else _quiet_lines(log, source)
        for line_number, line in checked:
            try:
                op = _operation(line)
            except (ValueError, TypeError, KeyError, RecursionError) as error:
                if report:
                    source.skip(where, line_number, error if isinstance(error, ValueError) else
                                f"{type(error).__name__}: {error}")
                continue
            yield op, (where, line_number)


def _quiet_lines(log: Path, source: Source) -> Iterator[tuple[int, bytes]]:
    from loggerhub_hookspecs.importers import lines_capped

    with source.contained(log).open("rb") as handle:
        for number, line in lines_capped(handle, source.limits.item_bytes):
            if line is not None:
                yield number, line


def _operation(line: bytes) -> dict[str, Any]:
    """One line of a log as an operation, or ValueError saying what is wrong with it (never
    quoting values: a line may hold a secret)."""
    if not line.strip():
        raise ValueError("an empty line")
    try:
        entry = json.loads(line)
    except ValueError:
        raise ValueError("a line that is not JSON (torn, or not written by the client)") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("obj"), dict):
        raise ValueError("a line that is not an operation object")
    op = entry["obj"]
    path = op.get("path")
    if not isinstance(op.get("type"), str) or not isinstance(path, list) or not path \
            or not all(isinstance(p, str) and p for p in path):
        raise ValueError("an operation without a type and a path of names")
    kind = op["type"]
    if kind in ("LogFloats", "LogStrings", "LogImages"):
        values = op.get("values")
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise ValueError(f"a {kind} operation without its list of values")
        for value in values:
            for name in ("step", "ts"):
                number = value.get(name)
                if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                                           or not math.isfinite(number)):
                    raise ValueError(f"a {kind} value whose {name} is not a number")
            if kind == "LogFloats" and value.get("value") is not None and (
                    isinstance(value["value"], bool) or not isinstance(value["value"], (int, float))):
                raise ValueError(f"{'/'.join(path)[:120]}: a value that is not a number")
            if kind == "LogStrings" and value.get("value") is not None and not isinstance(value["value"], str):
                raise ValueError(f"{'/'.join(path)[:120]}: a value that is not text")
    for name in ("file_path", "tmp_file_name", "ext", "file_content"):
        if op.get(name) is not None and not isinstance(op[name], str):
            raise ValueError(f"an {kind} operation whose {name} is not text")
    if kind == "UploadFileSet" and not (isinstance(op.get("file_globs"), list)
                                        and all(isinstance(g, str) for g in op["file_globs"])):
        raise ValueError("an UploadFileSet operation without its list of globs")
    if kind in ("AddStrings", "RemoveStrings") and not (isinstance(op.get("values"), list)
                                                          and all(isinstance(v, str) for v in op["values"])):
        raise ValueError(f"a {kind} operation without its list of texts")
    if kind in ("AssignFloat", "AssignInt") and (isinstance(op.get("value"), bool)
                                                 or not isinstance(op.get("value"), (int, float))):
        raise ValueError(f"an {kind} operation whose value is not a number")
    at = entry.get("at")
    return {**op, "version": entry.get("version"),
            "at": at if isinstance(at, (int, float)) and not isinstance(at, bool) else None}


def _parquet_runs(path: Path, files: list[Path], files_dir: str | None, source: Source) -> Iterator[list[Part]]:
    """Runs of a neptune-exporter export, read one run at a time."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading Neptune Parquet exports needs pyarrow: "
                          "pip install 'loggerhub-neptune[parquet]'") from None
    roots = [Path(files_dir).expanduser().absolute()] if files_dir else [
        (path if path.is_dir() else path.parent).parent / "files",
        (path if path.is_dir() else path.parent) / "files",
        path if path.is_dir() else path.parent]
    where: dict[tuple[str, str], list[Path]] = {}
    identity: dict[tuple[str, str], dict[str, Any]] = {}
    readable = []
    for file in files:
        try:
            source.contained(file)
            _check_parquet_size(pq.ParquetFile(file), source.limits)
            table = pq.read_table(file, columns=["project_id", "run_id", "attribute_path", "string_value",
                                                 "int_value"])
            groups = table.group_by(["project_id", "run_id"]).aggregate([]).to_pylist()
            marks = table.filter(pc.is_in(table["attribute_path"], pa.array([f"{OWN}/run_id", f"{OWN}/part"])))
            marks_rows = marks.to_pylist()
        except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as error:
            source.skip(file, None, f"not a readable neptune-exporter Parquet file: {type(error).__name__}")
            continue
        readable.append(file)
        for row in groups:
            if isinstance(row["project_id"], str) and isinstance(row["run_id"], str):
                where.setdefault((row["project_id"], row["run_id"]), []).append(file)
            else:
                source.skip(file, None, "rows without a project_id and run_id of text")
        for row in marks_rows:
            own = identity.setdefault((row["project_id"], row["run_id"]), {})
            if row["attribute_path"] == f"{OWN}/run_id" and isinstance(row["string_value"], str):
                own["run_id"] = row["string_value"]
            elif isinstance(row["int_value"], int):
                own["part"] = row["int_value"]
    groups_by_run: dict[str, list[tuple[int, tuple[str, str]]]] = {}
    for order, run in enumerate(sorted(where)):
        own = identity.get(run, {})
        key = f"loggerhub:{own['run_id']}" if own.get("run_id") else f"export:{run}"
        groups_by_run.setdefault(key, []).append((own.get("part") or order, run))
    for members in groups_by_run.values():
        parts = []
        for _, (project, run_id) in sorted(members):
            rows: list[tuple[Path, int, dict[str, Any]]] = []
            for file in where[(project, run_id)]:
                try:
                    table = pq.read_table(file, filters=[("project_id", "=", project), ("run_id", "=", run_id)])
                    rows.extend((file, index, row) for index, row in enumerate(table.to_pylist()))
                except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as error:
                    source.skip(file, None, f"unreadable rows of run {run_id[:80]!r}: {type(error).__name__}")
            parts.append(_parquet_part(project, run_id, rows, roots, source))
        yield parts


def _check_parquet_size(file: Any, limits: Limits) -> None:
    """A Parquet file is read whole: what it inflates to is capped like any file."""
    meta = file.metadata
    inflated = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if inflated > limits.file_bytes:
        raise TooLarge(f"a Parquet file that inflates to {inflated} bytes (--limit file_bytes=SIZE)")


def _parquet_part(project: str, run_id: str, rows: list[tuple[Path, int, dict[str, Any]]], roots: list[Path],
                  source: Source) -> Part:
    fields: dict[str, dict[str, Any]] = {}
    first = last = None
    for file, index, row in rows:
        try:
            path, kind = row.get("attribute_path"), row.get("attribute_type")
            if not isinstance(path, str) or not path or not isinstance(kind, str):
                raise ValueError("a row without an attribute_path and attribute_type of text")
            stamp = row.get("timestamp")
            if stamp is not None and not isinstance(stamp, dt.datetime):
                raise ValueError("a timestamp that is not a time")
            ts = stamp.timestamp() if stamp is not None else None
            step = _decimal_step(row.get("step"))
            _parquet_field(fields, path, kind, row, step, ts, roots, source)
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError) as error:
            reason = error if isinstance(error, ValueError) else type(error).__name__
            source.skip(file, index + 1, f"row {index + 1}: {reason}")
            continue
        if ts is not None:
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
    for series in fields.values():
        if "values" in series and series["type"] != "string_set":
            series["values"].sort(key=lambda v: (v["step"] is None, v["step"] or 0))
    created = fields.get("sys/creation_time", {}).get("value")
    if isinstance(created, int):
        first = created / 1000 if first is None else min(first, created / 1000)
    modified = fields.get("sys/modification_time", {}).get("value")
    if isinstance(modified, int):
        last = modified / 1000 if last is None else max(last, modified / 1000)
    return Part(id=f"{project}/{run_id}", fields=fields, first=first, last=last, project=project)


def _parquet_field(fields: dict[str, dict[str, Any]], path: str, kind: str, row: dict[str, Any],
                   step: int | float | None, ts: float | None, roots: list[Path], source: Source) -> None:
    if kind in _ATOMS:
        value = row.get(f"{kind}_value")
        if kind == "datetime" and value is not None:
            value = round(value.timestamp() * 1000)  # milliseconds, as offline operations hold it
        fields[path] = {"type": kind, "value": value}
    elif kind == "string_set":
        fields[path] = {"type": "string_set", "values": sorted(str(v) for v in row.get("string_set_value") or [])}
    elif kind in ("float_series", "string_series"):
        value = row.get("float_value" if kind == "float_series" else "string_value")
        if kind == "float_series" and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{path[:120]}: a value that is not a number")
        fields.setdefault(path, {"type": kind, "values": []})["values"].append(
            {"step": step, "ts": ts, "value": value})
    elif kind == "file_series":
        fields.setdefault(path, {"type": "file_series", "values": []})["values"].append(
            {"step": step, "ts": ts, "path": _export_file(row, roots, source)})
    elif kind == "file":
        file = _export_file(row, roots, source)
        fields[path] = {"type": "file", "ext": Path(file).suffix.lstrip("."), "path": file}
    elif kind == "file_set":
        fields[path] = {"type": "file_set", "globs": [], "dir": _export_file(row, roots, source)}
    else:  # histogram_series, artifact, and types newer than this reader
        fields[path] = {"type": kind}


def _export_file(row: dict[str, Any], roots: list[Path], source: Source) -> str:
    """The exporter's file for a row, inside the export (or ``files_dir``)."""
    value = row.get("file_value")
    relative = value.get("path") if isinstance(value, dict) else None
    if not isinstance(relative, str) or not relative:
        raise ValueError("a file row without the file's path")
    relative = contained_member(relative)  # relative, without "..": the exporter writes no other
    for root in roots:
        if (root / relative).exists():
            return str(root / relative)
    return str(roots[0] / relative)  # missing: reported when the file is imported


def _decimal_step(step: Any) -> int | float | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (Decimal, int, float)) or not math.isfinite(step):
        raise ValueError("a step that is not a number")
    if isinstance(step, Decimal):
        return int(step) if step == step.to_integral_value() else float(step)
    return int(step) if float(step).is_integer() else float(step)


# ---------------------------------------------------------------------------------------------
# Mapping


@dataclass(order=True)
class _Record:
    ts: float
    step: int
    order: int
    emit: Callable[[RunBuilder], None] = field(compare=False)
    what: str = field(compare=False)
    where: tuple[str, int | None] = field(compare=False, default=("", None))


@dataclass
class _Plan:
    """One run, ready for the builder: the run's description and its records in any order."""

    name: str
    source_id: str
    project: str | None
    config: dict[str, Any]
    tags: dict[str, str]
    status: Status
    records: list[_Record] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    error: RunError | None = None


def _import_run(parts: list[Part], factory: BuilderFactory, source: Source) -> None:
    merged = offline.merge_parts([{"fields": p.fields} for p in parts])
    times: dict[str, float] = {}
    for part in parts:
        times.update(part.times)
    mapper = _Mapper(parts, merged, times, source)
    plan = mapper.plan()
    builder = factory(source_id=plan.source_id, name=plan.name, started_at=plan.started_at,
                      config=plan.config, tags=plan.tags, source_project=plan.project)
    if builder is None:
        return
    mapper.scratch = builder.scratch
    with builder:
        for reason in plan.unmapped:
            builder.unmapped(reason)
        items = [Pending(record.ts, record.step, record.order, _emit(record), where=record.where)
                 for record in plan.records]
        write_in_order(items, builder, source)
        builder.end(plan.status, plan.ended_at, plan.error)


def _emit(record: _Record) -> Callable[[RunBuilder, int, float], None]:
    return lambda builder, step, ts: record.emit(builder)


class _Mapper:
    """Turns a run's merged fields into a :class:`_Plan`."""

    def __init__(self, parts: list[Part], fields: dict[str, dict[str, Any]], times: dict[str, float],
                 source: Source) -> None:
        self.parts = parts
        self.fields = fields
        self.times = times
        self.source = source
        self.where = {path: where for part in reversed(parts) for path, where in part.where.items()}
        #: The builder's scratch folder, once there is a builder (files are written into it).
        self.scratch: Path | None = None
        self.own = parts[0].run_id is not None
        self.records: list[_Record] = []
        self.unmapped: list[str] = []
        self.config: dict[str, Any] = {}
        self.first = min((p.first for p in parts if p.first is not None), default=None)
        self.last = max((p.last for p in parts if p.last is not None), default=None)
        self.claimed: dict[tuple[str, str], str] = {}  # (kind, loggerhub key) -> Neptune path
        # merge_parts keeps the last part's string set; figures of every part count.
        self.figures = {v for p in parts for v in p.fields.get(FIGURES, {}).get("values", [])}
        self.boxes = self._boxes() if self.own else {}
        self.long_texts = self._long_texts() if self.own else {}
        self.series: list[tuple[str, str, list[tuple[int, float | None, float]]]] = []
        self.context_fields: dict[str, dict[str, Any]] = {}
        self.samples: dict[float, dict[str, float]] = {}
        self._names = itertools.count()

    # -- the run ---------------------------------------------------------------------------------

    def plan(self) -> _Plan:
        for path, item in sorted(self.fields.items()):
            try:
                self._field(path, item)
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                # The type only: the message may quote a value, and a value may be a secret.
                file, line = self.where.get(path, (path, 0))
                self.source.skip(file, line or None, f"{path[:120]}: {type(error).__name__}")
        self._metrics()
        self._system_metrics()
        self._context()
        for key, step in self.long_texts:
            self.unmapped.append(f"long text without its string series entry: {key} step {step}")
        for key, entries in self.boxes.items():
            self.unmapped.extend([f"box of {key} without its image"] * len(entries))
        times = [r.ts for r in self.records] + [t for t in (self.first, self.last) if t is not None]
        started = min(times, default=0.0)
        ended = max(times, default=started)
        stamped = self._atom(f"{OWN}/ended_at") if self.own else None
        if isinstance(stamped, int) and not isinstance(stamped, bool):
            # The journal's end, where the client's operation times are the delivery's: later,
            # by as much as the delivery ran behind the training loop. The client keeps whole
            # milliseconds: a record of the run's last millisecond may be later.
            ended = max([stamped / 1000, *(r.ts for r in self.records)])
        return _Plan(name=self._name(), source_id=self._source_id(), project=self._project(),
                     config=self.config, tags=self._tags(), status=self._status(),
                     records=self.records, unmapped=self.unmapped, started_at=started, ended_at=ended,
                     error=self._error())

    def _error(self) -> RunError | None:
        """Why a run the backend wrote failed: its ``loggerhub/error/*`` fields, and the
        traceback it wrote below its header line in ``monitoring/traceback``, one line per
        value (blank lines are not kept)."""
        kind, message = self._atom(f"{OWN}/error/type"), self._atom(f"{OWN}/error/message")
        if not self.own or not isinstance(kind, str) or not isinstance(message, str):
            return None
        lines = [str(v.get("value")) for v in self.fields.get(TRACEBACK, {}).get("values", [])]
        return RunError(kind, message, "".join(line + "\n" for line in lines[1:]))

    def _atom(self, path: str) -> Any:
        return self.fields.get(path, {}).get("value")

    def _source_id(self) -> str:
        if self.own:
            return str(self.parts[0].run_id)
        for path in ("sys/custom_run_id", "sys/id"):
            value = self._atom(path)
            if isinstance(value, str) and value:
                # sys/id (DET-12) is only unique within its project.
                project = self.parts[0].project
                return f"{project}/{value}" if project and path == "sys/id" else value
        return self.parts[0].id

    def _name(self) -> str:
        name = self._atom("sys/name")
        return name if isinstance(name, str) and name else self._source_id()

    def _project(self) -> str | None:
        project = self._atom(f"{OWN}/project") if self.own else None
        return project if isinstance(project, str) and project else self.parts[0].project

    def _tags(self) -> dict[str, str]:
        tags: dict[str, str] = {}
        for tag in self.fields.get("sys/tags", {}).get("values", []):
            # The backend writes a tag as key:value, or key when the value is empty.
            key, sep, value = tag.partition(":")
            if not sep or key in tags:
                key, value = tag, ""
            tags[key] = value
        description = self._atom("sys/description")
        if isinstance(description, str) and description:
            tags["description"] = description
        return tags

    def _status(self) -> Status:
        status = self._atom(f"{OWN}/status") if self.own else None
        if status in {s.value for s in Status}:
            return Status(status)
        if self._atom("sys/failed") is True:
            return Status.FAILED
        # A loggerhub run still RUNNING was never ended: `loggerhub sync` would end it KILLED too.
        return Status.KILLED if self.own else Status.FINISHED

    # -- fields ----------------------------------------------------------------------------------

    def _field(self, path: str, item: dict[str, Any]) -> None:
        root = path.split("/", 1)[0]
        if self.own and path == TRACEBACK and self._error() is not None:
            return  # the run's error, with its end
        if path in (REQUIREMENTS, DIFF, HOSTNAME) or (self.own and path.startswith((CONTEXT, GIT))):
            self.context_fields[path] = item
            return
        if root == "monitoring" and path.count("/") == 2 and self._monitoring(path, item):
            return
        if root == "sys":
            if path not in USED_SYS:
                self.unmapped.append(f"Neptune system field {path}")
        elif self.own and root == OWN:
            self._own_field(path, item)
        elif self.own and root == "parameters" and item["type"] in _ATOMS:
            self._param(from_segment_path(path[len("parameters/"):]), path, item)
        elif self.own and root in ("models", "artifacts"):
            name = from_segment_path(path[len(root) + 1:])
            self._artifact(name, path, item, checkpoint=root == "models")
        elif self.own and root not in RESERVED_ROOTS:
            self._by_type(from_tracker(path), path, item)
        else:
            self._by_type(path, path, item)

    def _own_field(self, path: str, item: dict[str, Any]) -> None:
        if path in (f"{OWN}/group", f"{OWN}/rank", f"{OWN}/world_size"):
            self.unmapped.append(f"{path}: the run's group (an import makes runs without groups)")
            return
        if path in USED_OWN or path == FIGURES or path.startswith(BOXES):
            return  # read for the run, the figures and the images
        if path.startswith(LONG_TEXTS) and item["type"] == "file":
            return  # read with the texts
        if path.startswith(NONFINITE) and item["type"] == "string_series":
            key = from_segment_path(path[len(NONFINITE):])
            points = []
            for step, value in self._steps(path, item["values"]):
                if value["value"] in _NONFINITE:
                    points.append((step, value["ts"], _NONFINITE[value["value"]]))
                else:
                    self.unmapped.append(f"{path}: a value that is not nan, inf or -inf")
            # The same metric as the float series at to_tracker(key), so the same claim.
            self.series.append((key, to_tracker(key), points))
            return
        self.unmapped.append(f"loggerhub field the backend does not write: {path}")

    def _by_type(self, key: str, path: str, item: dict[str, Any]) -> None:
        kind = item["type"]
        if kind in _ATOMS or kind == "string_set":
            self._param(key, path, item)
        elif kind == "float_series":
            points = []
            for step, value in self._steps(path, item["values"]):
                if value["value"] is None:
                    self.unmapped.append(f"{path}: a point without a value")
                else:
                    points.append((step, value["ts"], float(value["value"])))
            self.series.append((key, path, points))
        elif kind == "string_series":
            self._texts(key, path, item)
        elif kind in ("image_series", "file_series"):
            self._images(key, path, item)
        elif kind == "file":
            self._file(key, path, item)
        elif kind == "file_set":
            self._artifact(key, path, item)
        else:
            self.unmapped.append(f"Neptune {kind} field (loggerhub has no such record)")

    def _claim(self, kind: str, key: str, path: str) -> bool:
        owner = self.claimed.setdefault((kind, key), path)
        if owner != path:
            self.unmapped.append(f"{path}: its key {key!r} is already taken by {owner}")
            return False
        return True

    def _ts(self, path: str) -> float:
        """When an atom or a file was written: its operation's time, else the run's end."""
        return self.times.get(path, self.last if self.last is not None else self.first or 0.0)

    def _add(self, ts: float, step: int, what: str, emit: Callable[[RunBuilder], None], path: str) -> None:
        where = self.where.get(path, (path, None))
        self.records.append(_Record(ts, step, len(self.records), emit, what, where))

    def _steps(self, path: str, values: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Values with integer steps; a missing step follows the one before, as the server numbers it."""
        previous = -1
        for value in values:
            step = value.get("step")
            if step is None:
                step = previous + 1
            if isinstance(step, float):
                if not step.is_integer():
                    self.unmapped.append(f"non-integer step in {path}")
                    continue
                step = int(step)
            previous = step
            yield step, value

    # -- params ----------------------------------------------------------------------------------

    def _param(self, key: str, path: str, item: dict[str, Any]) -> None:
        if not self._claim("param", key, path):
            return
        kind, value = item["type"], item.get("value")
        if kind == "string_set":
            value = list(item["values"])
        elif kind == "datetime" and value is not None:
            value = dt.datetime.fromtimestamp(value / 1000, tz=dt.timezone.utc).isoformat()
        elif kind == "string" and self.own and path.startswith("parameters/"):
            value = _own_param(value)
        self.config[key] = value

    # -- metrics ---------------------------------------------------------------------------------

    def _metrics(self) -> None:
        groups: dict[tuple[float, int], list[dict[str, float]]] = {}
        paths: dict[tuple[float, int], str] = {}
        for key, path, points in self.series:
            if not self._claim("metric", key, path):
                continue
            for step, ts, value in points:
                at = ts if ts is not None else self._ts(path)
                # Points logged together share step and time: they become one record again.
                batch = groups.setdefault((at, step), [])
                paths.setdefault((at, step), path)
                target = next((b for b in batch if key not in b), None)
                if target is None:
                    target = {}
                    batch.append(target)
                target[key] = value
        for (ts, step), batch in groups.items():
            for values in batch:
                self._add(ts, step, f"metrics at step {step}",
                          functools.partial(_metrics, values, step, ts, self.source, self.where.get(
                              paths[(ts, step)], (paths[(ts, step)], None))), paths[(ts, step)])

    # -- telemetry -------------------------------------------------------------------------------

    def _monitoring(self, path: str, item: dict[str, Any]) -> bool:
        """A field of a monitoring namespace (``monitoring/<hash>/<name>``): a system series,
        stdout or stderr, or what names the process. False for another field (a traceback, a
        user's series), which is mapped as any field is."""
        name = path.rsplit("/", 1)[1]
        if name in ("stdout", "stderr") and item["type"] == "string_series":
            self._console(name, path, item["values"])
            return True
        if name in PROCESS_FIELDS and item["type"] == "string":
            if name == "hostname":
                self.context_fields.setdefault(HOSTNAME, item)
            return True
        found = system_key(name)
        if found is None or item["type"] != "float_series":
            return False
        key, factor = found
        for value in item["values"]:
            if value.get("value") is None:
                self.unmapped.append(f"{path}: a point without a value")
                continue
            at = value["ts"] if value.get("ts") is not None else self._ts(path)
            # Neptune's monitor samples every series of a namespace together: one record a time.
            self.samples.setdefault(at, {})[key] = float(value["value"]) * factor
        return True

    def _system_metrics(self) -> None:
        for ts, values in self.samples.items():
            # The training step at a sample is not kept: 0, as RunBuilder.system_metrics asks.
            self._add(ts, 0, "system metrics", functools.partial(_telemetry, "system_metrics", values, 0, ts),
                      "monitoring")

    def _console(self, stream: str, path: str, values: list[dict[str, Any]]) -> None:
        # Lines written together share their time: one console record again.
        for ts, group in itertools.groupby(values, key=lambda v: v.get("ts")):
            at = ts if ts is not None else self._ts(path)
            lines = [str(v.get("value") or "") for v in group]
            self._add(at, 0, f"console {path}", functools.partial(_telemetry, "console", stream, lines, 0, at),
                      path)

    def _context(self) -> None:
        fields = self.context_fields
        if not fields:
            return

        def atom(path: str, default: Any = None) -> Any:
            return fields.get(path, {}).get("value", default)

        def listed(path: str) -> list[str]:
            try:
                loaded = json.loads(atom(path) or "[]")
            except (TypeError, ValueError):
                return []
            return [str(v) for v in loaded] if isinstance(loaded, list) else []

        packages: dict[str, str] = {}
        if REQUIREMENTS in fields:
            for line in self._read(fields[REQUIREMENTS]).decode("utf-8", "replace").splitlines():
                name, sep, version = line.strip().partition("==")
                if sep and name:
                    packages[name] = version
        environment = {}
        with_environment = atom(f"{CONTEXT}environment")
        if isinstance(with_environment, str):
            try:
                loaded = json.loads(with_environment)
                environment = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
            except ValueError:
                self.unmapped.append(f"{CONTEXT}environment: not a JSON object")
        git = None
        if isinstance(atom(f"{GIT}commit"), str):
            git = {"commit": atom(f"{GIT}commit"), "branch": atom(f"{GIT}branch"), "remote": atom(f"{GIT}remote"),
                   "dirty": bool(atom(f"{GIT}dirty", False)), "untracked": listed(f"{GIT}untracked")}
        diff = None
        if DIFF in fields and git is None:
            self.unmapped.append(f"{DIFF} without the commit it applies to (a context holds a diff with its git state)")
        elif DIFF in fields:
            try:
                diff = self._read(fields[DIFF])
            except (OSError, OutsideSource) as error:
                self.unmapped.append(f"{DIFF}: {type(error).__name__} (the run's git diff is not imported)")
        captured = atom(f"{CONTEXT}captured_at")
        ts = captured / 1000 if isinstance(captured, int) else (self.first or 0.0)
        cpu_count = atom(f"{CONTEXT}cpu_count")
        context = dict(
            command=listed(f"{CONTEXT}command"), python_version=str(atom(f"{CONTEXT}python_version", "")),
            python_executable=str(atom(f"{CONTEXT}python_executable", "")), hostname=str(atom(HOSTNAME, "")),
            os=str(atom(f"{CONTEXT}os", "")), cpu=str(atom(f"{CONTEXT}cpu", "")),
            cpu_count=cpu_count if isinstance(cpu_count, int) else None, gpus=listed(f"{CONTEXT}gpus"),
            packages=packages, environment=environment, git=git, diff=diff)
        self._add(ts, 0, "context", functools.partial(_context_record, ts, context), "loggerhub/context")

    # -- texts -----------------------------------------------------------------------------------

    def _texts(self, key: str, path: str, item: dict[str, Any]) -> None:
        if not self._claim("text", key, path):
            return
        for step, value in self._steps(path, item["values"]):
            text = self.long_texts.pop((key, step), None)
            if text is None:
                text = str(value["value"])
            ts = value["ts"] if value["ts"] is not None else self._ts(path)
            self._add(ts, step, f"text {path}", functools.partial(_text, key, text, step, ts), path)

    def _long_texts(self) -> dict[tuple[str, int], str]:
        """The whole of each text longer than a string series value holds, by key and step."""
        texts = {}
        for path, item in self.fields.items():
            if path.startswith(LONG_TEXTS) and item["type"] == "file":
                key, _, step = path[len(LONG_TEXTS):].rpartition("/")
                try:
                    texts[(from_segment_path(key), int(step))] = self._read(item).decode("utf-8")
                except (ValueError, OSError) as error:
                    self.unmapped.append(f"long text {path}: {type(error).__name__}")
        return texts

    # -- images ----------------------------------------------------------------------------------

    def _boxes(self) -> dict[str, list[tuple[float | None, dict[str, Any]]]]:
        boxes: dict[str, list[tuple[float | None, dict[str, Any]]]] = {}
        for path, item in self.fields.items():
            if path.startswith(BOXES) and item["type"] == "string_series":
                key = from_segment_path(path[len(BOXES):])
                for value in item["values"]:
                    try:
                        boxes.setdefault(key, []).append((value["ts"], json.loads(value["value"])))
                    except (TypeError, ValueError):
                        self.unmapped.append(f"{path}: an entry that is not box JSON")
        return boxes

    def _images(self, key: str, path: str, item: dict[str, Any]) -> None:
        figure = self.own and path in self.figures
        if not self._claim("figure" if figure else "image", key, path):
            return
        values = list(self._steps(path, item["values"]))
        boxes = self._match_boxes(key, values) if self.own else {}
        for index, (step, value) in enumerate(values):
            ts = value["ts"] if value["ts"] is not None else self._ts(path)
            caption = value.get("name") or value.get("description") or None
            if figure:
                self._add(ts, step, f"figure {path}", functools.partial(self._figure, key, value, step, ts), path)
            else:
                self._add(ts, step, f"image {path}", functools.partial(
                    self._image, key, path, value, step, ts, caption, boxes.get(index, [])), path)

    def _figure(self, key: str, value: dict[str, Any], step: int, ts: float, builder: RunBuilder) -> None:
        builder.figure(key, self._read(value), step, ts)

    def _image(self, key: str, path: str, value: dict[str, Any], step: int, ts: float, caption: str | None,
               boxes: list[Box], builder: RunBuilder) -> None:
        data = self._read(value)
        try:
            builder.image(key, data, step, ts, boxes=boxes, caption=caption)
        except OSError:  # not an image Pillow reads: keep the file
            name = f"{path}/{step}.{value.get('ext') or Path(value.get('path') or 'x.bin').suffix.lstrip('.')}"
            builder.artifact(self._scratch_file(name, data), name, ts, step=step)

    def _match_boxes(self, key: str, values: list[tuple[int, dict[str, Any]]]) -> dict[int, list[Box]]:
        """The boxes of each image, by the step in their JSON, then by time among images of one step."""
        matched: dict[int, list[tuple[int, Box]]] = {}
        for ts, entry in self.boxes.pop(key, []):
            same_step = [i for i, (step, _) in enumerate(values) if step == entry.get("step")]
            if len(same_step) > 1:
                same_step = [i for i in same_step if values[i][1]["ts"] == ts]
            if len(same_step) != 1:
                self.unmapped.append(f"box of {key} at step {entry.get('step')} without its image")
                continue
            box = Box(entry["x0"], entry["y0"], entry["x1"], entry["y1"], entry.get("label"),
                      entry.get("score"), entry.get("class_id"))
            matched.setdefault(same_step[0], []).append((entry.get("index", 0), box))
        return {i: [box for _, box in sorted(found, key=lambda pair: pair[0])] for i, found in matched.items()}

    # -- files -----------------------------------------------------------------------------------

    def _file(self, key: str, path: str, item: dict[str, Any]) -> None:
        ext = (item.get("ext") or "").lower()
        ts = self._ts(path)
        # The backend's only files outside its namespaces are tables. An export names a file
        # after its field, without the extension Neptune had for it.
        if self.own and ext in ("csv", "") and path.split("/", 1)[0] not in RESERVED_ROOTS:
            if self._claim("table", key, path):
                self._add(ts, 0, f"table {path}", lambda b: self._table(b, key, item, ts), path)
        elif ext in IMAGE_EXTENSIONS or (not ext and self._looks_like_image(item)):
            if self._claim("image", key, path):
                self._add(ts, 0, f"image {path}", lambda b: self._image_file(b, key, path, item, ts), path)
        else:
            self._artifact(self._file_name(key, ext), path, item)

    def _looks_like_image(self, item: dict[str, Any]) -> bool:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self._read(item))):
                return True
        except (UnidentifiedImageError, OSError, KeyError, ValueError):
            return False

    def _image_file(self, builder: RunBuilder, key: str, path: str, item: dict[str, Any], ts: float) -> None:
        data = self._read(item)
        try:
            builder.image(key, data, 0, ts)
        except OSError:  # an image extension, but not an image Pillow reads: keep the file
            name = self._file_name(key, item.get("ext") or "")
            builder.artifact(self._scratch_file(name, data), name, ts)

    def _table(self, builder: RunBuilder, key: str, item: dict[str, Any], ts: float) -> None:
        rows = list(csv.reader(io.StringIO(self._read(item).decode("utf-8"))))
        if not rows:
            raise ValueError("an empty CSV file")
        builder.table(key, rows[0], [[_cell(c) for c in row] for row in rows[1:]], 0, ts, TableRole.TABLE)

    def _artifact(self, name: str, path: str, item: dict[str, Any], checkpoint: bool = False) -> None:
        if not self._claim("artifact", name, path):
            return
        ts = self._ts(path)
        kind = ArtifactKind.MODEL if checkpoint else ArtifactKind.FILE
        if item["type"] == "file":
            def emit(b: RunBuilder) -> None:
                if "content" in item:
                    source = self._scratch_file(name, item["content"])
                else:
                    try:
                        source = self.source.file(item["path"], self.source.root)
                    except FileNotFoundError:
                        b.unmapped(f"file missing on disk: {path}")
                        return
                b.artifact(source, name, ts, kind, checkpoint=checkpoint)
        elif item["type"] == "file_set":
            def emit(b: RunBuilder) -> None:
                folder = self._file_set_folder(name, item)
                if folder is None:
                    b.unmapped(f"file set with no files on disk: {path}")
                    return
                b.artifact(folder, name, ts, kind, checkpoint=checkpoint)
        else:
            self.unmapped.append(f"Neptune {item['type']} field (loggerhub has no such record)")
            return
        self._add(ts, 0, f"artifact {path}", emit, path)

    def _file_set_folder(self, name: str, item: dict[str, Any]) -> Path | None:
        """A folder holding the set's files under their names in the set; every glob and every
        file it matches inside the source (or an allowed root), at most ``Limits.files`` files."""
        if item.get("dir"):
            try:
                return self.source.tree(item["dir"])
            except FileNotFoundError:
                return None
        globs = item.get("globs", [])
        for pattern in globs:
            self.source.contained(_literal_prefix(pattern))  # before any expansion
        if len(globs) == 1 and glob.escape(globs[0]) == globs[0] and os.path.isdir(globs[0]):
            return self.source.tree(globs[0])
        files = offline.file_set_files(item)
        if len(files) > self.source.limits.files:
            raise TooLarge(f"a file set of more than {self.source.limits.files} files")
        if not files:
            return None
        assert self.scratch is not None  # files are copied while the builder is open
        folder = self.scratch / f"set-{next(self._names)}" / safe_name(Path(name).name, fallback="files")
        for relative, found in files.items():
            try:
                checked = self.source.file(found)
                target = folder / contained_member(relative)
            except (OutsideSource, TooLarge, FileNotFoundError) as error:
                self.source.skip(found, None, error)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            self.source.budget.claim(target.parent, checked.stat().st_size)
            shutil.copyfile(checked, target)
        return folder

    def _file_name(self, key: str, ext: str) -> str:
        return key if not ext or key.lower().endswith(f".{ext.lower()}") else f"{key}.{ext}"

    def _read(self, item: dict[str, Any]) -> bytes:
        if "data" in item:
            return bytes(item["data"])
        if "content" in item:
            return bytes(item["content"])
        return self.source.read_bytes(item["path"])

    def _scratch_file(self, name: str, data: bytes) -> Path:
        assert self.scratch is not None  # files are written while the builder is open
        folder = self.scratch / f"file-{next(self._names)}"
        folder.mkdir(parents=True)
        target = folder / safe_name(Path(name).name, fallback="file")
        self.source.budget.claim(folder, len(data))
        target.write_bytes(data)
        return target


# ---------------------------------------------------------------------------------------------


def _metrics(values: dict[str, float], step: int, ts: float, source: Source, where: tuple[str, int | None],
             builder: RunBuilder) -> None:
    write_metrics(builder, values, step, ts, source, where)


def _telemetry(method: str, *args: Any) -> None:
    # RunBuilder's system_metrics / console / context (loggerhub 0.3); the hookspecs protocol does
    # not list them yet, hence the lookup by name.
    *arguments, builder = args
    getattr(builder, method)(*arguments)


def _context_record(ts: float, fields: dict[str, Any], builder: RunBuilder) -> None:
    builder.context(ts, **fields)


def _text(key: str, text: str, step: int, ts: float, builder: RunBuilder) -> None:
    builder.text(key, text, step, ts)


def _own_param(value: Any) -> Any:
    """A param as loggerhub logged it, from the text its backend stored where Neptune has no atom."""
    if not isinstance(value, str):
        return value
    if value in _NONFINITE:
        return _NONFINITE[value]
    if value == "null":
        return None
    if value == "{}":
        return {}
    if value.startswith("["):
        try:
            loaded = json.loads(value)
        except ValueError:
            return value
        return loaded if isinstance(loaded, list) else value
    if _INTEGER.fullmatch(value) and not INT32_MIN <= int(value) <= INT32_MAX:
        return int(value)
    return value


def _cell(text: str) -> Any:
    """A CSV cell: a number when it reads as one, else the text."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    return text


def _literal_prefix(pattern: str) -> str:
    """The folder a glob searches: its path up to the first part with a wildcard."""
    parts = Path(pattern).parts
    literal = [part for part in itertools.takewhile(lambda part: not glob.has_magic(part), parts)]
    return str(Path(*literal)) if literal else "."


def _iso_seconds(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(text).timestamp() if isinstance(text, str) else None
    except ValueError:
        return None


def _json_file(path: Path) -> Mapping[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
