"""The heavy half of the Comet backend: one Comet experiment per loggerhub run.

comet_ml is imported only by :func:`import_comet`, after the environment switches that must be in
place before its import (it installs import hooks that patch other frameworks, MLflow included,
and may start an error reporter).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from loggerhub_comet.keys import NameTooLong, metric_name, to_tracker
from loggerhub_hookspecs import (
    ArtifactKind,
    ArtifactRecord,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    Rejected,
    RunInfo,
    Status,
    TableRecord,
    TableRole,
    TextRecord,
)

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
#: The Other-tab entry that holds the run status.
STATUS_OTHER = "status"


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
            # comet_ml's own lookup: COMET_API_KEY or the api_key of ~/.comet.config.
            online = comet.get_api_key(None, comet.get_config()) is not None
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


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"comet option {name!r} must be a boolean, got {value!r}")


class CometSession:
    """One open Comet experiment and the calls that log loggerhub records into it."""

    def __init__(self, comet: Any, experiment: Any, state: dict[str, Any]) -> None:
        self._comet = comet
        self.experiment = experiment
        self.state = state

    # -- opening and closing -------------------------------------------------------------------

    @classmethod
    def open(cls, run: RunInfo, state: dict[str, Any], *, resume: bool) -> CometSession:
        """Create (``resume=False``) or re-attach to the run's experiment and fill ``state``."""
        comet = import_comet()
        settings = Settings.resolve(run, comet)
        known = resume and bool(state.get("experiment_key"))
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
        if not online:
            offline_dir.mkdir(parents=True, exist_ok=True)
        experiment = comet.start(
            project_name=settings.project,
            workspace=settings.workspace,
            experiment_key=key,
            mode=mode,
            online=online,
            experiment_config=comet.ExperimentConfig(
                **QUIET_EXPERIMENT, offline_directory=str(offline_dir), name=run.name,
                tags=[f"{k}:{v}" if v else k for k, v in run.tags.items()] or None,
            ),
        )
        state.update(experiment_key=experiment.get_key(), online=online, project=settings.project,
                     workspace=settings.workspace, offline_dir=None if online else str(offline_dir))
        experiment.log_others({"loggerhub_run_id": run.run_id, STATUS_OTHER: "RUNNING"})
        return cls(comet, experiment, state)

    def end(self, status: Status) -> None:
        """Record the status and close the experiment (writes the offline archive)."""
        if self.experiment is not None:
            self.experiment.log_other(STATUS_OTHER, status.value)
            self.experiment.end()
            self.experiment = None
        if self.state.get("online") and status is not Status.FINISHED:
            # Online, Comet has a native state; the SDK's end() always leaves it "finished".
            self._comet.APIExperiment(previous_experiment=self.state["experiment_key"]).set_state("crashed")

    # -- data ----------------------------------------------------------------------------------

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

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        refused: dict[str, str] = {}
        experiment = self.experiment
        for point in points:
            try:
                name = metric_name(point.key)
            except NameTooLong as error:
                refused[point.key] = str(error)
                continue
            self._epoch(point.epoch)
            # comet_ml sends NaN and +/-inf as "NaN", "Infinity", "-Infinity"; they are kept.
            experiment.log_metric(name, point.value, step=point.step, epoch=point.epoch)
        if refused:
            raise Rejected(f"{len(refused)} metric keys refused, the other points were logged: "
                           + "; ".join(refused.values()))

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

    def log_figure(self, figure: FigureRecord) -> None:
        # The PNG rendered at log time goes to the same Graphics view log_figure would use, without
        # unpickling a matplotlib figure in the delivery process.
        metadata: dict[str, Any] = {"loggerhub": "figure", "key": to_tracker(figure.key)}
        if figure.epoch is not None:
            metadata["epoch"] = figure.epoch
        self._check(self.experiment.log_image(
            str(figure.path), name=to_tracker(figure.key), step=figure.step, metadata=metadata),
            f"figure {figure.key}")

    def log_artifact(self, artifact: ArtifactRecord, *, checkpoint: bool = False) -> None:
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

    def log_text(self, text: TextRecord) -> None:
        self._epoch(None)
        self._check(self.experiment.log_text(
            text.text, step=text.step, metadata={"loggerhub": "text", "key": to_tracker(text.key)}),
            f"text {text.key}")

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

    def epoch_end(self, event: LifecycleEvent) -> None:
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
