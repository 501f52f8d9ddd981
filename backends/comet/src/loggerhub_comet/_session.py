"""The heavy half of the Comet backend: one Comet experiment per loggerhub run.

comet_ml is imported through :func:`import_comet`, after the environment switches that must be in
place before its import (it installs import hooks that patch other frameworks, MLflow included,
and may start an error reporter). The kit imports this module in the delivery process only.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, cast

from loggerhub_comet.keys import NameTooLong, metric_name, system_metric_name, to_tracker
from loggerhub_hookspecs import (
    ArtifactKind,
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
from loggerhub_hookspecs.kit import TrackerSession

#: Set before comet_ml is imported; the backend never wants these, whatever the user's config.
FORCED_ENV = {
    "COMET_DISABLE_AUTO_LOGGING": "1",  # no import hooks patching mlflow, torch, keras, ...
    "COMET_ERROR_TRACKING_ENABLE": "0",  # no SDK crash reports to a third-party host
}
#: Defaults the user may override in the environment.
DEFAULT_ENV = {"COMET_LOGGING_CONSOLE": "WARNING"}

#: Everything automatic is off: no code, git, environment, system metrics or stdout capture.
QUIET_EXPERIMENT = {
    "log_code": False,
    "log_graph": False,
    "parse_args": False,
    "auto_param_logging": False,
    "auto_metric_logging": False,
    "auto_output_logging": "",
    "auto_log_co2": False,
    "auto_histogram_weight_logging": False,
    "auto_histogram_gradient_logging": False,
    "auto_histogram_activation_logging": False,
    "auto_histogram_tensorboard_logging": False,
    "log_env_details": False,
    "log_env_gpu": False,
    "log_env_host": False,
    "log_env_cpu": False,
    "log_env_network": False,
    "log_env_disk": False,
    "log_git_metadata": False,
    "log_git_patch": False,
    "display_summary_level": 0,
}

OPTIONS = ("project", "workspace", "online", "offline_dir", "experiment_key")
#: comet_ml truncates longer parameter values (``MAXIMAL_VALUE_LENGTH``).
MAX_PARAM_TEXT = 1000
#: The Other-tab entries that hold the run status and, for a run that did not finish, why.
STATUS_OTHER = "status"
ERROR_TYPE_OTHER = "error_type"
ERROR_MESSAGE_OTHER = "error_message"
#: The asset holding the traceback of a run that did not finish.
TRACEBACK_ASSET = "loggerhub/traceback.txt"
#: Offline, where comet_ml keeps each session's experiment until end(), per experiment key, under
#: the offline directory: a session that died leaves its folder there, for the next to archive.
STAGING = ".loggerhub-staging"
#: How long a record may wait for comet_ml's writer thread before its delivery is retried.
WRITE_TIMEOUT = 120.0
#: The Other-tab entry re-logged after each record, offline, as the sign that comet_ml's writer
#: thread has written the record to disk (it writes in order); it always holds the run id.
MARKER_OTHER = "loggerhub_run_id"
#: The values COMET_MODE takes (Ultralytics' switch; comet_ml itself reads COMET_START_ONLINE).
COMET_MODES = {"online": True, "offline": False}
#: A run of a group (one run per rank) carries the tag ``group:<id>`` (Comet's project view
#: groups and filters by tag) and these Other-tab entries.
GROUP_TAG = "group:"


def import_comet() -> Any:
    """comet_ml, imported with auto-logging, monkey-patching and error tracking switched off."""
    if "comet_ml" not in sys.modules:
        os.environ.update(FORCED_ENV)
        for name, value in DEFAULT_ENV.items():
            os.environ.setdefault(name, value)
    import comet_ml

    return comet_ml


@dataclass(frozen=True)
class Settings:
    """The backend's options, resolved against the environment."""

    project: str
    workspace: str | None
    online: bool
    offline_dir: Path
    experiment_key: str | None

    @classmethod
    def resolve(cls, run: RunInfo, comet: Any) -> Settings:
        options = dict(run.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            print(f"loggerhub[comet]: ignoring unknown options {unknown}; known: {list(OPTIONS)}",
                  file=sys.stderr)
        online = options.get("online")
        if online is None:
            online = _online_from_environment(comet)
        offline_dir = (options.get("offline_dir") or os.environ.get("COMET_OFFLINE_DIRECTORY")
                       or run.dir / "comet")
        experiment_key = options.get("experiment_key") or None
        if experiment_key is not None and not re.fullmatch(r"[A-Za-z0-9]{32,50}", str(experiment_key)):
            raise ValueError("comet option 'experiment_key' must be 32 to 50 letters and digits, "
                             f"got {experiment_key!r}")
        return cls(
            project=options.get("project") or os.environ.get("COMET_PROJECT_NAME") or run.project,
            workspace=options.get("workspace") or os.environ.get("COMET_WORKSPACE") or None,
            online=_as_bool(online, "online"),
            offline_dir=Path(offline_dir).expanduser().absolute(),
            experiment_key=experiment_key,
        )


def _online_from_environment(comet: Any) -> bool:
    """Comet's own switches, in comet_ml's order: ``COMET_START_ONLINE`` (or ``start_online`` in
    its config files), then Ultralytics' ``COMET_MODE``, then whether an API key is configured."""
    from everett import ConfigurationError  # comet_ml's configuration library

    config = comet.get_config()
    try:
        online = config.get_bool(None, "comet.start.online", default=None, not_set_value=None)
    except ConfigurationError as error:  # a value comet_ml cannot parse either
        raise ValueError(f"COMET_START_ONLINE must be a boolean: {error}") from None
    if online is not None:
        return bool(online)
    mode = os.environ.get("COMET_MODE", "").strip().lower()
    if mode:
        if mode not in COMET_MODES:
            raise ValueError(f"COMET_MODE must be 'online' or 'offline', got {mode!r}")
        return COMET_MODES[mode]
    # comet_ml's own lookup: COMET_API_KEY or the api_key of ~/.comet.config.
    return comet.get_api_key(None, config) is not None


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"comet option {name!r} must be a boolean, got {value!r}")


_Method = TypeVar("_Method", bound=Callable[..., None])


def _acknowledged(method: _Method) -> _Method:
    """A record method that returns (or refuses part of its record) only once comet_ml has
    written what it logged: see :meth:`CometSession._acknowledge`."""

    @functools.wraps(method)
    def deliver(self: CometSession, *args: Any) -> None:
        try:
            method(self, *args)
        except Rejected:
            self._acknowledge()  # the rest of the record was logged
            raise
        self._acknowledge()

    return cast(_Method, deliver)


class CometSession(TrackerSession):
    """One open Comet experiment and the calls that log loggerhub records into it.

    A new session (``resumed=False``) creates the run's experiment; a resumed one re-attaches to
    the experiment ``state`` names. Offline, each session writes one archive when it ends or
    closes, all with the run's experiment key.
    """

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        super().__init__(run, state, resumed=resumed)
        comet = self._comet = import_comet()
        settings = Settings.resolve(run, comet)
        known = resumed and bool(state.get("experiment_key"))
        if known:
            key = state["experiment_key"]
            online = bool(state.get("online", settings.online))
            offline_dir = Path(state.get("offline_dir") or settings.offline_dir)
        else:
            online, offline_dir = settings.online, settings.offline_dir
            # One key per loggerhub run: a retried or repeated start lands in the same experiment.
            key = settings.experiment_key or comet.get_experiment_key(run.run_id)
        if settings.experiment_key or (online and known):
            mode = "get"
        else:
            # Offline, every archive of the run may create the experiment or append to it, so
            # `comet upload` accepts the archives in any order (it takes them as given).
            mode = "get_or_create"
        self.online = online
        tags = [f"{k}:{v}" if v else k for k, v in run.tags.items()]
        if run.group is not None and GROUP_TAG + run.group not in tags:
            tags.append(GROUP_TAG + run.group)
        staging = None
        if not online:
            offline_dir.mkdir(parents=True, exist_ok=True)
            staging = offline_dir / STAGING / key
            staging.mkdir(parents=True, exist_ok=True)
            orphans = sorted(staging.iterdir())
            for orphan in orphans:
                _archive_orphan(orphan, offline_dir, key, settings, tags)
            if orphans:
                # The archive comet_ml opened for a dead session stays empty and unreadable
                # (`comet upload` fails on it); what it was to hold was archived above.
                for archive in offline_dir.glob(f"{key}-*.zip"):
                    if _is_placeholder(archive):
                        archive.unlink()
        with _temporary_folders_in(staging):
            self.experiment = comet.start(
                project_name=settings.project,
                workspace=settings.workspace,
                experiment_key=key,
                mode=mode,
                online=online,
                experiment_config=comet.ExperimentConfig(
                    **QUIET_EXPERIMENT, offline_directory=str(offline_dir), name=run.name,
                    tags=tags or None,
                ),
            )
        self._read = 0  # offline: how far this session's messages.json was read
        self._markers_logged = self._markers_seen = 0
        state.update(experiment_key=self.experiment.get_key(), online=online, project=settings.project,
                     workspace=settings.workspace, offline_dir=None if online else str(offline_dir))
        group = {"group": run.group, "rank": run.rank, "world_size": run.world_size}
        self.experiment.log_others({MARKER_OTHER: run.run_id, STATUS_OTHER: "RUNNING",
                                    **{name: value for name, value in group.items() if value is not None}})
        self._markers_logged = 1

    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        """Record the status and the failure, close the experiment (offline: write the archive),
        and give Comet the journal's end time rather than the delivery's."""
        experiment = self.experiment
        experiment.log_other(STATUS_OTHER, status.value)
        if error is not None:
            experiment.log_others({ERROR_TYPE_OTHER: error.type, ERROR_MESSAGE_OTHER: error.message})
            if error.traceback:
                self._check(experiment.log_asset_data(
                    error.traceback, name=TRACEBACK_ASSET, overwrite=True,
                    metadata={"loggerhub": "traceback"}), "traceback")
        experiment.end()
        ended_ms = round(ended_at * 1000)
        if not self.online:
            failure = {} if error is None else {
                "customer_error_reported": True,
                "customer_error_message": f"{error.type}: {error.message}",
            }
            self._stamp_archive(stop_time=ended_ms, **failure)
            return
        # Online, Comet keeps a native state and end time; the SDK's end() leaves them at
        # "finished" and now. (Not covered by the tests, which have no Comet server.)
        api_experiment = self._comet.APIExperiment(previous_experiment=self.state["experiment_key"])
        api_experiment.set_end_time(ended_ms)
        if status is not Status.FINISHED:
            api_experiment.set_state("crashed")

    def close(self) -> None:
        # comet_ml has no way to let go of an experiment but to end it; offline, that writes this
        # session's archive, whose status stays RUNNING.
        with contextlib.suppress(Exception):
            self.experiment.end()

    def _acknowledge(self) -> None:
        """Return once comet_ml has written everything logged so far to its folder (offline).

        A record is delivered when its hook returns; comet_ml's writer thread writes messages in
        order, so once the marker logged last is in ``messages.json`` the record is on disk, and a
        delivery that dies afterwards leaves it for the next session to archive.
        """
        if self.online:
            return
        self.experiment.log_other(MARKER_OTHER, self.run.run_id)
        self._markers_logged += 1
        messages = Path(self.experiment.tmpdir) / "messages.json"
        deadline = time.monotonic() + WRITE_TIMEOUT
        while self._markers_seen < self._markers_logged:
            self._markers_seen += self._new_markers(messages)
            if self._markers_seen >= self._markers_logged:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"comet_ml has not written the record to {messages} after {WRITE_TIMEOUT:.0f} s")
            time.sleep(0.002)

    def _new_markers(self, messages: Path) -> int:
        """The markers in the complete lines written since the last call."""
        try:
            with messages.open("rb") as stream:
                stream.seek(self._read)
                chunk = stream.read()
        except FileNotFoundError:
            return 0
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read += len(complete)
        found = 0
        for line in complete.splitlines():
            if b'"log_other"' in line and MARKER_OTHER.encode() in line:
                payload = json.loads(line).get("payload") or {}
                found += payload.get("key") == MARKER_OTHER
        return found

    def _stamp_archive(self, **fields: Any) -> None:
        """Set ``fields`` in the ``experiment.json`` of the archive ``end`` just wrote.

        comet_ml stamps the archive with the delivery's end; `comet upload` sends ``stop_time``
        as the experiment's end time (``offline_experiment_start_end_time``), so it becomes the
        journal's. ``start_time`` stays the delivery's: readers (and this package's) order a
        run's archives by it.
        """
        experiment = self.experiment
        # Where end() wrote it: the name is fixed before, and the folder may fall back to a
        # temporary one when the offline directory is not writable.
        archive = Path(experiment.offline_directory) / experiment._get_offline_archive_file_name()
        staged = archive.with_name(archive.name + ".tmp")
        with zipfile.ZipFile(archive) as source, zipfile.ZipFile(staged, "w") as target:
            for member in source.infolist():
                data = source.read(member)
                if member.filename == "experiment.json":
                    data = json.dumps({**json.loads(data), **fields}).encode("utf-8")
                target.writestr(member, data)
        os.replace(staged, archive)

    # -- data ----------------------------------------------------------------------------------

    @_acknowledged
    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        names: dict[str, ParamValue] = {}
        refused: list[str] = []
        long_values: dict[str, str] = {}
        for key, value in params.items():
            try:
                name = metric_name(key)
            except NameTooLong as error:
                refused.append(str(error))
                continue
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if isinstance(value, (str, list)) and len(text) > MAX_PARAM_TEXT:
                # Comet keeps 1000 characters of a parameter; an asset keeps the whole value.
                long_values[name] = json.dumps(value, ensure_ascii=False)
                value = text[:MAX_PARAM_TEXT]
            names[name] = value
        if names:
            self.experiment.log_parameters(names, nested_support=False)
        for name, text in long_values.items():
            self._check(self.experiment.log_asset_data(
                text, name=f"loggerhub/params/{name}.json", overwrite=True,
                metadata={"loggerhub": "param", "key": name}), f"parameter {name}")
        if refused:
            raise Rejected("; ".join(refused))

    @_acknowledged
    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        refused: dict[str, str] = {}
        experiment = self.experiment
        # One log_metrics call per step (and epoch), as a hand-written bulk integration does; a
        # key seen again in the same step starts a new call, so no point replaces another.
        batch: dict[str, float] = {}
        at: tuple[int, int | None] = (-1, None)
        for point in points:
            try:
                name = metric_name(point.key)
            except NameTooLong as error:
                refused[point.key] = str(error)
                continue
            if (point.step, point.epoch) != at or name in batch:
                if batch:
                    experiment.log_metrics(batch, step=at[0], epoch=at[1])
                    batch = {}
                at = (point.step, point.epoch)
                self._epoch(point.epoch)
            # comet_ml sends NaN and +/-inf as "NaN", "Infinity", "-Infinity"; they are kept.
            batch[name] = point.value
        if batch:
            experiment.log_metrics(batch, step=at[0], epoch=at[1])
        if refused:
            raise Rejected(f"{len(refused)} metric keys refused, the other points were logged: "
                           + "; ".join(refused.values()))

    @_acknowledged
    def log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        from comet_ml.messages import MetricMessage

        unknown = []
        for point in points:
            native = system_metric_name(point.key)
            if native is None:
                unknown.append(point)
                continue
            name, factor = native
            # The message comet_ml's own monitor sends (no context prefix), stamped with the
            # sample's time: Comet plots system metrics against wall time.
            message = MetricMessage(timestamp=round(point.timestamp * 1000))
            message.set_metric(name, value=point.value * factor, step=point.step)
            self.experiment._enqueue_message(message)
        if unknown:
            # A series a newer loggerhub samples goes where any metric goes.
            self.log_metrics(unknown)

    @_acknowledged
    def log_console(self, output: ConsoleRecord) -> None:
        from comet_ml.messages import StandardOutputMessage

        if output.stream not in ("stdout", "stderr"):
            raise Rejected(f"console stream {output.stream!r}: expected stdout or stderr")
        # The message comet_ml's stdout/stderr capture sends (comet_ml/console.py), stamped with
        # the journal's time: Comet's Output tab shows it.
        self.experiment._enqueue_message(StandardOutputMessage(
            output="".join(line + "\n" for line in output.lines), stderr=output.stream == "stderr",
            context=self.experiment.context, timestamp=round(output.timestamp * 1000)))

    @_acknowledged
    def log_context(self, context: RunContext) -> None:
        from comet_ml.git_logging import get_repo_name
        from comet_ml.messages import (
            GitMetadataMessage,
            InstalledPackagesMessage,
            SystemDetailsMessage,
            SystemInfoMessage,
        )

        experiment = self.experiment
        # The messages comet_ml's environment logging sends (log_env_details, set_pip_packages,
        # log_git_metadata), from the trainer's context rather than the delivery process's.
        # What the journal does not hold (the trainer's pid, user, ip, uname parts) is left
        # empty, in the types comet's upload schema asks for.
        experiment._enqueue_message(SystemDetailsMessage.create(
            context=None, command=list(context.command), env=dict(context.environment) or None,
            hostname=context.hostname, ip="", machine="", os_release="", os_type="",
            os=context.os, pid=0, processor=context.cpu, python_exe=context.python_executable,
            python_version_verbose=context.python_version, python_version=context.python_version, user=""))
        info = {"cpu_count": context.cpu_count, "gpus": ", ".join(context.gpus) or None}
        for key, value in info.items():
            if value is not None:
                experiment._enqueue_message(SystemInfoMessage.create(
                    context=experiment.context, key=key, value=value))
        if context.packages:
            experiment._enqueue_message(InstalledPackagesMessage.create(
                context=experiment.context,
                installed_packages=[f"{name}=={version}" for name, version in sorted(context.packages.items())]))
        git = context.git
        if git is None:
            return
        experiment._enqueue_message(GitMetadataMessage.create(context=experiment.context, git_metadata={
            "user": None, "root": None, "branch": git.branch, "parent": git.commit, "status": None,
            "origin": git.remote, "repo_name": get_repo_name(git.remote)}))
        experiment.log_others({"git_dirty": git.dirty, "git_diff_truncated": git.diff_truncated})
        if git.untracked:
            experiment.log_other("git_untracked", json.dumps(list(git.untracked), ensure_ascii=False))
        if git.diff_path is not None:
            self._git_patch(git.diff_path)

    def _git_patch(self, diff: Path) -> None:
        """The diff where comet_ml's log_git_patch puts it: a zipped ``git_diff.patch``, which
        Comet's Code tab shows."""
        from comet_ml._typing import TemporaryFilePath
        from comet_ml.file_uploader import GitPatchUploadProcessor
        from comet_ml.utils import compress_git_patch

        try:
            patch = diff.read_text(encoding="utf-8")
        except FileNotFoundError as error:
            raise Rejected(f"git diff {diff} is gone from the run directory") from error
        if not patch:
            return
        experiment = self.experiment
        _, zip_path = compress_git_patch(patch)
        message = GitPatchUploadProcessor(
            TemporaryFilePath(zip_path), experiment.asset_upload_limit, url_params=None, metadata=None,
            copy_to_tmp=False, error_message_identifier=None, tmp_dir=experiment.tmpdir, critical=False,
        ).process()
        self._check(message, "git patch")
        experiment._enqueue_message(message)

    @_acknowledged
    def log_image(self, image: ImageRecord) -> None:
        comet = self._comet
        annotations = None
        if image.boxes:
            annotations = [comet.annotations.Layer(name="boxes", boxes=[
                comet.annotations.Box(
                    box=(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0),
                    label=box.label or (f"class {box.class_id}" if box.class_id is not None else "box"),
                    score=box.score,
                    metadata=None if box.class_id is None else {"class_id": box.class_id},
                )
                for box in image.boxes
            ])]
        metadata: dict[str, Any] = {"loggerhub": "image", "key": to_tracker(image.key)}
        if image.caption is not None:
            metadata["caption"] = image.caption
        if image.epoch is not None:
            metadata["epoch"] = image.epoch
        self._check(self.experiment.log_image(
            str(image.path), name=to_tracker(image.key), step=image.step,
            annotations=annotations, metadata=metadata), f"image {image.key}")

    @_acknowledged
    def log_figure(self, figure: FigureRecord) -> None:
        # The PNG rendered at log time goes to the same Graphics view log_figure would use, without
        # unpickling a matplotlib figure in the delivery process.
        metadata: dict[str, Any] = {"loggerhub": "figure", "key": to_tracker(figure.key)}
        if figure.epoch is not None:
            metadata["epoch"] = figure.epoch
        self._check(self.experiment.log_image(
            str(figure.path), name=to_tracker(figure.key), step=figure.step, metadata=metadata),
            f"figure {figure.key}")

    @_acknowledged
    def log_checkpoint(self, checkpoint: ArtifactRecord) -> None:
        self._log_artifact(checkpoint, checkpoint=True)

    @_acknowledged
    def log_artifact(self, artifact: ArtifactRecord) -> None:
        self._log_artifact(artifact, checkpoint=False)

    def _log_artifact(self, artifact: ArtifactRecord, *, checkpoint: bool) -> None:
        name = to_tracker(artifact.name)
        metadata = {"loggerhub": "checkpoint" if checkpoint else artifact.kind.value,
                    "name": name, "step": artifact.step}
        if checkpoint or artifact.kind is ArtifactKind.MODEL:
            # Comet's model view groups files by model name: "weights/best.pt" becomes model "best".
            self.experiment.set_step(artifact.step)
            model = PurePosixPath(name).stem or name
            self._check(self.experiment.log_model(
                model, str(artifact.path),
                file_name=None if artifact.is_dir else PurePosixPath(name).name,
                metadata=metadata), f"model {artifact.name}")
            return
        files = ([(p, f"{name}/{p.relative_to(artifact.path).as_posix()}")
                  for p in sorted(artifact.path.rglob("*")) if p.is_file()]
                 if artifact.is_dir else [(artifact.path, name)])
        for path, file_name in files:
            self._check(self.experiment.log_asset(
                str(path), file_name=file_name, step=artifact.step, metadata=metadata),
                f"file {file_name}")

    @_acknowledged
    def log_text(self, text: TextRecord) -> None:
        self._epoch(None)
        self._check(self.experiment.log_text(
            text.text, step=text.step, metadata={"loggerhub": "text", "key": to_tracker(text.key)}),
            f"text {text.key}")

    @_acknowledged
    def log_table(self, table: TableRecord) -> None:
        name = to_tracker(table.key)
        self._epoch(None)
        if table.role is TableRole.CONFUSION_MATRIX:
            self._check(self.experiment.log_confusion_matrix(
                matrix=[list(row) for row in table.rows], labels=list(table.columns), title=name,
                file_name=f"{name}.json", step=table.step, max_categories=max(25, len(table.columns)),
                metadata={"loggerhub": "confusion_matrix", "key": name}), f"confusion matrix {table.key}")
            return
        # Experiment.log_table(filename, ...) would upload a file of that name from the working
        # directory instead of the data when one exists, so the CSV is built here.
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
        self._check(self.experiment.log_asset_data(
            buffer.getvalue(), name=f"{name}.csv", step=table.step,
            metadata={"loggerhub": "table", "key": name}), f"table {table.key}")

    @classmethod
    def supported_records(cls) -> frozenset[str]:
        # Of the lifecycle boundaries, Comet has a place for the end of an epoch only.
        phases = {phase.value for phase in Phase}
        return (super().supported_records() - phases) | {Phase.EPOCH_END.value}

    @_acknowledged
    def on_event(self, event: LifecycleEvent) -> None:
        if event.phase is not Phase.EPOCH_END:
            raise Unsupported(event.phase.value)
        if event.epoch is not None:
            # Comet's epoch bookkeeping (curr_epoch), which its progress views read.
            self.experiment.log_epoch_end(event.epoch, step=event.step)

    # -- helpers -------------------------------------------------------------------------------

    def _epoch(self, epoch: int | None) -> None:
        # The SDK stamps every record with its current epoch, which sticks from the last record
        # that had one; a record without an epoch must not inherit it.
        if epoch is None:
            self.experiment.curr_epoch = None

    @staticmethod
    def _check(result: Any, what: str) -> None:
        # comet_ml reports a refused upload by logging an error and returning None.
        if result is None:
            raise Rejected(f"comet_ml refused the {what} (see its COMET ERROR message)")


@contextlib.contextmanager
def _temporary_folders_in(folder: Path | None) -> Iterator[None]:
    """comet_ml puts an experiment's folder in ``tempfile``'s directory when it creates it:
    offline, that is the staging folder, so that it outlives a delivery that dies."""
    if folder is None:
        yield
        return
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def _is_placeholder(archive: Path) -> bool:
    try:
        with zipfile.ZipFile(archive) as opened:
            return "experiment.json" not in opened.namelist()
    except zipfile.BadZipFile:
        return True


def _archive_orphan(folder: Path, offline_dir: Path, key: str, settings: Settings, tags: list[str]) -> None:
    """Archive what a dead session of this experiment left in its staging folder, as comet_ml's
    own end() would have, so that the records it acknowledged reach Comet."""
    from comet_ml.offline_utils import create_experiment_archive, write_experiment_meta_file

    messages = folder / "messages.json"
    if not folder.is_dir() or not messages.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        return
    # The writer may have died in the middle of a line: keep the complete ones.
    data = messages.read_bytes()
    messages.write_bytes(data[: data.rfind(b"\n") + 1])
    started = round(folder.stat().st_ctime * 1000)
    write_experiment_meta_file(
        # comet_ml writes a missing workspace as null itself (its annotation says str).
        tempdir=str(folder), experiment_key=key, workspace=cast(str, settings.workspace),
        project_name=settings.project, start_time=started,
        stop_time=round(messages.stat().st_mtime * 1000), tags=tags, resume_strategy="get_or_create",
    )
    create_experiment_archive(offline_directory=str(offline_dir),
                              offline_archive_file_name=f"{key}-{uuid.uuid4().hex[:16]}.zip",
                              data_dir=str(folder), logger=logging.getLogger(__name__))
    shutil.rmtree(folder, ignore_errors=True)
