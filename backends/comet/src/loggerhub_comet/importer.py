"""``loggerhub import comet PATH``: Comet offline archives back into loggerhub runs.

PATH is one archive (``<experiment key>-<random>.zip``) or a folder of them; the archives of one
experiment (a resumed run writes several) are merged by :func:`offline.read_offline_dir`. The
experiment key is the source id, so importing the same archives again writes nothing.

What the Comet backend wrote is inverted exactly (key escapes, box layers, long parameter
assets, models, tables, the Other-tab status). An archive of any other Comet user is read the
same way, its uploads mapped by their upload type. Comet's own bookkeeping (``curr_step``,
``process duration``, ...) and what loggerhub has no record for are reported as not mapped.

Times are the archive's: ``local_timestamp`` of each message, which is when the Comet SDK
received the call (for an archive written by loggerhub, the delivery, not the training loop).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from loggerhub_comet.keys import RESERVED, from_tracker
from loggerhub_comet.offline import iter_messages, read_member, read_offline_dir, read_offline_zip
from loggerhub_hookspecs import ArtifactKind, Box, Status, TableRole

#: Other-tab entries that the Comet backend and the SDK write for themselves.
OWN_OTHERS = frozenset({"Name", "status", "loggerhub_run_id", "offline_experiment"})
#: The backend's ``loggerhub`` upload metadata for files, and the artifact kind each one is.
ARTIFACT_ROLES = {"checkpoint": ArtifactKind.MODEL, "model": ArtifactKind.MODEL,
                  "dataset": ArtifactKind.DATASET, "file": ArtifactKind.FILE}

Emit = Callable[[Any, int, float], None]  # (builder, step, ts)


@dataclass(order=True)
class _Item:
    """One record to write, in source-time order, then step, then reading order."""

    ts: float
    step: int
    order: int
    emit: Emit = field(compare=False)
    #: No step in the source: loggerhub's rule decides (see :func:`_write`).
    auto_step: bool = field(default=False, compare=False)
    metrics: bool = field(default=False, compare=False)


def import_runs(location: str, factory: Any, **options: Any) -> None:
    """Import every Comet experiment found at ``location`` (an archive or a folder of them)."""
    if options:
        raise TypeError(f"the comet importer takes no options, got {sorted(options)}")
    path = Path(location)
    skipped: list[str] = []
    if path.is_dir():
        experiments = read_offline_dir(path, skipped)
    elif path.is_file():
        try:
            part = read_offline_zip(path)
        except (KeyError, zipfile.BadZipFile):
            skipped.append(str(path))
            experiments = {}
        else:
            experiments = {part["key"]: {**part, "parts": [part["path"]]}}
    else:
        raise FileNotFoundError(f"no Comet offline archive or folder at {path}")
    if skipped:
        # The empty placeholder a process killed before end() leaves: part of no run.
        factory.unmapped("comet: archive without experiment.json (placeholder of a killed process), skipped",
                         len(skipped))
    if not experiments and not skipped:
        raise FileNotFoundError(f"no Comet offline archive (*.zip) in {path}")
    for key in sorted(experiments):
        _import_experiment(experiments[key], factory)


def _import_experiment(experiment: dict[str, Any], factory: Any) -> None:
    others = experiment["others"]
    started = _seconds(experiment["experiment"].get("start_time")) or 0.0
    params = dict(experiment["params"])
    long_values, uploads = _split_param_assets(experiment["uploads"])
    params.update(long_values)  # the whole value, where Comet keeps 1000 characters
    builder = factory(
        source_id=experiment["key"],
        name=str(others.get("Name") or experiment["key"]),
        started_at=started,
        config={from_tracker(name): value for name, value in params.items()},
        tags=_tags(experiment["tags"]),
        source_project=experiment["experiment"].get("project_name"),
    )
    if builder is None:
        return
    times = _upload_times(experiment["parts"])
    stops = [_seconds(_archive_meta(part).get("stop_time")) or 0.0 for part in experiment["parts"]]
    with tempfile.TemporaryDirectory(prefix="loggerhub-comet-import-") as tmp, builder:
        for name in sorted(experiment["system_params"]):
            builder.unmapped(f"comet: SDK parameter {name!r}")
        for name in sorted(set(others) - OWN_OTHERS):
            builder.unmapped(f"comet: Other-tab value {name!r}")
        for kind, count in sorted(experiment["unknown"].items()):
            builder.unmapped(f"comet: {kind} message", count)
        items = _metric_items(experiment["metrics"], "loggerhub_run_id" in others, started, builder)
        items += _upload_items(uploads, times, Path(tmp), builder, started)
        items.sort()
        _write(items, builder)
        end = max([started, *stops, *(item.ts for item in items)])
        builder.end(_status(others.get("status"), builder), end)


# --------------------------------------------------------------------------- run level


def _archive_meta(archive: str) -> dict[str, Any]:
    with zipfile.ZipFile(archive) as opened:
        meta: dict[str, Any] = json.loads(opened.read("experiment.json"))
    return meta


def _upload_times(parts: Iterable[str]) -> dict[tuple[str, str], float]:
    """When each upload was made, by (archive, member): the reader keeps no upload times."""
    times: dict[tuple[str, str], float] = {}
    for archive in parts:
        with zipfile.ZipFile(archive) as opened:
            for message in iter_messages(opened):
                payload = message.get("payload") or {}
                stamp = _seconds(payload.get("local_timestamp"))
                if message.get("type") == "file_upload" and payload.get("file_path") and stamp is not None:
                    times[(archive, payload["file_path"])] = stamp
    return times


def _seconds(millis: Any) -> float | None:
    return None if millis is None else float(millis) / 1000.0


def _tags(tags: Iterable[str]) -> dict[str, str]:
    """``key:value`` tags back to a mapping; a tag without ``:`` is a key with an empty value."""
    result: dict[str, str] = {}
    for tag in tags:
        key, _, value = str(tag).partition(":")
        result[key] = value
    return result


def _status(raw: Any, builder: Any) -> Status:
    if raw in (None, ""):
        return Status.FINISHED  # archives are written by end(): a plain Comet run that ended
    if raw == "RUNNING":
        # loggerhub's delivery stopped before the run ended; `loggerhub sync` would end it so.
        builder.unmapped("comet: status RUNNING in the last archive, imported as KILLED")
        return Status.KILLED
    try:
        return Status(raw)
    except ValueError:
        builder.unmapped(f"comet: unknown status {str(raw)[:40]!r}, imported as FINISHED")
        return Status.FINISHED


def _split_param_assets(uploads: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = {}
    rest = []
    for upload in uploads:
        meta = upload["metadata"]
        if meta.get("loggerhub") == "param" and meta.get("key") and upload["member"] is not None:
            values[meta["key"]] = json.loads(read_member(upload["archive"], upload["member"]))
        else:
            rest.append(upload)
    return values, rest


# --------------------------------------------------------------------------- metrics


def _metric_items(metrics: dict[str, list[dict[str, Any]]], ours: bool, started: float,
                  builder: Any) -> list[_Item]:
    """Points of one time, step and epoch become one metrics record, as loggerhub logged them."""
    groups: dict[tuple[float, Any, Any], list[dict[str, float]]] = {}
    for name, points in metrics.items():
        if name in RESERVED:
            builder.unmapped(f"comet: SDK metric {name!r}", len(points))
            continue
        if name.startswith("sys.") and not ours:
            # The SDK's system metrics; the backend turns them off, so there they are a user's.
            builder.unmapped("comet: SDK system metric (sys.*)", len(points))
            continue
        key = from_tracker(name)
        for point in points:
            slot = (_seconds(point["timestamp"]) or started, point["step"], point["epoch"])
            records = groups.setdefault(slot, [])
            # The same key twice in one millisecond and step is a second record, not an overwrite.
            target = next((values for values in records if key not in values), None)
            if target is None:
                target = {}
                records.append(target)
            target[key] = point["value"]
    items = []
    for order, ((ts, step, epoch), records) in enumerate(groups.items()):
        for values in records:
            items.append(_Item(ts, -1 if step is None else int(step), order, _metrics(values, epoch),
                               auto_step=step is None, metrics=True))
    return items


def _metrics(values: dict[str, float], epoch: Any) -> Emit:
    return lambda b, step, ts: b.metrics(values, step, ts, epoch=epoch)


# --------------------------------------------------------------------------- uploads


def _upload_items(uploads: list[dict[str, Any]], times: dict[tuple[str, str], float], tmp: Path,
                  builder: Any, started: float) -> list[_Item]:
    items: list[_Item] = []
    for index, group in enumerate(_group_files(uploads)):
        upload = group[0]
        if upload["member"] is None:
            builder.unmapped(f"comet: {upload['upload_type']} upload without its file", len(group))
            continue
        emit = _upload_emit(group, tmp / str(index), builder)
        if emit is not None:
            meta = upload["metadata"]
            if meta.get("loggerhub") is None and set(meta) - {"annotations"}:
                builder.unmapped("comet: user metadata of an upload (loggerhub records have none)")
            if upload["epoch"] is not None or meta.get("epoch") is not None:
                builder.unmapped(f"comet: epoch of a {upload['upload_type']} upload (loggerhub keeps "
                                 "epochs on metrics)")
            step = upload["step"]
            ts = times.get((upload["archive"], upload["member"]), started)
            # Ordered after the metrics of the same millisecond and step, as loggerhub logs them.
            items.append(_Item(ts, -1 if step is None else int(step), (1 << 40) + index, emit,
                               auto_step=step is None))
    return items


def _group_key(upload: dict[str, Any]) -> Any:
    """Uploads of one logged directory share this key; None for a file that stands alone."""
    meta = upload["metadata"]
    if upload["upload_type"] not in ("asset", "model-element"):
        return None
    if meta.get("loggerhub") in ARTIFACT_ROLES:
        return upload["upload_type"], json.dumps(meta, sort_keys=True)
    if upload["upload_type"] == "model-element":
        return upload["upload_type"], upload["group"]
    return None


def _group_files(uploads: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = []
    for upload in uploads:
        key = _group_key(upload)
        last = groups[-1] if groups else None
        # A file name seen again in the group starts the next logging of that directory.
        if (key is not None and last is not None and _group_key(last[0]) == key
                and upload["name"] not in {u["name"] for u in last}):
            last.append(upload)
        else:
            groups.append([upload])
    return groups


def _upload_emit(group: list[dict[str, Any]], staging: Path, builder: Any) -> Emit | None:
    upload = group[0]
    kind = upload["upload_type"]
    meta = upload["metadata"]
    if kind == "visualization":
        return _visual(upload, builder)
    if kind == "text-sample":
        key = from_tracker(meta.get("key") or "text")
        text = upload.get("text", "")
        return lambda b, step, ts: b.text(key, text, step, ts)
    if kind == "confusion-matrix":
        return _confusion(upload)
    if kind == "asset" and meta.get("loggerhub") == "table":
        return _table(upload)
    if kind in ("asset", "model-element"):
        return _artifact(group, staging)
    builder.unmapped(f"comet: {kind} upload (no loggerhub record for it)", len(group))
    return None


def _visual(upload: dict[str, Any], builder: Any) -> Emit:
    meta = upload["metadata"]
    key = from_tracker(meta.get("key") or upload["name"] or "image")
    data = read_member(upload["archive"], upload["member"])
    if meta.get("loggerhub") == "figure":
        return lambda b, step, ts: b.figure(key, data, step, ts)
    ours = meta.get("loggerhub") == "image"
    boxes = [box for layer in meta.get("annotations") or [] for item in layer.get("data") or []
             for box in _boxes(item, ours, builder)]
    caption = meta.get("caption")
    return lambda b, step, ts: b.image(key, data, step, ts, boxes=boxes, caption=caption)


def _boxes(item: dict[str, Any], ours: bool, builder: Any) -> list[Box]:
    """A Comet annotation's ``[x, y, width, height]`` boxes back to corners."""
    if item.get("points"):
        builder.unmapped("comet: polygon annotation (loggerhub keeps boxes)")
    class_id = (item.get("metadata") or {}).get("class_id")
    label = item.get("label")
    if ours and label == ("box" if class_id is None else f"class {class_id}"):
        label = None  # the backend's stand-in label for a box that had none
    return [Box(float(x), float(y), float(x) + float(w), float(y) + float(h), label, item.get("score"),
                class_id) for x, y, w, h in item.get("boxes") or []]


def _confusion(upload: dict[str, Any]) -> Emit:
    content = upload.get("content") or {}
    matrix = content.get("matrix") or []
    labels = [str(label) for label in content.get("labels") or range(len(matrix))]
    key = from_tracker(upload["metadata"].get("key") or content.get("title") or "confusion_matrix")
    return lambda b, step, ts: b.table(key, labels, matrix, step, ts, role=TableRole.CONFUSION_MATRIX)


def _table(upload: dict[str, Any]) -> Emit:
    """The backend's CSV table; cells come back as the text CSV holds."""
    text = read_member(upload["archive"], upload["member"]).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    columns, body = (rows[0], rows[1:]) if rows else ([], [])
    key = from_tracker(upload["metadata"].get("key") or upload["name"])
    return lambda b, step, ts: b.table(key, columns, body, step, ts)


def _artifact(group: list[dict[str, Any]], staging: Path) -> Emit:
    """A file, or a directory rebuilt from its uploads, staged under its own name."""
    upload = group[0]
    meta = upload["metadata"]
    model = upload["upload_type"] == "model-element"
    role = meta.get("loggerhub") if meta.get("loggerhub") in ARTIFACT_ROLES else None
    if role is not None and meta.get("name"):
        tracker_name = meta["name"]
        name = from_tracker(tracker_name)
        # log_model names a file by its base name; log_asset by the whole name.
        own = PurePosixPath(tracker_name).name if model else tracker_name
        single = len(group) == 1 and upload["name"] == own
        # log_model puts a folder's files under the folder's name; log_asset under the artifact's.
        prefix = PurePosixPath(name).name + "/" if model else tracker_name + "/"
    elif model:
        name, single, prefix = upload["group"] or "model", False, ""
    else:
        name, single, prefix = upload["name"], True, ""
    target = staging / PurePosixPath(name).name
    if single:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_member(upload["archive"], upload["member"]))
    else:
        for part in group:
            relative = part["name"][len(prefix):] if prefix and part["name"].startswith(prefix) else part["name"]
            path = target.joinpath(*PurePosixPath(relative).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(read_member(part["archive"], part["member"]))
    kind = ARTIFACT_ROLES[role] if role is not None else ArtifactKind.MODEL if model else ArtifactKind.FILE
    checkpoint = role == "checkpoint"
    return lambda b, step, ts: b.artifact(target, name, ts, kind=kind, step=step, checkpoint=checkpoint)


# --------------------------------------------------------------------------- writing


def _write(items: list[_Item], builder: Any) -> None:
    """Write the items in order. Without a step, loggerhub's own rule applies: metrics take one
    more than the highest step so far, anything else the highest so far."""
    highest = -1
    for item in items:
        step = item.step
        if item.auto_step:
            step = highest + 1 if item.metrics else max(highest, 0)
        try:
            item.emit(builder, step, item.ts)
        except (ValueError, OSError) as error:  # loggerhub refuses it (bad key, unreadable image)
            builder.unmapped(f"comet: record loggerhub refuses: {type(error).__name__}: {str(error)[:100]}")
            continue
        highest = max(highest, step)
