"""loggerhub backend for Comet (comet_ml): online experiments, or offline archives to upload later.

Importing this module is light: comet_ml is imported by the first hook that needs it, in the
delivery process, never in the training process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loggerhub_comet._session import CometSession, import_comet
from loggerhub_hookspecs import (
    ArtifactRecord,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
    hookimpl,
)

__all__ = ["CometBackend"]
__version__ = "0.1.0"


class CometBackend:
    """The ``comet`` loggerhub plugin: one Comet experiment per loggerhub run."""

    def __init__(self) -> None:
        self._session: CometSession | None = None
        self._run_id: str | None = None

    @hookimpl
    def loggerhub_client_version(self) -> str:
        return str(import_comet().__version__)

    # -- run lifecycle -------------------------------------------------------------------------

    @hookimpl
    def loggerhub_run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._attach(run, state, resume=False)

    @hookimpl
    def loggerhub_run_resume(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._attach(run, state, resume=True)

    @hookimpl
    def loggerhub_run_end(self, run: RunInfo, status: Status) -> None:
        if self._session is None:
            raise RuntimeError("comet: run_end before the run was started or resumed")
        self._session.end(status)
        self._session = self._run_id = None

    def _attach(self, run: RunInfo, state: dict[str, Any], *, resume: bool) -> None:
        if self._session is not None and self._session.experiment is not None and self._run_id == run.run_id:
            # The worker retries a failed call, and run_start is retried together with the
            # config params that follow it: keep the experiment that is already open.
            state.update(self._session.state)
            return
        self._session = CometSession.open(run, state, resume=resume)
        self._run_id = run.run_id

    def _live(self) -> CometSession:
        # A method, not a property: older pluggy versions getattr() every attribute on register.
        if self._session is None:
            raise RuntimeError("comet: a record arrived before the run was started or resumed")
        return self._session

    # -- lifecycle -----------------------------------------------------------------------------

    @hookimpl
    def loggerhub_epoch_end(self, event: LifecycleEvent) -> None:
        self._live().epoch_end(event)

    # -- data ----------------------------------------------------------------------------------

    @hookimpl
    def loggerhub_log_params(self, params: Mapping[str, ParamValue]) -> None:
        self._live().log_params(params)

    @hookimpl
    def loggerhub_log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self._live().log_metrics(points)

    @hookimpl
    def loggerhub_log_image(self, image: ImageRecord) -> None:
        self._live().log_image(image)

    @hookimpl
    def loggerhub_log_figure(self, figure: FigureRecord) -> None:
        self._live().log_figure(figure)

    @hookimpl
    def loggerhub_log_artifact(self, artifact: ArtifactRecord) -> None:
        self._live().log_artifact(artifact)

    @hookimpl
    def loggerhub_checkpoint_saved(self, checkpoint: ArtifactRecord) -> None:
        self._live().log_artifact(checkpoint, checkpoint=True)

    @hookimpl
    def loggerhub_log_text(self, text: TextRecord) -> None:
        self._live().log_text(text)

    @hookimpl
    def loggerhub_log_table(self, table: TableRecord) -> None:
        self._live().log_table(table)
