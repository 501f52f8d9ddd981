"""Everything that imports mlflow. Loaded only inside a delivery process (and by client_version).

The delivery process belongs to this backend alone, so the MLflow environment below is set for
the whole process, before ``mlflow`` is imported.
"""

from __future__ import annotations

import os

# The client's own HTTP retries last minutes by default (7 retries, backoff factor 2, 120 s
# timeout). loggerhub retries every failed hook with its own backoff, so the client should fail
# fast and let loggerhub retry; a user's own setting still wins.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}
for _name, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
# A hook returns only once its record is stored: asynchronous logging would break that promise.
os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "false"

import functools  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import posixpath  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from loggerhub_hookspecs import (  # noqa: E402
    ArtifactKind,
    ArtifactRecord,
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
from loggerhub_hookspecs.kit import TrackerSession, box_dict, draw_boxes  # noqa: E402
from loggerhub_hookspecs.telemetry import seconds_since_start  # noqa: E402
from loggerhub_mlflow import _groups, _telemetry  # noqa: E402
from loggerhub_mlflow.keys import (  # noqa: E402
    KeyCollision,
    KeyMap,
    UnmappableKey,
    system_scale,
    system_to_tracker,
    to_tracker,
)

MAX_METRICS_PER_BATCH = 1000
#: ``log_batch`` requests of one delivery call sent at once (see ``MlflowSession.log_metrics``).
CONCURRENT_BATCHES = 4
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_FILE_NAME_BYTES = 255

RUN_ID_TAG = "loggerhub.run_id"
PROJECT_TAG = "loggerhub.project"
PARAMS_DIFFER_TAG = "loggerhub.params_differ"
ERROR_TYPE_TAG = "loggerhub.error.type"
ERROR_MESSAGE_TAG = "loggerhub.error.message"
ERROR_TRACEBACK_TAG = "loggerhub.error.traceback"
ERROR_TAGS = (ERROR_TYPE_TAG, ERROR_MESSAGE_TAG, ERROR_TRACEBACK_TAG)
PARAMS_FILE = "loggerhub/params.json"
RUN_FILE = "loggerhub/run.json"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # MLflow's index of log_table files
LOGGED_IMAGES_TAG = "mlflow.loggedImages"

#: MLflow error codes that no retry can fix: the record is refused for good.
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_REQUEST"})

ARTIFACT_FOLDERS = {ArtifactKind.MODEL: "models", ArtifactKind.DATASET: "datasets", ArtifactKind.FILE: ""}


# --------------------------------------------------------------------------- where the run lives


def resolve_tracking_uri(options: Mapping[str, Any], run_dir: Path,
                         state: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """The tracking URI, the artifact root for experiments this backend creates, and the URI
    to remember in ``state`` (None when it must not be stored: the default, or credentials in it).

    Order: the ``tracking_uri`` option (given by the user for this run), the URI an earlier
    delivery of this run used (where its MLflow run lives), ``MLFLOW_TRACKING_URI``, then
    ``<run dir>/mlruns``. The environment variable comes after the remembered URI because it is
    the delivery process's ambient setting, which may have changed since the run started: a
    ``loggerhub sync`` from another shell must not split the run over two stores.
    """
    remembered: str | None = None
    if options.get("tracking_uri"):
        uri = remembered = str(options["tracking_uri"])
    elif state.get("tracking_uri"):
        uri = remembered = str(state["tracking_uri"])
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = remembered = os.environ["MLFLOW_TRACKING_URI"]
    else:
        uri = str(run_dir / "mlruns")
    uri, artifact_root = _store_for(uri)
    if remembered is not None:
        remembered = None if _has_credentials(uri) else uri
    if options.get("artifact_location"):
        artifact_root = str(options["artifact_location"])
    return uri, artifact_root, remembered


def experiment_name(options: Mapping[str, Any], project: str) -> str | None:
    """The experiment by name: the ``experiment`` option, ``MLFLOW_EXPERIMENT_NAME``, or (when
    ``MLFLOW_EXPERIMENT_ID`` is not set either) the loggerhub project. None: use that id."""
    if options.get("experiment"):
        return str(options["experiment"])
    if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return os.environ["MLFLOW_EXPERIMENT_NAME"]
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return None
    return project


def _store_for(uri: str) -> tuple[str, str | None]:
    """A local directory becomes a SQLite store inside it; MLflow's file store is deprecated."""
    if uri.startswith("sqlite:///"):
        database = uri[len("sqlite:///"):]
        if database and database != ":memory:":
            return uri, str(Path(database).expanduser().resolve().parent / "mlartifacts")
        return uri, None
    if ":" in uri or uri == "databricks":
        return uri, None  # a server, a file: store, or another scheme MLflow knows
    path = Path(uri).expanduser().resolve()
    if path.suffix == ".db":
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}", str(path.parent / "mlartifacts")
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}", str(path / "mlartifacts")


def _has_credentials(uri: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return True
    return bool(parts.username or parts.password or parts.query)


# --------------------------------------------------------------------------- error handling

F = TypeVar("F", bound=Callable[..., Any])


def delivery(method: F) -> F:
    """Turns MLflow's permanent refusals into ``Rejected`` and remembers a failed attempt.

    After a failure the record may already be partly in MLflow; ``log_image``, the one call that
    is not idempotent by itself, checks before writing again.
    """

    @functools.wraps(method)
    def wrapper(self: MlflowSession, *args: Any) -> Any:
        try:
            result = method(self, *args)
        except Rejected:
            self.in_doubt = False
            raise
        except (UnmappableKey, KeyCollision) as error:
            self.in_doubt = False
            raise Rejected(str(error)) from error
        except MlflowException as error:
            if error.error_code in PERMANENT_ERRORS:
                self.in_doubt = False
                raise Rejected(f"MLflow refused it: {error.message}") from error
            self.in_doubt = True
            raise
        except BaseException:
            self.in_doubt = True
            raise
        self.in_doubt = False
        return result

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- the run


class MlflowSession(TrackerSession):
    """One loggerhub run delivered to one MLflow run.

    :param state: holds the MLflow run's id, its experiment's, and the tracking URI (unless it
        is the default or holds credentials). A session finds the run again through them, or,
        when they are missing or name another store, through the ``loggerhub.run_id`` tag.
    """

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        super().__init__(run, state, resumed=resumed)
        uri, artifact_root, remembered = resolve_tracking_uri(run.options, run.dir, state)
        self.client = MlflowClient(uri)
        # The id in the state belongs to the store the state names (the tracking_uri option may
        # have moved the run since): elsewhere, find or create the run by its loggerhub id.
        known = state.get("run_id") and state.get("tracking_uri", uri) == uri
        if known:
            mlflow_run, fresh = self.client.get_run(str(state["run_id"])), False
        else:
            mlflow_run, fresh = _find_or_create(self.client, run, artifact_root)
        self.run_id: str = mlflow_run.info.run_id
        self.experiment_id: str = mlflow_run.info.experiment_id
        state.update(run_id=self.run_id, experiment_id=self.experiment_id)
        if remembered is not None:
            state["tracking_uri"] = remembered
        self.keys = KeyMap()
        self.in_doubt = False
        # A run that existed before this process may hold any record delivered again now (a
        # crash before the offset was saved, a replay): its images are listed once, up front.
        self._fresh = fresh
        self._image_files: set[str] | None = None
        self._params_doc: dict[str, Any] | None = {"params": {}, "differs": {}} if fresh else None
        if mlflow_run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            self.client.update_run(self.run_id, status="RUNNING")  # a finished run goes on
        self.parent_run_id: str | None = mlflow_run.data.tags.get(_groups.PARENT_TAG) if run.group else None
        if self.parent_run_id is not None and not fresh:
            _groups.reopen_parent(self.client, self.parent_run_id)
        if not known:
            self.client.log_dict(self.run_id, _run_document(run), RUN_FILE)

    @delivery
    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        """The status, the journal's end time (not the delivery's), and why the run failed.

        The failure goes to the tags ``loggerhub.error.type``, ``.message`` and ``.traceback``;
        an end without one removes those of an earlier end, so they always describe the last.
        """
        values = {} if error is None else {
            ERROR_TYPE_TAG: error.type, ERROR_MESSAGE_TAG: error.message, ERROR_TRACEBACK_TAG: error.traceback,
        }
        values = {name: value[:MAX_TAG_VALUE_LENGTH] for name, value in values.items() if value}
        if values:
            self.client.log_batch(self.run_id, tags=[RunTag(*item) for item in values.items()],
                                  synchronous=True)
        tags = self.client.get_run(self.run_id).data.tags
        for name in set(ERROR_TAGS) - set(values):
            if name in tags:
                self.client.delete_tag(self.run_id, name)
        self.client.set_terminated(self.run_id, status.value, end_time=_millis(ended_at))
        if self.parent_run_id is not None:
            _groups.end_parent(self.client, self.run, self.experiment_id, self.parent_run_id)

    # -- params -----------------------------------------------------------------------------

    @delivery
    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        """New params go to MLflow; a changed or cut value is kept in full in ``params.json``.

        MLflow never changes a param once set, and refuses the whole batch that tries to, so the
        run's current params are read first.
        """
        current = self.client.get_run(self.run_id).data
        doc = self._load_params_doc()
        new: dict[str, str] = {}
        refused: list[str] = []
        for key, value in params.items():
            doc["params"][key] = value
            try:
                name = self.keys(key)
            except (UnmappableKey, KeyCollision) as error:
                refused.append(str(error))
                continue
            text = str(value)
            stored = current.params.get(name, new.get(name))
            if stored is None:
                stored = new[name] = text[:MAX_PARAM_VALUE_LENGTH]
            if stored == text:
                doc["differs"].pop(name, None)
            elif len(text) > MAX_PARAM_VALUE_LENGTH and stored == text[:MAX_PARAM_VALUE_LENGTH]:
                doc["differs"][name] = {"key": key, "reason": f"cut to {MAX_PARAM_VALUE_LENGTH} characters"}
            else:
                doc["differs"][name] = {"key": key, "reason": "changed after MLflow stored it"}
        items = [Param(name, text) for name, text in new.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk, synchronous=True)
        self.client.log_dict(self.run_id, doc, PARAMS_FILE)
        if doc["differs"] or PARAMS_DIFFER_TAG in current.tags:
            self.client.set_tag(self.run_id, PARAMS_DIFFER_TAG, str(len(doc["differs"])), synchronous=True)
        if refused:
            raise Rejected(f"MLflow cannot hold these params (kept in {PARAMS_FILE}): " + "; ".join(refused))

    def _load_params_doc(self) -> dict[str, Any]:
        if self._params_doc is None:
            doc: dict[str, Any] = {"params": {}, "differs": {}}
            listed = {f.path for f in self.client.list_artifacts(self.run_id, posixpath.dirname(PARAMS_FILE))}
            if PARAMS_FILE in listed:
                with tempfile.TemporaryDirectory() as tmp:
                    local = self.client.download_artifacts(self.run_id, PARAMS_FILE, tmp)
                    doc.update(json.loads(Path(local).read_text(encoding="utf-8")))
            self._params_doc = doc
        return self._params_doc

    # -- metrics ----------------------------------------------------------------------------

    @delivery
    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        """One ``log_batch`` per 1000 points, up to :data:`CONCURRENT_BATCHES` in flight: order
        does not matter to MLflow (its SQL store locks a run's latest-metric rows and ignores a
        point whose key, step, timestamp and value it already holds), so a retried or reordered
        batch is harmless. The call returns, and loggerhub commits the journal offset, only once
        every batch is acknowledged; any failure fails the call, and all of it is sent again."""
        metrics: list[Metric] = []
        refused: dict[str, str] = {}
        for point in points:
            try:
                name = self.keys(point.key)
            except (UnmappableKey, KeyCollision) as error:
                refused.setdefault(point.key, str(error))
                continue
            metrics.append(Metric(name, point.value, _millis(point.timestamp), point.step))
        chunks = list(_chunks(metrics, MAX_METRICS_PER_BATCH))
        if len(chunks) == 1:
            self.client.log_batch(self.run_id, metrics=chunks[0], synchronous=True)
        elif chunks:
            # One server request at a time leaves the server idle while the client builds the
            # next, and the client idle while the server stores: in flight together, both work.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(CONCURRENT_BATCHES, len(chunks))) as pool:
                sent = [pool.submit(self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
                        for chunk in chunks]
                for future in sent:
                    future.result()
        if refused:
            raise Rejected("MLflow cannot hold these metric keys (the other points were delivered): "
                           + "; ".join(refused.values()))

    # -- media ------------------------------------------------------------------------------

    @delivery
    def log_image(self, image: ImageRecord) -> None:
        """A step-aware ``log_image``, boxes drawn in; boxes and caption also go to a JSON file."""
        from PIL import Image

        key = self.keys(image.key, "image")
        timestamp = _millis(image.timestamp)
        png = _media(image.path)
        if image.boxes or image.caption:
            annotation = {
                "key": image.key, "image_key": key, "step": image.step, "timestamp": timestamp,
                "width": image.width, "height": image.height, "caption": image.caption,
                "boxes": [box_dict(box) for box in image.boxes],
            }
            content = json.dumps(annotation)
            path = _record_path("image_annotations", key, image.step, image.timestamp, "json",
                                png + content.encode())
            self.client.log_text(self.run_id, content, path)
        if self._complete_earlier_image(key, image.step, timestamp):
            return
        try:
            if image.boxes:
                png, _, _ = draw_boxes(png, image.boxes)
            with Image.open(io.BytesIO(png)) as source:
                picture = source.copy()
        except OSError as error:  # Pillow cannot read it: retrying will not change that
            raise Rejected(f"image {image.key!r}: cannot read it: {error}") from error
        self.client.log_image(self.run_id, picture, key=key, step=image.step, timestamp=timestamp,
                              synchronous=True)

    def _complete_earlier_image(self, key: str, step: int, timestamp: int) -> bool:
        """True when an earlier attempt already stored this image (finishing what it left).

        ``log_image`` names its files with a random uuid, so calling it again would add a copy.
        """
        if self.in_doubt or (self._image_files is None and not self._fresh):
            self._image_files = {f.path for f in self.client.list_artifacts(self.run_id, "images")}
        if self._image_files is None:
            return False
        prefix = f"images/{key.replace('/', '~')}+step+{step}+timestamp+{timestamp}+"
        files = {path for path in self._image_files if path.startswith(prefix)}
        originals = sorted(p for p in files if p.endswith(".png"))
        if not originals:
            return False
        compressed = originals[0][: -len(".png")] + "+compressed.webp"
        if compressed not in files:
            from PIL import Image

            with tempfile.TemporaryDirectory() as tmp:
                local = Path(self.client.download_artifacts(self.run_id, originals[0], tmp))
                with Image.open(local) as picture:
                    small = picture.copy()
                small.thumbnail((1024, 1024))
                target = Path(tmp) / posixpath.basename(compressed)
                small.save(target, format="WEBP")
                self.client.log_artifact(self.run_id, str(target), "images")
        self.client.set_tag(self.run_id, LOGGED_IMAGES_TAG, "True", synchronous=True)
        return True

    @delivery
    def log_figure(self, figure: FigureRecord) -> None:
        """The PNG rendered when the figure was logged, as ``figures/<key>+step+N+timestamp+T+H.png``.

        ``log_figure`` would unpickle and re-render the figure into the same kind of PNG file.
        """
        path = _record_path("figures", self.keys(figure.key), figure.step, figure.timestamp, "png",
                            _media(figure.path))
        self._upload_file(figure.path, path)

    @delivery
    def log_text(self, text: TextRecord) -> None:
        try:
            content = text.text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise Rejected(f"text {text.key!r} is not valid Unicode: {error}") from None
        path = _record_path("text", self.keys(text.key), text.step, text.timestamp, "txt", content)
        self.client.log_text(self.run_id, text.text, path)

    @delivery
    def log_table(self, table: TableRecord) -> None:
        """A JSON table in ``log_table``'s format, listed where ``log_table`` lists its tables.

        ``log_table`` appends to a file that already exists, so a retried call would duplicate
        the rows; writing the file whole makes a retry harmless.
        """
        columns = list(table.columns)
        rows = [list(row) for row in table.rows]
        if table.role is TableRole.CONFUSION_MATRIX:
            label_column = "actual"
            while label_column in columns:
                label_column = "_" + label_column
            rows = [[columns[i] if i < len(columns) else str(i), *row] for i, row in enumerate(rows)]
            columns = [label_column, *columns]
        content = json.dumps({"columns": columns, "data": rows})
        path = _record_path("tables", self.keys(table.key), table.step, table.timestamp, "json",
                            content.encode("utf-8", "surrogatepass"))
        self.client.log_text(self.run_id, content, path)
        self._index_table(path)

    def _index_table(self, path: str) -> None:
        tags = self.client.get_run(self.run_id).data.tags
        try:
            index = json.loads(tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
        except json.JSONDecodeError:
            return  # someone else's value; leave it alone
        entry = {"path": path, "type": "table"}
        if entry in index:
            return
        value = json.dumps([*index, entry])
        # MLflow would cut a longer value and break the JSON; the file stays in tables/ anyway.
        if len(value) <= MAX_TAG_VALUE_LENGTH:
            self.client.set_tag(self.run_id, LOGGED_ARTIFACTS_TAG, value, synchronous=True)

    # -- files ------------------------------------------------------------------------------

    @delivery
    def log_artifact(self, artifact: ArtifactRecord) -> None:
        folder = ARTIFACT_FOLDERS[artifact.kind]
        self._upload(artifact, posixpath.join(folder, to_tracker(artifact.name, "artifact")))

    @delivery
    def log_checkpoint(self, checkpoint: ArtifactRecord) -> None:
        self._upload(checkpoint, posixpath.join("models", to_tracker(checkpoint.name, "artifact")))

    def _upload(self, artifact: ArtifactRecord, target: str) -> None:
        if not artifact.path.exists():  # deleted from the run directory: no retry brings it back
            raise Rejected(f"artifact {artifact.name!r}: its copy in the run directory is gone: "
                           f"{artifact.path}")
        if not artifact.is_dir:
            self._upload_file(artifact.path, target)
            return
        files = sorted(p for p in artifact.path.rglob("*") if p.is_file())
        renamed = {p: to_tracker(p.relative_to(artifact.path).as_posix(), "artifact") for p in files}
        if all(name == p.relative_to(artifact.path).as_posix() for p, name in renamed.items()):
            self.client.log_artifacts(self.run_id, str(artifact.path), target)
            return
        with tempfile.TemporaryDirectory() as tmp:
            for source, name in renamed.items():
                _place(source, Path(tmp, name))
            self.client.log_artifacts(self.run_id, tmp, target)

    def _upload_file(self, local: Path, target: str) -> None:
        folder, base = posixpath.split(target)
        if local.name == base:
            self.client.log_artifact(self.run_id, str(local), folder or None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp, base)
            _place(local, staged)
            self.client.log_artifact(self.run_id, str(staged), folder or None)

    # -- telemetry --------------------------------------------------------------------------

    _system_keys: KeyMap | None = None

    @delivery
    def log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        """Under MLflow's own system metric names (``keys.SYSTEM_NAMES``), so that MLflow's UI
        charts them in its system metrics section; the step is whole seconds since the run
        started (MLflow's monitor counts samples instead; seconds stay the same on redelivery).
        Megabytes are MLflow's (10**6 bytes), converted from loggerhub's MiB."""
        if self._system_keys is None:
            self._system_keys = KeyMap(lambda key, kind: system_to_tracker(key))
        metrics: list[Metric] = []
        refused: dict[str, str] = {}
        for point in points:
            try:
                name = self._system_keys(point.key)
            except (UnmappableKey, KeyCollision) as error:
                refused.setdefault(point.key, str(error))
                continue
            step = seconds_since_start(point.timestamp, self.run.started_at)
            metrics.append(Metric(name, point.value * system_scale(name), _millis(point.timestamp), step))
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
        if refused:
            raise Rejected("MLflow cannot hold these system metric keys (the other points were delivered): "
                           + "; ".join(refused.values()))

    @delivery
    def log_console(self, output: ConsoleRecord) -> None:
        """Appended to ``console/<stream>.log`` (see ``_telemetry.ConsoleCopy``): a copy beside
        the journal holds the text, and its current part is uploaded whole."""
        copy = _telemetry.ConsoleCopy(self.run.dir / "consumers" / "mlflow-console" / self.run_id)
        part = copy.append(output)
        self.client.log_artifact(self.run_id, str(part), _telemetry.CONSOLE_FOLDER)

    @delivery
    def log_context(self, context: RunContext) -> None:
        """MLflow's source and git tags, host fields as ``loggerhub.*`` tags, and
        ``context/requirements.txt``, ``context/git.diff`` and ``context/context.json``."""
        tags = [RunTag(name, value) for name, value in _telemetry.context_tags(context).items()]
        self.client.log_batch(self.run_id, tags=tags, synchronous=True)
        folder = _telemetry.CONTEXT_FOLDER
        self.client.log_text(self.run_id, context.requirements(),
                             f"{folder}/{_telemetry.REQUIREMENTS_FILE}")
        self.client.log_dict(self.run_id, _telemetry.context_document(context),
                             f"{folder}/{_telemetry.CONTEXT_FILE}")
        diff = context.git.diff_path if context.git is not None else None
        if diff is not None:
            if not diff.exists():  # deleted from the run directory: no retry brings it back
                raise Rejected(f"the git diff is gone from the run directory (the rest of the context "
                               f"was delivered): {diff}")
            self._upload_file(diff, f"{folder}/{_telemetry.DIFF_FILE}")


# --------------------------------------------------------------------------- helpers


def _find_or_create(client: MlflowClient, run: RunInfo, artifact_root: str | None) -> tuple[Any, bool]:
    """The MLflow run for this loggerhub run, created once even when run_start is retried."""
    tags = {RUN_ID_TAG: run.run_id, PROJECT_TAG: run.project}
    for key, value in run.tags.items():
        try:
            tags[to_tracker(key)] = str(value)[:MAX_TAG_VALUE_LENGTH]
        except UnmappableKey:
            pass  # run.json holds every tag in full
    if run.options.get("run_id"):
        attached = client.get_run(str(run.options["run_id"]))
        client.log_batch(attached.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()][:100],
                         synchronous=True)
        return attached, False
    name = experiment_name(run.options, run.project)
    if name is None:
        experiment_id = _experiment_by_id(client, os.environ["MLFLOW_EXPERIMENT_ID"])
    else:
        experiment_id = _experiment(client, name, artifact_root)
    if "'" not in run.run_id:
        found = client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` = '{run.run_id}'", max_results=1)
        if found:
            return found[0], False
    run_name = run.name
    if run.group is not None:
        tags.update(_groups.child_tags(client, experiment_id, run, _millis(run.started_at)))
        run_name = _groups.child_name(run)
    created = client.create_run(experiment_id, start_time=_millis(run.started_at), tags=tags,
                                run_name=run_name)
    return created, True


def _experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_root))
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)  # another run created it meanwhile
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"the MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore "
            f"--experiment-id {experiment.experiment_id}) or choose another with the 'experiment' option"
        )
    return str(experiment.experiment_id)


def _experiment_by_id(client: MlflowClient, experiment_id: str) -> str:
    experiment = client.get_experiment(experiment_id)
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"the MLflow experiment {experiment_id} (MLFLOW_EXPERIMENT_ID) is deleted: restore it "
            f"(mlflow experiments restore --experiment-id {experiment_id}) or choose another with "
            "the 'experiment' option"
        )
    return str(experiment.experiment_id)


def _run_document(run: RunInfo) -> dict[str, Any]:
    return {"run_id": run.run_id, "project": run.project, "name": run.name,
            "dir": str(run.dir.resolve()), "started_at": run.started_at, "tags": dict(run.tags)}


def _millis(seconds: float) -> int:
    return int(round(seconds * 1000))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _record_path(folder: str, name: str, step: int, timestamp: float, extension: str,
                 content: bytes) -> str:
    """``<folder>/<name>+step+<step>+timestamp+<ms>+<hash>.<extension>``.

    The same record always gets the same path, so a retry overwrites its own file; the content
    hash keeps two records of one key, step and millisecond apart.
    """
    digest = hashlib.sha256(content).hexdigest()[:8]
    return _checked_path(f"{folder}/{name}+step+{step}+timestamp+{_millis(timestamp)}+{digest}.{extension}")


def _checked_path(path: str) -> str:
    """An artifact path whose every part fits in a file name."""
    for part in path.split("/"):
        if len(part.encode("utf-8")) > MAX_FILE_NAME_BYTES:
            raise UnmappableKey(f"the artifact path {path[:120]!r}... has a part longer than "
                                f"{MAX_FILE_NAME_BYTES} bytes; use a shorter key")
    return path


def _media(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as error:  # deleted from the run directory: no retry brings it back
        raise Rejected(f"media file missing from the run directory: {path}") from error


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
