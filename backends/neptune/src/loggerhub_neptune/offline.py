"""Read what the Neptune 1.x client wrote in offline mode, without importing the client.

Layout written by neptune 1.14 (``structureVersion`` 3), under its data directory (``.neptune``
in the working directory unless ``NEPTUNE_DATA_DIRECTORY`` says otherwise)::

    .neptune/offline/run__<container-id>__<pid>__<random>/
        metadata.json         mode, containerId, containerType, client version, createdAt
        data-<N>.log          the operations, one JSON object per line, starting at version N;
                              a new file starts every 64 MiB
        upload_path/          in-memory File contents (File.from_content) waiting for upload
        last_put_version, last_ack_version

Each line is ``{"obj": {"type": ..., "path": [...], ...}, "version": n, "at": wall_time}``.
``neptune sync`` registers one NEW server run per container id and replays these operations into
it, then deletes the folder.

:func:`read_container` replays the operations into plain dicts, one per field path::

    {"type": "string" | "int" | "float" | "bool" | "datetime", "value": ...}
    {"type": "float_series" | "string_series", "values": [{"step", "ts", "value"}, ...]}
    {"type": "image_series", "values": [{"step", "ts", "name", "description", "data": bytes}, ...]}
    {"type": "file", "ext": str, "path": str}        # path: the file the upload will read
    {"type": "file_set", "globs": [str, ...]}         # see file_set_files()
    {"type": "string_set", "values": [str, ...]}
    {"type": "artifact", "entries": [...]}
    {"type": "unknown", "ops": [raw operation, ...]}  # an operation this reader does not model

Series steps are None when the value was appended without a step (the server numbers them).
"""

from __future__ import annotations

import base64
import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OFFLINE_DIRECTORY = "offline"
DATA_DIRECTORY = ".neptune"

_ATOMS = {
    "AssignFloat": "float",
    "AssignInt": "int",
    "AssignBool": "bool",
    "AssignString": "string",
    "AssignDatetime": "datetime",
}
_SERIES = {"LogFloats": "float_series", "LogStrings": "string_series", "LogImages": "image_series"}
_CLEARS = {"ClearFloatLog", "ClearStringLog", "ClearImageLog"}


def offline_root(data_dir: str | os.PathLike[str]) -> Path:
    """The ``offline`` folder for ``data_dir``: a folder holding ``.neptune``, or ``.neptune`` itself."""
    base = Path(data_dir)
    if (base / DATA_DIRECTORY).is_dir():
        base = base / DATA_DIRECTORY
    return base / OFFLINE_DIRECTORY


def find_containers(data_dir: str | os.PathLike[str]) -> list[Path]:
    """Every offline container folder under ``data_dir``, oldest first (by ``createdAt``).

    A folder whose ``metadata.json`` holds JSON that is not an object is left out, unreported (a
    list of paths has no place for a report): the client never writes one, so it is no container.
    """
    root = offline_root(data_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if not folder.is_dir() or not (folder / "metadata.json").is_file():
            continue
        metadata: Any = _metadata(folder)
        if isinstance(metadata, dict):
            found.append((str(metadata.get("createdAt", "")), folder.name, folder))
    return [folder for *_, folder in sorted(found)]


def container_id(container: str | os.PathLike[str]) -> str:
    """The client's id of the container in ``container`` (a folder name ``type__id__pid__key``)."""
    return Path(container).name.split("__")[1]


def read_operations(container: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The container's operations in the order they were made: ``obj`` plus ``version`` and ``at``.

    A line that does not parse (the client died while writing it) is skipped.
    """
    folder = Path(container)
    logs = sorted(folder.glob("data-*.log"), key=lambda p: int(p.stem.split("-")[-1]))
    for log in logs:
        with log.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                yield {**entry["obj"], "version": entry.get("version"), "at": entry.get("at")}


def read_container(container: str | os.PathLike[str]) -> dict[str, Any]:
    """Replay one container's operations into ``{"dir", "container_id", "metadata", "fields"}``."""
    folder = Path(container)
    fields: dict[str, dict[str, Any]] = {}
    for op in read_operations(folder):
        _apply(fields, op, folder)
    return {
        "dir": str(folder),
        "container_id": container_id(folder),
        "metadata": _metadata(folder),
        "fields": fields,
    }


def read_run(data_dir: str | os.PathLike[str], run_id: str) -> list[dict[str, Any]]:
    """Every container the loggerhub backend wrote for loggerhub run ``run_id``, part 1 first.

    A resumed run gets a new offline container (a "part"); each holds ``loggerhub/run_id`` and
    ``loggerhub/part``.
    """
    parts = []
    for folder in find_containers(data_dir):
        container = read_container(folder)
        if container["fields"].get("loggerhub/run_id", {}).get("value") == run_id:
            parts.append(container)
    return sorted(parts, key=lambda c: c["fields"].get("loggerhub/part", {}).get("value", 0))


def run_containers(data_dir: str | os.PathLike[str], run_id: str, head: int = 200) -> list[dict[str, Any]]:
    """The containers the loggerhub backend wrote for ``run_id``, part 1 first, read cheaply.

    Returns ``{"dir", "container_id", "part"}`` per container. Only the first ``head`` operations
    of each container are read: the backend writes ``loggerhub/run_id`` and ``loggerhub/part``
    right after the client's own first operations.
    """
    found = []
    for folder in find_containers(data_dir):
        fields: dict[str, dict[str, Any]] = {}
        for count, op in enumerate(read_operations(folder)):
            _apply(fields, op, folder)
            if count >= head or "loggerhub/part" in fields:
                break
        if fields.get("loggerhub/run_id", {}).get("value") == run_id:
            part = fields.get("loggerhub/part", {}).get("value", 0)
            found.append({"dir": str(folder), "container_id": container_id(folder), "part": part})
    return sorted(found, key=lambda c: c["part"])


def last_series_values(container: str | os.PathLike[str]) -> dict[str, tuple[float | None, float, Any]]:
    """The last value of every float and string series in a container: ``(step, ts, value)``,
    with the step (None for a series without steps) and time as floats; image series too, with
    None for the value."""
    last: dict[str, tuple[float | None, float, Any]] = {}
    for op in read_operations(container):
        kind = op["type"]
        path = "/".join(op["path"])
        if kind in _SERIES and op["values"]:
            value = op["values"][-1]
            step = value.get("step")
            last[path] = (None if step is None else float(step), float(value.get("ts") or 0.0),
                          None if kind == "LogImages" else value.get("value"))
        elif kind in _CLEARS or (kind == "DeleteAttribute" and path in last):
            last.pop(path, None)
    return last


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The fields of a run delivered in several parts, as one dict (parts in order).

    Series values are concatenated; every other field is what the last part that wrote it holds.
    """
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for path, field in part["fields"].items():
            earlier = merged.get(path)
            if earlier is not None and "values" in field and earlier["type"] == field["type"] != "string_set":
                merged[path] = {**field, "values": earlier["values"] + field["values"]}
            else:
                merged[path] = field
    return merged


def file_set_files(field: dict[str, Any]) -> dict[str, str]:
    """The files a ``file_set`` field holds: name in the set -> the file on disk.

    Expands the globs and walks directories the way the client does at upload time, naming each
    file relative to the common folder of what matched. (At upload, the client uses the working
    directory of the uploading process instead when that common folder lies inside it; this
    reader does not depend on where it runs.)
    """
    matched = sorted({os.path.abspath(p) for g in field["globs"] for p in glob.glob(g, recursive=True)})
    if not matched:
        return {}
    root = os.path.commonpath(matched)
    if os.path.isfile(root):
        root = os.path.dirname(root)
    files: dict[str, str] = {}
    for path in matched:
        if os.path.isdir(path):
            for folder, _, names in os.walk(path):
                for name in names:
                    full = os.path.join(folder, name)
                    files[Path(os.path.relpath(full, root)).as_posix()] = full
        else:
            files[Path(os.path.relpath(path, root)).as_posix()] = path
    return files


# ---------------------------------------------------------------------------------------------


def _metadata(folder: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
        return loaded
    except (OSError, json.JSONDecodeError):
        return {}


def _apply(fields: dict[str, dict[str, Any]], op: dict[str, Any], folder: Path) -> None:
    kind = op["type"]
    path = "/".join(op["path"])
    if kind in _ATOMS:
        fields[path] = {"type": _ATOMS[kind], "value": op["value"]}
    elif kind in _SERIES:
        field = fields.get(path)
        if field is None or field["type"] != _SERIES[kind]:
            field = fields[path] = {"type": _SERIES[kind], "values": []}
        for value in op["values"]:
            item = {"step": value.get("step"), "ts": value.get("ts"), "value": value.get("value")}
            if kind == "LogImages":
                image = item.pop("value") or {}
                if isinstance(image, str):
                    image = {"data": image}
                item.update(
                    name=image.get("name"),
                    description=image.get("description"),
                    data=base64.b64decode(image.get("data") or ""),
                )
            field["values"].append(item)
    elif kind in _CLEARS:
        if path in fields:
            fields[path]["values"] = []
    elif kind == "UploadFile":
        source = op.get("file_path") or str(folder / "upload_path" / op["tmp_file_name"])
        fields[path] = {"type": "file", "ext": op.get("ext", ""), "path": source}
    elif kind == "UploadFileContent":
        content = base64.b64decode(op["file_content"])
        fields[path] = {"type": "file", "ext": op.get("ext", ""), "content": content}
    elif kind == "UploadFileSet":
        field = fields.get(path)
        if field is None or field["type"] != "file_set" or op.get("reset") in (True, "True"):
            field = fields[path] = {"type": "file_set", "globs": []}
        field["globs"].extend(op.get("file_globs", []))
    elif kind in ("AddStrings", "RemoveStrings", "ClearStringSet"):
        field = fields.setdefault(path, {"type": "string_set", "values": []})
        values = set(field["values"])
        if kind == "AddStrings":
            values |= set(op["values"])
        elif kind == "RemoveStrings":
            values -= set(op["values"])
        else:
            values = set()
        field["values"] = sorted(values)
    elif kind == "DeleteAttribute":
        for existing in [p for p in fields if p == path or p.startswith(path + "/")]:
            del fields[existing]
    elif kind == "TrackFilesToArtifact":
        fields.setdefault(path, {"type": "artifact", "entries": []})["entries"].extend(op.get("entries", []))
    elif kind == "ClearArtifact":
        fields[path] = {"type": "artifact", "entries": []}
    elif kind == "ConfigFloatSeries":
        fields.setdefault(path, {"type": "float_series", "values": []})["config"] = {
            k: op.get(k) for k in ("min", "max", "unit")
        }
    else:
        fields.setdefault(path, {"type": "unknown", "ops": []}).setdefault("ops", []).append(op)
