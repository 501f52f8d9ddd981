"""``loggerhub import mlflow --tracking-uri URI (--run-id ID | --experiment NAME)``.

Reads MLflow runs with ``MlflowClient``: params, every metric's full history (steps and
timestamps), tags, status, and the run's artifacts, downloaded to a temporary folder. The MLflow
run id is the source id, so importing a run again writes nothing.

A run this backend wrote (it has the ``loggerhub.run_id`` tag) is inverted exactly where the
backend kept enough: typed params from ``loggerhub/params.json`` (not the cut or first-only
MLflow params), run name, project, start time and full tags from ``loggerhub/run.json``, key
escapes, boxes and captions from ``image_annotations/``, texts, figures and tables from their
record paths (key, step and millisecond in the name), ``models/`` and ``datasets/`` by kind.

Any other run is read by MLflow's own conventions: ``log_image`` files (``images/<key>+step+...``),
``log_table`` files (listed in ``mlflow.loggedArtifacts``), ``.txt`` files as texts (what
``log_text`` writes), MLflow 3 logged models of the run, and every other top-level file or folder
as an artifact (a folder with an ``MLmodel`` file as a model).

MLflow keeps neither a time nor a step for an artifact: artifacts get the run's end time and
loggerhub's rule for records without a step (the highest step so far).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loggerhub_hookspecs import ArtifactKind, Box, Status, TableRole
from loggerhub_mlflow.keys import from_tracker, to_tracker

RUN_ID_TAG = "loggerhub.run_id"
PROJECT_TAG = "loggerhub.project"
PARAMS_FILE = "loggerhub/params.json"
RUN_FILE = "loggerhub/run.json"
#: MLflow tags whose content is imported as records (or is the run name), not as tags.
CONSUMED_TAGS = frozenset({"mlflow.runName", "mlflow.loggedArtifacts", "mlflow.loggedImages",
                           "mlflow.log-model.history"})
ARTIFACT_FOLDERS = {"models": ArtifactKind.MODEL, "datasets": ArtifactKind.DATASET}
#: ``<key>+step+<step>+timestamp+<ms>+<suffix>``: the names of log_image files and of the
#: backend's text, figure, table and annotation files.
RECORD_NAME = re.compile(r"^(?P<key>.+)\+step\+(?P<step>\d+)\+timestamp\+(?P<ms>\d+)\+(?P<suffix>[^/+]+)"
                         r"(?P<compressed>\+compressed)?\.(?P<ext>\w+)$")
STATUSES = {"FINISHED": Status.FINISHED, "FAILED": Status.FAILED, "KILLED": Status.KILLED}

Emit = Callable[[Any, int, float], None]  # (builder, step, ts)


@dataclass(order=True)
class _Item:
    """One record to write, in source-time order, then step, then reading order."""

    ts: float
    step: int
    order: int
    emit: Emit = field(compare=False)
    #: MLflow has no step for it: loggerhub's rule, the highest step so far.
    auto_step: bool = field(default=False, compare=False)


def import_runs(location: str, factory: Any, *, run_id: str | None = None, experiment: str | None = None,
                tracking_uri: str | None = None, **options: Any) -> None:
    """Import one run (``run_id``) or every run of an ``experiment`` from the tracking URI ``location``."""
    if options:
        raise TypeError(f"unknown mlflow import options {sorted(options)}; known: run_id, experiment")
    if tracking_uri is not None and tracking_uri != location:
        raise ValueError(f"two tracking URIs: {location!r} and {tracking_uri!r}")
    if (run_id is None) == (experiment is None):
        raise ValueError("give exactly one of run_id (--run-id) and experiment (--experiment)")
    from mlflow.tracking import MlflowClient

    uri = _store_uri(location)
    client = MlflowClient(uri)
    if run_id is not None:
        run = client.get_run(run_id)
        experiment_name = client.get_experiment(run.info.experiment_id).name
        _import_run(client, uri, run, experiment_name, factory)
        return
    assert experiment is not None  # exactly one of the two, checked above
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment named {experiment!r} at {location}")
    for run in _runs(client, found.experiment_id):
        _import_run(client, uri, run, found.name, factory)
    deleted = sum(1 for _ in _runs(client, found.experiment_id, deleted=True))
    if deleted:
        factory.unmapped("mlflow: deleted run of the experiment (restore it to import it)", deleted)


def _store_uri(location: str) -> str:
    """The backend's local stores: a folder holding ``mlflow.db``, or a ``.db`` file, is SQLite."""
    path = Path(location).expanduser()
    if "://" not in location and (path / "mlflow.db").is_file():
        return f"sqlite:///{(path / 'mlflow.db').resolve()}"
    if "://" not in location and path.suffix == ".db" and path.is_file():
        return f"sqlite:///{path.resolve()}"
    return location


def _runs(client: Any, experiment_id: str, *, deleted: bool = False) -> Iterator[Any]:
    from mlflow.entities import ViewType

    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, order_by=["attributes.start_time ASC"],
                                  page_token=token,
                                  run_view_type=ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY)
        yield from page
        token = page.token
        if not token:
            return


# --------------------------------------------------------------------------- one run


def _import_run(client: Any, uri: str, run: Any, experiment_name: str, factory: Any) -> None:
    info, data = run.info, run.data
    ours = RUN_ID_TAG in data.tags
    with tempfile.TemporaryDirectory(prefix="loggerhub-mlflow-import-") as tmp:
        own = _own_documents(client, info.run_id, Path(tmp, "own")) if ours else {}
        started = float(own.get("run", {}).get("started_at") or (info.start_time or 0) / 1000)
        builder = factory(
            source_id=info.run_id,
            name=own.get("run", {}).get("name") or info.run_name or data.tags.get("mlflow.runName") or info.run_id,
            started_at=started,
            config=_params(data.params, own.get("params"), ours),
            tags=_tags(data.tags, own.get("run", {}).get("tags"), ours),
            source_project=own.get("run", {}).get("project") or data.tags.get(PROJECT_TAG) or experiment_name,
        )
        if builder is None:
            return  # imported before: nothing downloaded
        files = _download(client, info.run_id, Path(tmp, "artifacts"))
        if ours:
            for path in (RUN_FILE, PARAMS_FILE):
                files.pop(path, None)
        with builder:
            end = info.end_time / 1000 if info.end_time else None
            items = _metric_items(client, info.run_id, list(data.metrics), ours)
            last = max([started, *(item.ts for item in items)])
            stamp = max(end or last, last)
            items += _artifact_items(files, data.tags, ours, stamp, Path(tmp), builder)
            items += _logged_models(client, uri, run, Path(tmp), builder)
            if run.inputs is not None and run.inputs.dataset_inputs:
                builder.unmapped("mlflow: dataset input of a run", len(run.inputs.dataset_inputs))
            items.sort()
            _write(items, builder)
            status = STATUSES.get(info.status)
            if status is None:
                # RUNNING or SCHEDULED: the run never ended; `loggerhub sync` ends such runs KILLED.
                builder.unmapped(f"mlflow: status {info.status}, imported as KILLED")
                status = Status.KILLED
            builder.end(status, max([stamp, *(item.ts for item in items)]))


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No progress bars from MLflow's downloads, in this process, while they run."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def _download(client: Any, run_id: str, target: Path) -> dict[str, Path]:
    """Every artifact of the run, downloaded: relative path -> local file."""
    target.mkdir(parents=True)
    if not client.list_artifacts(run_id):
        return {}
    with _quiet_downloads():
        root = Path(client.download_artifacts(run_id, "", str(target)))
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _own_documents(client: Any, run_id: str, target: Path) -> dict[str, Any]:
    """The backend's ``loggerhub/run.json`` and ``loggerhub/params.json``, when the run has them."""
    listed = {f.path for f in client.list_artifacts(run_id, "loggerhub")}
    found: dict[str, Any] = {}
    for name, path in (("run", RUN_FILE), ("params", PARAMS_FILE)):
        if path in listed:
            with _quiet_downloads():
                local = Path(client.download_artifacts(run_id, path, str(target)))
            found[name] = json.loads(local.read_text(encoding="utf-8"))
    return found


def _params(params: Mapping[str, str], document: dict[str, Any] | None, ours: bool) -> dict[str, Any]:
    """MLflow params are strings, cut at 6000 characters and never changed; the backend's
    ``params.json`` holds the full, latest, typed values under their own keys."""
    if not ours:
        return dict(params)
    typed = dict((document or {}).get("params") or {})
    for name, text in params.items():
        typed.setdefault(from_tracker(name), text)  # set by someone else on the same run
    return typed


def _tags(tags: Mapping[str, str], logged: Mapping[str, str] | None, ours: bool) -> dict[str, str]:
    """User tags, and MLflow's informative system tags (user, source, note...) as they are. The
    backend's runs have their tags whole in ``run.json`` (MLflow cuts values at 8000 characters)."""
    own = dict(logged or {}) if ours else {}
    escaped = set()
    for key in own:
        with contextlib.suppress(ValueError):
            escaped.add(to_tracker(key))
    result = {name: value for name, value in tags.items()
              if name not in CONSUMED_TAGS and not (ours and (name.startswith("loggerhub.") or name in escaped))}
    result.update(own)
    return result


# --------------------------------------------------------------------------- metrics


def _metric_items(client: Any, run_id: str, names: list[str], ours: bool) -> list[_Item]:
    """Points of one millisecond and step become one metrics record, as loggerhub logged them."""
    groups: dict[tuple[float, int], list[dict[str, float]]] = {}
    for name in names:
        key = from_tracker(name) if ours else name
        for metric in client.get_metric_history(run_id, name):
            records = groups.setdefault((metric.timestamp / 1000, metric.step), [])
            target = next((values for values in records if key not in values), None)
            if target is None:
                target = {}
                records.append(target)
            target[key] = _value(metric.value)
    return [_Item(ts, step, 0, _metrics(values)) for (ts, step), records in groups.items() for values in records]


def _value(value: float) -> float:
    # MLflow's SQL stores keep +/-inf as the largest double; nothing else lands exactly there.
    if abs(value) == sys.float_info.max:
        return math.copysign(math.inf, value)
    return value


def _metrics(values: dict[str, float]) -> Emit:
    return lambda b, step, ts: b.metrics(values, step, ts)


# --------------------------------------------------------------------------- artifacts


def _record_name(path: str, folder: str) -> re.Match[str] | None:
    return RECORD_NAME.match(path[len(folder) + 1:]) if path.startswith(folder + "/") else None


def _artifact_items(files: dict[str, Path], tags: Mapping[str, str], ours: bool, end: float, tmp: Path,
                    builder: Any) -> list[_Item]:
    """Images, figures, texts and tables, by MLflow's and the backend's file names; then the rest
    as artifacts. ``files`` keeps what is not taken."""
    unescape: Callable[[str], str] = from_tracker if ours else _same
    notes = {}
    for path in [p for p in files if p.startswith("image_annotations/")] if ours else []:
        note = json.loads(files.pop(path).read_text(encoding="utf-8"))
        notes[(note.get("image_key"), note.get("step"), note.get("timestamp"))] = note
    tables = {entry.get("path") for entry in _json_list(tags.get("mlflow.loggedArtifacts"))
              if isinstance(entry, dict) and entry.get("type") == "table"}
    items: list[_Item] = []
    for index, path in enumerate(list(files)):
        local = files[path]
        folder = path.partition("/")[0]
        match = _record_name(path, folder)
        emit: Emit | None = None
        if folder == "images" and match is not None:
            if match["compressed"]:
                files.pop(path)  # MLflow's thumbnail of the image beside it
                continue
            image_key = match["key"].replace("~", "/")  # log_image's file names have no "/"
            note = notes.pop((image_key, int(match["step"]), int(match["ms"])), None)
            key = note["key"] if note and note.get("key") else unescape(image_key)
            emit = _image(key, local.read_bytes(), note)
        elif ours and folder == "figures" and match is not None:
            emit = _figure(unescape(match["key"]), local.read_bytes())
        elif ours and folder == "text" and match is not None:
            emit = _text(unescape(match["key"]), local.read_text(encoding="utf-8"))
        elif path in tables or (ours and folder == "tables" and match is not None):
            key = unescape(match["key"]) if ours and match is not None else path
            emit = _table(key, json.loads(local.read_text(encoding="utf-8")), ours)
        elif not ours and path.endswith(".txt") and not _in_model(files, path):
            emit = _text(path, local.read_text(encoding="utf-8", errors="replace"))
            match = None  # log_text keeps no step or time
        if emit is None:
            continue
        files.pop(path)
        if match is not None:
            items.append(_Item(int(match["ms"]) / 1000, int(match["step"]), index, emit))
        else:
            items.append(_Item(end, -1, index, emit, auto_step=True))
    if notes:
        builder.unmapped("mlflow: image annotation without its image", len(notes))
    items += _file_artifacts(files, ours, end, tmp)
    return items


def _same(name: str) -> str:
    return name


def _in_model(files: dict[str, Path], path: str) -> bool:
    top = path.partition("/")[0]
    return "/" in path and f"{top}/MLmodel" in files


def _json_list(text: str | None) -> list[Any]:
    try:
        loaded = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return loaded if isinstance(loaded, list) else []


def _image(key: str, data: bytes, note: dict[str, Any] | None) -> Emit:
    """The image as MLflow holds it (boxes drawn in); boxes and caption from the backend's note."""
    boxes = [Box(b["x0"], b["y0"], b["x1"], b["y1"], b.get("label"), b.get("score"), b.get("class_id"))
             for b in (note or {}).get("boxes") or []]
    caption = (note or {}).get("caption")
    return lambda b, step, ts: b.image(key, data, step, ts, boxes=boxes, caption=caption)


def _figure(key: str, png: bytes) -> Emit:
    return lambda b, step, ts: b.figure(key, png, step, ts)


def _text(key: str, text: str) -> Emit:
    return lambda b, step, ts: b.text(key, text, step, ts)


def _table(key: str, content: dict[str, Any], ours: bool) -> Emit:
    """``log_table``'s JSON; the backend's confusion matrices have their row labels in front."""
    columns = [str(c) for c in content.get("columns") or []]
    rows = [list(row) for row in content.get("data") or []]
    role = TableRole.TABLE
    if ours and columns and re.fullmatch(r"_*actual", columns[0]) and len(rows) == len(columns) - 1 \
            and all(row and row[0] == label for row, label in zip(rows, columns[1:], strict=False)):
        columns, rows, role = columns[1:], [row[1:] for row in rows], TableRole.CONFUSION_MATRIX
    return lambda b, step, ts: b.table(key, columns, rows, step, ts, role=role)


def _file_artifacts(files: dict[str, Path], ours: bool, end: float, tmp: Path) -> list[_Item]:
    """What is left, one artifact per top-level file or folder (per child of ``models/`` and
    ``datasets/`` for the backend's runs): MLflow keeps no record of what was logged as one."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for path, local in files.items():
        parts = path.split("/")
        if ours and parts[0] in ARTIFACT_FOLDERS and len(parts) > 1:
            folder, parts = parts[0], parts[1:]
        else:
            folder = ""
        groups.setdefault((folder, parts[0]), {})["/".join(parts[1:])] = local
    items = []
    for order, ((folder, top), members) in enumerate(sorted(groups.items())):
        kind = ARTIFACT_FOLDERS.get(folder) or (ArtifactKind.MODEL if "MLmodel" in members else ArtifactKind.FILE)
        unescape: Callable[[str], str] = from_tracker if ours else _same
        name = unescape(top)
        staged = tmp / "staged" / str(order) / Path(name).name
        if list(members) == [""]:
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(members[""], staged)
        else:
            for relative, local in members.items():
                target = staged.joinpath(*unescape(relative).split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local, target)
        items.append(_Item(end, -1, (1 << 40) + order, _artifact(staged, name, kind), auto_step=True))
    return items


def _artifact(path: Path, name: str, kind: ArtifactKind) -> Emit:
    return lambda b, step, ts: b.artifact(path, name, ts, kind=kind, step=step)


def _logged_models(client: Any, uri: str, run: Any, tmp: Path, builder: Any) -> list[_Item]:
    """MLflow 3 keeps ``log_model`` output as logged models beside the run, not in its artifacts."""
    search = getattr(client, "search_logged_models", None)
    if search is None:
        return []
    import mlflow

    steps = {o.model_id: o.step for o in (run.outputs.model_outputs if run.outputs else [])}
    items = []
    token = None
    while True:
        page = search([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'",
                      page_token=token)
        for index, model in enumerate(page):
            target = tmp / "models" / model.model_id
            target.mkdir(parents=True)
            with _quiet_downloads():
                local = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=model.artifact_location, dst_path=str(target),
                    tracking_uri=uri))
            staged = target / model.name
            local.rename(staged)
            # A logged model repeats the run's params and links the run's metrics: only its own count.
            own_params = [k for k, v in (model.params or {}).items() if run.data.params.get(k) != v]
            own_metrics = [m for m in model.metrics or [] if m.run_id != run.info.run_id]
            if own_params or own_metrics:
                builder.unmapped("mlflow: params and metrics of a logged model", len(own_params) + len(own_metrics))
            step = steps.get(model.model_id)
            items.append(_Item(model.creation_timestamp / 1000, -1 if step is None else step, (1 << 41) + index,
                               _artifact(staged, model.name, ArtifactKind.MODEL), auto_step=step is None))
        token = page.token
        if not token:
            return items


# --------------------------------------------------------------------------- writing


def _write(items: list[_Item], builder: Any) -> None:
    highest = -1
    for item in items:
        step = max(highest, 0) if item.auto_step else item.step
        try:
            item.emit(builder, step, item.ts)
        except (ValueError, OSError) as error:  # loggerhub refuses it (bad key, unreadable image)
            builder.unmapped(f"mlflow: record loggerhub refuses: {type(error).__name__}: {str(error)[:100]}")
            continue
        highest = max(highest, step)
