"""``loggerhub import mlflow --tracking-uri URI (--run-id ID | --experiment NAME)``.

Reads MLflow runs with ``MlflowClient``: params, every metric's full history (steps and
timestamps), tags, status, and the run's artifacts, downloaded to a temporary folder. The MLflow
run id is the source id, so importing a run again writes nothing.

A run this backend wrote (it has the ``loggerhub.run_id`` tag) is inverted exactly where the
backend kept enough: typed params from ``loggerhub/params.json`` (not the cut or first-only
MLflow params), run name, project, start time and full tags from ``loggerhub/run.json``, key
escapes, boxes and captions from ``image_annotations/``, texts, figures and tables from their
record paths (key, step and millisecond in the name), ``models/`` and ``datasets/`` by kind.
The run ends at its ``end_time`` (the journal's end, to the millisecond), FAILED or KILLED with
the cause in its ``loggerhub.error.type``, ``.message`` and ``.traceback`` tags, which are that
cause and never imported as tags.

Any other run is read by MLflow's own conventions: ``log_image`` files (``images/<key>+step+...``),
``log_table`` files (listed in ``mlflow.loggedArtifacts``), ``.txt`` files as texts (what
``log_text`` writes), MLflow 3 logged models of the run, and every other top-level file or folder
as an artifact (a folder with an ``MLmodel`` file as a model).

MLflow keeps neither a time nor a step for an artifact: artifacts get the run's end time and
loggerhub's rule for records without a step (the highest step so far).

The server (or store) is hostile input. Artifact sizes are checked from the listing before any
download (``Limits.file_bytes`` per file, ``total_bytes`` and the free space per import), files
read into memory are capped at ``Limits.item_bytes``, and downloads go to the import's staging
folder on the store's disk. A run whose artifacts are files on this machine (a ``file:`` or
plain-path artifact URI, which ``MlflowClient`` reads directly) is read only when they lie inside
the local store folder being imported, or under ``--allow-read DIR``; otherwise its artifacts
are skipped and reported.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from loggerhub_hookspecs import ArtifactKind, Box, RunError, Status, TableRole
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Emit,
    Importer,
    Limits,
    Option,
    OutsideSource,
    Pending,
    RunBuilder,
    Source,
    TooLarge,
    contained_member,
    read_capped,
    safe_name,
    write_in_order,
    write_metrics,
)
from loggerhub_mlflow.keys import from_tracker, system_from_tracker, system_scale, to_tracker

RUN_ID_TAG = "loggerhub.run_id"
PROJECT_TAG = "loggerhub.project"
PARAMS_FILE = "loggerhub/params.json"
RUN_FILE = "loggerhub/run.json"
#: Why the run failed, as the backend stores it: imported as the run_end's error.
ERROR_TYPE_TAG, ERROR_MESSAGE_TAG, ERROR_TRACEBACK_TAG = (
    "loggerhub.error.type", "loggerhub.error.message", "loggerhub.error.traceback")
#: MLflow tags whose content is imported as records (or is the run name), not as tags.
CONSUMED_TAGS = frozenset({"mlflow.runName", "mlflow.loggedArtifacts", "mlflow.loggedImages",
                           "mlflow.log-model.history", ERROR_TYPE_TAG, ERROR_MESSAGE_TAG, ERROR_TRACEBACK_TAG})
ARTIFACT_FOLDERS = {"models": ArtifactKind.MODEL, "datasets": ArtifactKind.DATASET}
#: ``<key>+step+<step>+timestamp+<ms>+<suffix>``: the names of log_image files and of the
#: backend's text, figure, table and annotation files.
RECORD_NAME = re.compile(r"^(?P<key>.+)\+step\+(?P<step>\d+)\+timestamp\+(?P<ms>\d+)\+(?P<suffix>[^/+]+)"
                         r"(?P<compressed>\+compressed)?\.(?P<ext>\w+)$")
STATUSES = {"FINISHED": Status.FINISHED, "FAILED": Status.FAILED, "KILLED": Status.KILLED}
SYSTEM_PREFIX = "system/"
#: The backend's context files (see ``_telemetry``), read back as the run's context record.
CONTEXT_FILE, CONTEXT_REQUIREMENTS, CONTEXT_DIFF = (
    "context/context.json", "context/requirements.txt", "context/git.diff")
CONTEXT_FIELDS = ("python_version", "python_executable", "hostname", "os", "cpu", "cpu_count", "gpus",
                  "packages", "environment")
#: MLflow's source tags (``mlflow.utils.mlflow_tags``): a run's context where its client set them.
SOURCE_NAME_TAG = "mlflow.source.name"
GIT_COMMIT_TAG, GIT_BRANCH_TAG, GIT_REPO_URL_TAG, GIT_DIRTY_TAG = (
    "mlflow.source.git.commit", "mlflow.source.git.branch", "mlflow.source.git.repoURL", "mlflow.source.git.dirty")

class MlflowImporter(Importer):
    name = "mlflow"
    location_help = "the tracking URI: a server, or a local store folder or .db file"
    location_option = "tracking_uri"
    options = (Option("tracking_uri", "the tracking server or store to read (or give it as PATH)", "URI"),
               Option("run_id", "import this one run", "ID"),
               Option("experiment", "import every run of this experiment", "NAME"))

    def source(self, location: str, limits: Limits, allow: Sequence[Path], options: Mapping[str, Any]) -> Source:
        """A local store (a folder, a ``.db`` file) is the folder every local read stays in; a
        server has none: artifacts on this machine then need ``--allow-read``."""
        allowed = tuple(Path(a).expanduser().absolute() for a in allow)
        if "://" in location and not location.startswith(("file://", "sqlite://")):
            return Source(location, None, limits, allowed)
        return super().source(_local_path(location), limits, allow, options)

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        """Import one run (``run_id``) or every run of an ``experiment`` from the tracking URI."""
        location = source.location
        run_id, experiment = options.get("run_id"), options.get("experiment")
        tracking_uri = options.get("tracking_uri")
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
            _import_run(client, uri, run, experiment_name, builder_factory, source)
            return
        found = client.get_experiment_by_name(str(experiment))
        if found is None:
            raise LookupError(f"no MLflow experiment named {experiment!r} at {location}")
        for run in _runs(client, found.experiment_id):
            _import_run(client, uri, run, found.name, builder_factory, source)
        deleted = sum(1 for _ in _runs(client, found.experiment_id, deleted=True))
        if deleted:
            builder_factory.unmapped("mlflow: deleted run of the experiment (restore it to import it)", deleted)


#: ``loggerhub.importers`` entry point.
import_runs = MlflowImporter()


def _local_path(location: str) -> str:
    """A ``file:`` or ``sqlite:`` URI's path; anything else as it is."""
    if location.startswith("sqlite:///"):
        return location[len("sqlite:///") - 1:]
    if location.startswith("file:"):
        return unquote(urlparse(location).path)
    return location


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


def _import_run(client: Any, uri: str, run: Any, experiment_name: str, factory: BuilderFactory,
                source: Source) -> None:
    info, data = run.info, run.data
    ours = RUN_ID_TAG in data.tags
    try:
        _check_local(info.artifact_uri, source)
        readable = True
    except OutsideSource as error:
        source.skip(f"run {info.run_id}", None, f"its artifacts are not read: {error}")
        readable = False
    with source.temporary() as tmp:
        own = _own_documents(client, info.run_id, tmp / "own", source) if ours and readable else {}
    run_doc: dict[str, Any] = own["run"] if isinstance(own.get("run"), dict) else {}
    started = _number(run_doc.get("started_at")) or (info.start_time or 0) / 1000
    name = run_doc.get("name") or info.run_name or data.tags.get("mlflow.runName") or info.run_id
    builder = factory(
        source_id=info.run_id,
        name=str(name),
        started_at=started,
        config=_params(data.params, own.get("params"), ours),
        tags=_tags(data.tags, run_doc.get("tags") if isinstance(run_doc.get("tags"), dict) else None, ours),
        source_project=str(run_doc.get("project") or data.tags.get(PROJECT_TAG) or experiment_name),
    )
    if builder is None:
        return  # imported before: nothing downloaded
    with builder:
        files = _download(client, info.run_id, builder.scratch / "artifacts", source) if readable else {}
        if ours:
            for path in (RUN_FILE, PARAMS_FILE):
                files.pop(path, None)
        end = info.end_time / 1000 if info.end_time else None
        system = [name for name in data.metrics if name.startswith(SYSTEM_PREFIX)]
        items = _metric_items(client, info.run_id, [n for n in data.metrics if n not in system], ours, source)
        items += _system_items(client, info.run_id, system, source)
        last = max([started, *(item.ts for item in items)])
        stamp = max(end or last, last)
        items += _context_items(files, data.tags, ours, started, source)
        items += _artifact_items(files, data.tags, ours, stamp, builder.scratch, builder, source)
        items += _logged_models(client, uri, run, builder.scratch, builder, source)
        if run.inputs is not None and run.inputs.dataset_inputs:
            builder.unmapped("mlflow: dataset input of a run", len(run.inputs.dataset_inputs))
        write_in_order(items, builder, source)
        status = STATUSES.get(info.status)
        if status is None:
            # RUNNING or SCHEDULED: the run never ended; `loggerhub sync` ends such runs KILLED.
            builder.unmapped(f"mlflow: status {str(info.status)[:40]}, imported as KILLED")
            status = Status.KILLED
        # The run's end_time (the backend sets the journal's), unless a record is later.
        builder.end(status, max([stamp, *(item.ts for item in items)]), _error(data.tags, status))


def _error(tags: Mapping[str, str], status: Status) -> RunError | None:
    """Why a run that did not finish failed: the backend's ``loggerhub.error.*`` tags (MLflow
    keeps the first 8000 characters of each)."""
    kind = tags.get(ERROR_TYPE_TAG)
    if status is Status.FINISHED or not kind:
        return None
    return RunError(kind, tags.get(ERROR_MESSAGE_TAG, ""), tags.get(ERROR_TRACEBACK_TAG, ""))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else 0.0


def _check_local(artifact_uri: str | None, source: Source) -> None:
    """An artifact URI that ``MlflowClient`` reads from this machine's disk must lie inside the
    store being imported, or under ``--allow-read`` (OutsideSource otherwise)."""
    if not artifact_uri:
        return
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and artifact_uri[1:3] in (":/", ":\\")):
        source.contained(unquote(parsed.path) if parsed.scheme == "file" else artifact_uri)


def _read_json(path: Path, source: Source) -> Any:
    with path.open("rb") as handle:
        return json.loads(read_capped(handle, source.limits.item_bytes, path.name))


def _read_bytes(path: Path, source: Source) -> bytes:
    with path.open("rb") as handle:
        return read_capped(handle, source.limits.item_bytes, path.name)


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


def _listing(client: Any, run_id: str, source: Source, path: str | None = None) -> Iterator[tuple[str, int]]:
    """Every artifact file of the run with the size the server gives, checked against the limits
    before anything is downloaded."""
    count = 0
    pending = [path]
    while pending:
        for info in client.list_artifacts(run_id, pending.pop()):
            if info.is_dir:
                pending.append(info.path)
                continue
            count += 1
            size = int(info.file_size or 0)
            if count > source.limits.files:
                raise TooLarge(f"more than {source.limits.files} artifact files")
            if size > source.limits.file_bytes:
                raise TooLarge(f"artifact {info.path!r} is {size} bytes, over {source.limits.file_bytes} "
                               "(raise with --limit file_bytes=SIZE)")
            yield info.path, size


def _download(client: Any, run_id: str, target: Path, source: Source) -> dict[str, Path]:
    """Every artifact of the run, downloaded: relative path -> local file (sizes and free space
    checked first, every name kept below ``target``)."""
    target.mkdir(parents=True)
    try:
        listed = list(_listing(client, run_id, source))
        for name, _ in listed:
            contained_member(name)
    except (TooLarge, OutsideSource) as error:
        source.skip(f"run {run_id}", None, f"its artifacts are not imported: {error}")
        return {}
    if not listed:
        return {}
    source.budget.claim(target, sum(size for _, size in listed))
    with _quiet_downloads():
        root = Path(client.download_artifacts(run_id, "", str(target)))
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[path.relative_to(root).as_posix()] = path
    return found


def _own_documents(client: Any, run_id: str, target: Path, source: Source) -> dict[str, Any]:
    """The backend's ``loggerhub/run.json`` and ``loggerhub/params.json``, when the run has them."""
    listed = {f.path: f.file_size for f in client.list_artifacts(run_id, "loggerhub")}
    found: dict[str, Any] = {}
    for name, path in (("run", RUN_FILE), ("params", PARAMS_FILE)):
        if path not in listed:
            continue
        if int(listed[path] or 0) > source.limits.item_bytes:
            source.skip(f"run {run_id}/{path}", None, f"over {source.limits.item_bytes} bytes")
            continue
        with _quiet_downloads():
            local = Path(client.download_artifacts(run_id, path, str(target)))
        try:
            document = _read_json(local, source)
        except (ValueError, RecursionError) as error:
            source.skip(f"run {run_id}/{path}", None, error)
            continue
        if isinstance(document, dict):
            found[name] = document
    return found


def _params(params: Mapping[str, str], document: dict[str, Any] | None, ours: bool) -> dict[str, Any]:
    """MLflow params are strings, cut at 6000 characters and never changed; the backend's
    ``params.json`` holds the full, latest, typed values under their own keys."""
    if not ours:
        return dict(params)
    stored = (document or {}).get("params")
    typed = dict(stored) if isinstance(stored, dict) else {}
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
    # The backend's own tags: its loggerhub.* ones, its context (MLflow's mlflow.source.* names,
    # imported as the context record) and a rank's parent run.
    own_names = ("loggerhub.", "mlflow.source.", "mlflow.parentRunId")
    result = {name: value for name, value in tags.items()
              if name not in CONSUMED_TAGS and not (ours and (name.startswith(own_names) or name in escaped))}
    result.update(own)
    return result


# --------------------------------------------------------------------------- metrics


def _metric_items(client: Any, run_id: str, names: list[str], ours: bool, source: Source) -> list[Pending]:
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
    return [Pending(ts, step, 0, _metrics(values, source, (f"run {run_id} metrics at step {step}", None)),
                    where=(f"run {run_id} metrics at step {step}", None))
            for (ts, step), records in groups.items() for values in records]


def _system_items(client: Any, run_id: str, names: list[str], source: Source) -> list[Pending]:
    """MLflow's ``system/`` metrics (its monitor's, or the backend's) as system metrics records,
    under loggerhub's names where loggerhub has the series. MLflow's step is a sample count (or,
    from the backend, seconds since the start), not a training step: each sample gets the
    training step reached at its time instead."""
    samples: dict[float, dict[str, float]] = {}
    for name in names:
        key, scale = system_from_tracker(name), system_scale(name)
        for metric in client.get_metric_history(run_id, name):
            samples.setdefault(metric.timestamp / 1000, {})[key] = _value(metric.value) / scale
    return [Pending(ts, -1, 0, _system(values), auto_step=True, where=(f"run {run_id} system metrics", None))
            for ts, values in samples.items()]


def _system(values: dict[str, float]) -> Emit:
    return lambda b, step, ts: b.system_metrics(values, step, ts)


def _context_items(files: dict[str, Path], tags: Mapping[str, str], ours: bool, started: float,
                   source: Source) -> list[Pending]:
    """The run context: the backend's ``context/context.json`` (and the diff beside it), or, for
    any other run, what MLflow's own git and source tags say; nothing without a git commit
    there. ``files`` loses the backend's context files."""
    document: dict[str, Any] = {}
    diff_file = None
    if ours:
        diff_file = files.pop(CONTEXT_DIFF, None)
        files.pop(CONTEXT_REQUIREMENTS, None)
        local = files.pop(CONTEXT_FILE, None)
        if local is not None:
            try:
                document = dict(_read_json(local, source))
            except (ValueError, TypeError) as error:
                source.skip(CONTEXT_FILE, None, f"not a context document: {type(error).__name__}")
    if not document:
        if not tags.get(GIT_COMMIT_TAG):
            return []
        document = {"command": [tags[SOURCE_NAME_TAG]] if tags.get(SOURCE_NAME_TAG) else [],
                    "git": {"commit": tags[GIT_COMMIT_TAG], "branch": tags.get(GIT_BRANCH_TAG),
                            "remote": tags.get(GIT_REPO_URL_TAG),
                            "dirty": tags.get(GIT_DIRTY_TAG, "false") == "true"}}
    return [Pending(_number(document.get("timestamp")) or started, -1, 0, _context(document, diff_file, source),
                    auto_step=True, where=(CONTEXT_FILE if ours else "mlflow.source.git tags", None))]


def _context(document: dict[str, Any], diff_file: Path | None, source: Source) -> Emit:
    def emit(b: Any, step: int, ts: float) -> None:
        git = document.get("git")
        if isinstance(git, dict):
            git = {name: git[name] for name in ("commit", "branch", "remote", "dirty", "untracked") if name in git}
        diff = _read_bytes(diff_file, source) if diff_file is not None and git else None
        b.context(ts, command=document.get("command") or (), git=git or None, diff=diff,
                  **{name: document[name] for name in CONTEXT_FIELDS if document.get(name) is not None})

    return emit


def _value(value: float) -> float:
    # MLflow's SQL stores keep +/-inf as the largest double; nothing else lands exactly there.
    if abs(value) == sys.float_info.max:
        return math.copysign(math.inf, value)
    return value


def _metrics(values: dict[str, float], source: Source, where: tuple[str, int | None]) -> Emit:
    return lambda b, step, ts: write_metrics(b, values, step, ts, source, where)


# --------------------------------------------------------------------------- artifacts


def _record_name(path: str, folder: str) -> re.Match[str] | None:
    return RECORD_NAME.match(path[len(folder) + 1:]) if path.startswith(folder + "/") else None


def _artifact_items(files: dict[str, Path], tags: Mapping[str, str], ours: bool, end: float, tmp: Path,
                    builder: RunBuilder, source: Source) -> list[Pending]:
    """Images, figures, texts and tables, by MLflow's and the backend's file names; then the rest
    as artifacts. ``files`` keeps what is not taken. Files are read when their record is written,
    so that a bad one is skipped and reported like any other item."""
    unescape: Callable[[str], str] = from_tracker if ours else _same
    notes = {}
    for path in [p for p in files if p.startswith("image_annotations/")] if ours else []:
        try:
            note = _read_json(files.pop(path), source)
            notes[(note.get("image_key"), note.get("step"), note.get("timestamp"))] = note
        except (ValueError, AttributeError, TypeError, RecursionError) as error:
            source.skip(path, None, f"not an annotation note: {type(error).__name__}")
    tables = {entry.get("path") for entry in _json_list(tags.get("mlflow.loggedArtifacts"))
              if isinstance(entry, dict) and entry.get("type") == "table"}
    items: list[Pending] = []
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
            key = note["key"] if note and isinstance(note.get("key"), str) and note["key"] else unescape(image_key)
            emit = _image(key, local, note, source)
        elif ours and folder == "figures" and match is not None:
            emit = _figure(unescape(match["key"]), local, source)
        elif ours and folder == "text" and match is not None:
            emit = _text(unescape(match["key"]), local, source)
        elif path in tables or (ours and folder == "tables" and match is not None):
            key = unescape(match["key"]) if ours and match is not None else path
            emit = _table(key, local, ours, source)
        elif not ours and path.endswith(".txt") and not _in_model(files, path):
            emit = _text(path, local, source)
            match = None  # log_text keeps no step or time
        if emit is None:
            continue
        files.pop(path)
        if match is not None:
            items.append(Pending(int(match["ms"]) / 1000, int(match["step"]), index, emit, where=(path, None)))
        else:
            items.append(Pending(end, -1, index, emit, auto_step=True, where=(path, None)))
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


def _image(key: str, local: Path, note: dict[str, Any] | None, source: Source) -> Emit:
    """The image as MLflow holds it (boxes drawn in); boxes and caption from the backend's note."""
    def emit(b: Any, step: int, ts: float) -> None:
        boxes = [Box(x["x0"], x["y0"], x["x1"], x["y1"], x.get("label"), x.get("score"), x.get("class_id"))
                 for x in (note or {}).get("boxes") or []]
        b.image(key, _read_bytes(local, source), step, ts, boxes=boxes, caption=(note or {}).get("caption"))

    return emit


def _figure(key: str, local: Path, source: Source) -> Emit:
    return lambda b, step, ts: b.figure(key, _read_bytes(local, source), step, ts)


def _text(key: str, local: Path, source: Source) -> Emit:
    return lambda b, step, ts: b.text(key, _read_bytes(local, source).decode("utf-8", errors="replace"), step, ts)


def _table(key: str, local: Path, ours: bool, source: Source) -> Emit:
    """``log_table``'s JSON; the backend's confusion matrices have their row labels in front."""
    def emit(b: Any, step: int, ts: float) -> None:
        content = _read_json(local, source)
        if not isinstance(content, dict):
            raise ValueError("a table file that is not a JSON object")
        columns = [str(c) for c in content.get("columns") or []]
        rows = [list(row) for row in content.get("data") or []]
        role = TableRole.TABLE
        if ours and columns and re.fullmatch(r"_*actual", columns[0]) and len(rows) == len(columns) - 1 \
                and all(row and row[0] == label for row, label in zip(rows, columns[1:], strict=False)):
            columns, rows, role = columns[1:], [row[1:] for row in rows], TableRole.CONFUSION_MATRIX
        b.table(key, columns, rows, step, ts, role=role)

    return emit


def _file_artifacts(files: dict[str, Path], ours: bool, end: float, tmp: Path) -> list[Pending]:
    """What is left, one artifact per top-level file or folder (per child of ``models/`` and
    ``datasets/`` for the backend's runs): MLflow keeps no record of what was logged as one. The
    downloaded files are moved (same disk), not copied, into a folder per artifact."""
    groups: dict[tuple[str, str], dict[str, Path]] = {}
    for path, local in files.items():
        parts = path.split("/")
        if ours and parts[0] in ARTIFACT_FOLDERS and len(parts) > 1:
            folder, parts = parts[0], parts[1:]
        else:
            folder = ""
        groups.setdefault((folder, parts[0]), {})["/".join(parts[1:])] = local
    items = []
    unescape: Callable[[str], str] = from_tracker if ours else _same
    for order, ((folder, top), members) in enumerate(sorted(groups.items())):
        kind = ARTIFACT_FOLDERS.get(folder) or (ArtifactKind.MODEL if "MLmodel" in members else ArtifactKind.FILE)
        name = unescape(top)
        staged = tmp / "staged" / str(order) / safe_name(Path(name).name, fallback="artifact")
        items.append(Pending(end, -1, (1 << 40) + order, _artifact(staged, name, kind, members, unescape),
                             auto_step=True, where=(f"{folder}/{top}".lstrip("/"), None)))
    return items


def _artifact(staged: Path, name: str, kind: ArtifactKind, members: dict[str, Path],
              unescape: Callable[[str], str]) -> Emit:
    def emit(b: Any, step: int, ts: float) -> None:
        if list(members) == [""]:
            staged.parent.mkdir(parents=True, exist_ok=True)
            os.replace(members[""], staged)
        else:
            for relative, local in members.items():
                target = staged / contained_member(unescape(relative))
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(local, target)
        b.artifact(staged, name, ts, kind=kind, step=step)

    return emit


def _model(path: Path, name: str) -> Emit:
    return lambda b, step, ts: b.artifact(path, name, ts, kind=ArtifactKind.MODEL, step=step)


def _logged_models(client: Any, uri: str, run: Any, tmp: Path, builder: RunBuilder, source: Source) -> list[Pending]:
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
            where = (f"run {run.info.run_id} logged model {str(model.name)[:80]}", None)
            try:
                _check_local(model.artifact_location, source)
            except OutsideSource as error:
                source.skip(where[0], None, error)
                continue
            target = tmp / "models" / safe_name(model.model_id, fallback="model")
            target.mkdir(parents=True)
            with _quiet_downloads():
                local = Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=model.artifact_location, dst_path=str(target),
                    tracking_uri=uri))
            staged = target / safe_name(model.name, fallback="model")
            local.rename(staged)
            # A logged model repeats the run's params and links the run's metrics: only its own count.
            own_params = [k for k, v in (model.params or {}).items() if run.data.params.get(k) != v]
            own_metrics = [m for m in model.metrics or [] if m.run_id != run.info.run_id]
            if own_params or own_metrics:
                builder.unmapped("mlflow: params and metrics of a logged model", len(own_params) + len(own_metrics))
            step = steps.get(model.model_id)
            items.append(Pending(model.creation_timestamp / 1000, -1 if step is None else step, (1 << 41) + index,
                                 _model(staged, model.name), auto_step=step is None, where=where))
        token = page.token
        if not token:
            return items
