"""loggerhub's TensorBoard backend: writes event files with tensorboard's own writer.

Light on purpose: ``tensorboard`` is imported when a delivery worker starts the run, not here.
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
    from loggerhub_tensorboard._session import Session

__all__ = ["TensorBoardBackend"]
__version__ = "0.1.0"


class TensorBoardBackend:
    """The ``tensorboard`` backend. One instance delivers one run."""

    def __init__(self) -> None:
        self._session: Session | None = None

    @hookimpl
    def loggerhub_client_version(self) -> str | None:
        from tensorboard.version import VERSION

        return str(VERSION)

    @hookimpl
    def loggerhub_run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        from loggerhub_tensorboard._session import Session, parse_options

        self._close()
        self._session = Session(run, parse_options(run), resumed=False)
        state["logdir"] = str(self._session.logdir)

    @hookimpl
    def loggerhub_run_resume(self, run: RunInfo, state: dict[str, Any]) -> None:
        from pathlib import Path

        from loggerhub_tensorboard._session import Session, parse_options

        options = parse_options(run)
        if state.get("logdir"):
            # The logdir the run started in, even if a relative option now resolves elsewhere.
            options = type(options)(Path(state["logdir"]), options.flush_secs, options.hparams_experiment)
        self._close()
        self._session = Session(run, options, resumed=True)
        state["logdir"] = str(self._session.logdir)

    @hookimpl
    def loggerhub_run_end(self, run: RunInfo, status: Status) -> None:
        self._current().end(status)
        self._session = None

    @hookimpl
    def loggerhub_log_params(self, params: Mapping[str, ParamValue]) -> None:
        self._current().log_params(params)

    @hookimpl
    def loggerhub_log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self._current().log_metrics(points)

    @hookimpl
    def loggerhub_log_image(self, image: ImageRecord) -> None:
        self._current().log_image(image)

    @hookimpl
    def loggerhub_log_figure(self, figure: FigureRecord) -> None:
        self._current().log_figure(figure)

    @hookimpl
    def loggerhub_log_artifact(self, artifact: ArtifactRecord) -> None:
        self._current().log_artifact(artifact, "artifacts")

    @hookimpl
    def loggerhub_checkpoint_saved(self, checkpoint: ArtifactRecord) -> None:
        self._current().log_artifact(checkpoint, "checkpoints")

    @hookimpl
    def loggerhub_log_text(self, text: TextRecord) -> None:
        self._current().log_text(text)

    @hookimpl
    def loggerhub_log_table(self, table: TableRecord) -> None:
        self._current().log_table(table)

    def _current(self) -> Session:
        if self._session is None:
            raise RuntimeError("loggerhub-tensorboard: a record arrived before run_start or run_resume")
        return self._session

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
