"""loggerhub backend for Neptune (the ``neptune`` 1.x client), offline first.

Importing this module is cheap: the Neptune client is imported when a delivery opens a run
(``loggerhub_run_start`` / ``loggerhub_run_resume``) or when ``loggerhub backends`` asks for the
client's version. See README.md for options, layout and limits.
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
    Rejected,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
    hookimpl,
)

if TYPE_CHECKING:
    from loggerhub_neptune._session import Session

__version__ = "0.1.0"
__all__ = ["NeptuneBackend"]


class NeptuneBackend:
    """The ``neptune`` loggerhub plugin: one instance per delivery process."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._refusal: str | None = None

    @hookimpl
    def loggerhub_client_version(self) -> str:
        from loggerhub_neptune._session import client_version

        return client_version()

    @hookimpl
    def loggerhub_run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._open(run, state, resume=False)

    @hookimpl
    def loggerhub_run_resume(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._open(run, state, resume=True)

    @hookimpl
    def loggerhub_run_end(self, run: RunInfo, status: Status) -> None:
        if self._session is not None:
            self._session.end(status)
            self._session = None

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
        self._live().checkpoint_saved(checkpoint)

    @hookimpl
    def loggerhub_log_text(self, text: TextRecord) -> None:
        self._live().log_text(text)

    @hookimpl
    def loggerhub_log_table(self, table: TableRecord) -> None:
        self._live().log_table(table)

    def _open(self, run: RunInfo, state: dict[str, Any], *, resume: bool) -> None:
        from loggerhub_neptune._session import Session

        # A retried start (the first attempt failed after the client created the run) reuses it.
        if self._session is None or self._session.info.run_id != run.run_id or not self._session.is_open:
            self._session = Session(run)
        self._refusal = None
        try:
            self._session.connect(state, resume=resume)
        except Rejected as error:
            # Options that can never work: the run opens as nothing, and every record it brings is
            # rejected with the reason, so that the worker still sees the run end.
            self._session, self._refusal = None, str(error)

    def _live(self) -> Session:
        if self._refusal is not None:
            raise Rejected(self._refusal)
        if self._session is None:
            raise RuntimeError("neptune: no open run; loggerhub calls run_start or run_resume first")
        return self._session
