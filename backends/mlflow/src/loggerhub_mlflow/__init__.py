"""MLflow backend for loggerhub.

Select it with ``loggerhub.init(backends=["mlflow"], options={"mlflow": {...}})``; see README.md
for the options. Importing this module is cheap: ``mlflow`` is imported by the delivery process
only, when the first hook runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loggerhub_hookspecs import (
    ArtifactRecord,
    FigureRecord,
    ImageRecord,
    MetricPoint,
    ParamValue,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
    hookimpl,
)

if TYPE_CHECKING:
    from loggerhub_mlflow._backend import MlflowRun

__all__ = ["MlflowBackend"]
__version__ = "0.1.0"


class MlflowBackend:
    """The loggerhub plugin: one instance delivers one loggerhub run to one MLflow run."""

    def __init__(self) -> None:
        self._run: MlflowRun | None = None

    @property
    def run(self) -> MlflowRun:
        if self._run is None:
            raise RuntimeError("loggerhub-mlflow: a record arrived before run_start or run_resume")
        return self._run

    @hookimpl
    def loggerhub_client_version(self) -> str | None:
        from loggerhub_mlflow._backend import client_version

        return client_version()

    @hookimpl
    def loggerhub_run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        from loggerhub_mlflow._backend import MlflowRun

        self._run = MlflowRun.start(run, state)

    @hookimpl
    def loggerhub_run_resume(self, run: RunInfo, state: dict[str, Any]) -> None:
        from loggerhub_mlflow._backend import MlflowRun

        self._run = MlflowRun.resume(run, state)

    @hookimpl
    def loggerhub_run_end(self, run: RunInfo, status: Status) -> None:
        self.run.end(status)

    @hookimpl
    def loggerhub_log_params(self, params: Mapping[str, ParamValue]) -> None:
        self.run.log_params(params)

    @hookimpl
    def loggerhub_log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self.run.log_metrics(points)

    @hookimpl
    def loggerhub_log_image(self, image: ImageRecord) -> None:
        self.run.log_image(image)

    @hookimpl
    def loggerhub_log_figure(self, figure: FigureRecord) -> None:
        self.run.log_figure(figure)

    @hookimpl
    def loggerhub_log_artifact(self, artifact: ArtifactRecord) -> None:
        self.run.log_artifact(artifact)

    @hookimpl
    def loggerhub_checkpoint_saved(self, checkpoint: ArtifactRecord) -> None:
        self.run.log_checkpoint(checkpoint)

    @hookimpl
    def loggerhub_log_text(self, text: TextRecord) -> None:
        self.run.log_text(text)

    @hookimpl
    def loggerhub_log_table(self, table: TableRecord) -> None:
        self.run.log_table(table)
