"""The plugin kit: a typed base class for tracker backends, optional for plugin authors.

A backend built on the kit is two classes:

* a :class:`TrackerPlugin` subclass, the light entry-point object. It names its session class by
  import path, so that the tracker SDK is imported only in the delivery process (and by
  ``loggerhub backends``, which asks for the client's version);
* a :class:`TrackerSession` subclass, one open tracker run. It overrides the record methods its
  tracker can hold; every other kind of record raises :class:`~loggerhub_hookspecs.Unsupported`,
  which the delivery worker counts as skipped for that tracker and shows in the run summary,
  ``loggerhub show`` and ``loggerhub backends``. Nothing is silently counted as delivered.

The kit implements every hook once, with the contract's full signatures, and owns the session
lifecycle, in one way for every backend:

* a record before ``run_start`` or ``run_resume`` is a bug in the caller and raises;
* a ``run_start`` retried after a failure gets the ``state`` the failed attempt filled, and its
  session is opened with ``resumed=True`` when that state is not empty, so that it attaches to the
  tracker run the failed attempt created instead of creating a second one;
* a ``run_end`` that finds no open session (the first attempt failed inside ``end`` and the
  session was released) re-attaches with the state it last saw, and ends that tracker run.

Because the session's methods are typed, mypy reports an override that drops an argument
(``end(self, status)`` without ``ended_at`` and ``error``, say) as incompatible with this class.

Example (the whole entry-point module of a backend)::

    class MyBackend(TrackerPlugin):
        session_path = "loggerhub_mine._session:MySession"
        client_distribution = "mine-client"

and in ``loggerhub_mine/_session.py``, which may import the SDK at the top::

    class MySession(TrackerSession):
        def __init__(self, run, state, *, resumed):
            super().__init__(run, state, resumed=resumed)
            self.client = mine.Client(run.options.get("url"))
            if resumed:
                self.client.attach(state["run_id"])
            else:
                state["run_id"] = self.client.create_run(run.project, run.name).id

        def log_metrics(self, points):
            self.client.log_many([(p.key, p.value, p.step, p.timestamp) for p in points])

        def end(self, status, ended_at, error):
            self.client.close(status.value, end_time=ended_at)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from loggerhub_hookspecs import hookimpl
from loggerhub_hookspecs.records import (
    ArtifactRecord,
    Box,
    ConsoleRecord,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    Phase,
    RunContext,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
    Unsupported,
)

#: Record methods of :class:`TrackerSession`, by the journal's record type. Lifecycle events are
#: keyed by their phase, since each phase has its own hook; all of them reach ``on_event``.
RECORD_METHODS: Mapping[str, str] = {
    "params": "log_params",
    "metrics": "log_metrics",
    "image": "log_image",
    "figure": "log_figure",
    "artifact": "log_artifact",
    "checkpoint": "log_checkpoint",
    "text": "log_text",
    "table": "log_table",
    "system_metrics": "log_system_metrics",
    "console": "log_console",
    "context": "log_context",
    **{phase.value: "on_event" for phase in Phase},
}

#: Box colours, by class id (or, without one, by a hash of the label), so that one class has one
#: colour in every tracker. From Sasha Trubetskoy's list of distinct colours, yellow left out
#: (white captions do not read on it).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)


class TrackerSession:
    """One tracker run, opened (``resumed=False``) or re-attached (``resumed=True``).

    :param run: the run being delivered.
    :param state: what the session stores to find its tracker run again (an id, a key); loggerhub
        persists it beside the journal, so no secrets. On a resume it holds what an earlier
        session stored; a session started again after a failed start may find it filled too, and
        is then opened with ``resumed=True``, to attach rather than create a second run.
    :param resumed: attach to the tracker run ``state`` names instead of creating one.
    """

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        self.run = run
        self.state = state
        self.resumed = resumed

    # -- records: override the ones the tracker can hold ----------------------------------------
    #
    # Each method has delivered its record when it returns. Raise Rejected for a record the
    # tracker can never take, any other exception for a transient failure (the same call comes
    # again), and leave a kind the tracker has no place for to these defaults.

    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        raise Unsupported("params")

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        raise Unsupported("metrics")

    def log_image(self, image: ImageRecord) -> None:
        raise Unsupported("image")

    def log_figure(self, figure: FigureRecord) -> None:
        raise Unsupported("figure")

    def log_artifact(self, artifact: ArtifactRecord) -> None:
        raise Unsupported("artifact")

    def log_checkpoint(self, checkpoint: ArtifactRecord) -> None:
        raise Unsupported("checkpoint")

    def log_text(self, text: TextRecord) -> None:
        raise Unsupported("text")

    def log_table(self, table: TableRecord) -> None:
        raise Unsupported("table")

    def log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        """A system metrics sample. Without an override it is delivered as ordinary metrics."""
        self.log_metrics(points)

    def log_console(self, output: ConsoleRecord) -> None:
        raise Unsupported("console")

    def log_context(self, context: RunContext) -> None:
        raise Unsupported("context")

    def on_event(self, event: LifecycleEvent) -> None:
        """A trainer lifecycle boundary (``event.phase``): an epoch ended, validation ended, ...

        Override it where the tracker has a place for boundaries (an epoch counter, an epoch
        metric, a phase marker). Like any other kind, a boundary the tracker does not take is
        counted as skipped, by phase.
        """
        raise Unsupported(event.phase.value)

    # -- lifecycle ------------------------------------------------------------------------------

    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        """Close the tracker run with its status, the journal's end time, and the failure.

        :param ended_at: when the run ended, from the journal; not the delivery time.
        :param error: why the run FAILED or was KILLED, when known; store it where the tracker
            has a place for it.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the client without ending the tracker run (before a re-open)."""

    @classmethod
    def supported_records(cls) -> frozenset[str]:
        """The record kinds this session stores: those whose method it overrides (system
        metrics also when it takes ordinary metrics, where they go by default)."""
        def overrides(method: str) -> bool:
            return getattr(cls, method) is not getattr(TrackerSession, method)

        kinds = {kind for kind, method in RECORD_METHODS.items() if overrides(method)}
        if overrides("log_metrics"):
            kinds.add("system_metrics")
        return frozenset(kinds)


class TrackerPlugin:
    """The entry-point object of a backend built on the kit. Subclass it and set ``session_path``."""

    #: ``"package.module:SessionClass"``, imported in the delivery process only.
    session_path: ClassVar[str]
    #: The tracker client's distribution, whose version ``loggerhub backends`` shows.
    client_distribution: ClassVar[str | None] = None

    def __init__(self) -> None:
        self._session: TrackerSession | None = None
        self._state: dict[str, Any] | None = None

    def client_version(self) -> str | None:
        """Import the session module (and so the tracker's client) and return the client's version.

        Raises ``ImportError`` when the client is missing. Override it when the version is not
        the metadata of one distribution.
        """
        self.session_class()
        if self.client_distribution is None:
            return None
        return importlib.metadata.version(self.client_distribution)

    @classmethod
    def session_class(cls) -> type[TrackerSession]:
        module, _, name = cls.session_path.partition(":")
        session_class: type[TrackerSession] = getattr(importlib.import_module(module), name)
        return session_class

    @property
    def session(self) -> TrackerSession:
        if self._session is None:
            # The delivery worker always starts or resumes first; reaching this is a bug in the
            # caller, so it is loud (and, being no Rejected, keeps the record for a retry).
            raise RuntimeError(f"{type(self).__name__}: a record arrived before run_start or run_resume")
        return self._session

    def _open(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        self._release()
        self._state = state
        self._session = self.session_class()(run, state, resumed=resumed)

    def _release(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    # -- the hooks, implemented once --------------------------------------------------------------

    @hookimpl
    def loggerhub_client_version(self) -> str | None:
        return self.client_version()

    @hookimpl
    def loggerhub_run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        # A start retried after a failure finds what the failed attempt stored, and attaches.
        self._open(run, state, resumed=bool(state))

    @hookimpl
    def loggerhub_run_resume(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._open(run, state, resumed=True)

    @hookimpl
    def loggerhub_run_end(self, run: RunInfo, status: Status, ended_at: float, error: RunError | None) -> None:
        if self._session is None:
            if self._state is None:
                raise RuntimeError(f"{type(self).__name__}: run_end arrived before run_start or run_resume")
            # An earlier attempt failed inside end() and released its session: end it again.
            self._open(run, self._state, resumed=True)
        session = self.session
        try:
            session.end(status, ended_at, error)
        except BaseException:
            # The client may be half closed; the retry re-attaches with a fresh session.
            self._session = None
            with contextlib.suppress(Exception):
                session.close()
            raise
        self._session = None

    @hookimpl
    def loggerhub_log_params(self, params: Mapping[str, ParamValue]) -> None:
        self.session.log_params(params)

    @hookimpl
    def loggerhub_log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self.session.log_metrics(points)

    @hookimpl
    def loggerhub_log_image(self, image: ImageRecord) -> None:
        self.session.log_image(image)

    @hookimpl
    def loggerhub_log_figure(self, figure: FigureRecord) -> None:
        self.session.log_figure(figure)

    @hookimpl
    def loggerhub_log_artifact(self, artifact: ArtifactRecord) -> None:
        self.session.log_artifact(artifact)

    @hookimpl
    def loggerhub_checkpoint_saved(self, checkpoint: ArtifactRecord) -> None:
        self.session.log_checkpoint(checkpoint)

    @hookimpl
    def loggerhub_log_text(self, text: TextRecord) -> None:
        self.session.log_text(text)

    @hookimpl
    def loggerhub_log_table(self, table: TableRecord) -> None:
        self.session.log_table(table)

    @hookimpl
    def loggerhub_log_system_metrics(self, points: Sequence[MetricPoint]) -> None:
        self.session.log_system_metrics(points)

    @hookimpl
    def loggerhub_log_console(self, output: ConsoleRecord) -> None:
        self.session.log_console(output)

    @hookimpl
    def loggerhub_log_context(self, context: RunContext) -> None:
        self.session.log_context(context)

    @hookimpl
    def loggerhub_train_start(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)

    @hookimpl
    def loggerhub_train_end(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)

    @hookimpl
    def loggerhub_epoch_start(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)

    @hookimpl
    def loggerhub_epoch_end(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)

    @hookimpl
    def loggerhub_step_start(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)

    @hookimpl
    def loggerhub_step_end(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)

    @hookimpl
    def loggerhub_validation_end(self, event: LifecycleEvent) -> None:
        self.session.on_event(event)


# --------------------------------------------------------------------------- boxes


def box_color(box: Box) -> tuple[int, int, int]:
    """The box's colour: by class id, else by its label, so a class looks the same everywhere."""
    key = box.class_id if box.class_id is not None else zlib.crc32((box.label or "").encode("utf-8"))
    return PALETTE[key % len(PALETTE)]


def box_dict(box: Box) -> dict[str, Any]:
    """The box as JSON-ready data, for trackers that keep annotations beside a drawn image."""
    score = None if box.score is None or not math.isfinite(box.score) else box.score
    return {"x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1, "label": box.label,
            "score": score, "class_id": box.class_id}


def box_caption(box: Box) -> str:
    """``"label 0.87"``, ``"label"``, ``"0.87"`` or ``""``."""
    score = None if box.score is None else f"{box.score:.2f}"
    return " ".join(part for part in (box.label, score) if part)


def draw_boxes(png: bytes, boxes: Sequence[Box]) -> tuple[bytes, int, int]:
    """The image with its boxes drawn on it, as ``(png, width, height)``.

    For trackers without native box annotations. Each box is outlined in :func:`box_color`, with
    its :func:`box_caption` on a filled tab above it (inside the image at the top edge), so a
    detection looks the same in every tracker. Needs Pillow; raises ``OSError`` for bytes Pillow
    cannot read, which no retry changes (a backend raises ``Rejected`` for it).
    """
    import io

    from PIL import Image, ImageDraw, ImageFont

    with Image.open(io.BytesIO(png)) as source:
        image = source.convert("RGBA" if "A" in source.getbands() else "RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    line = max(1, round(min(image.size) / 150))
    for box in boxes:
        x0, x1 = sorted((box.x0, box.x1))
        y0, y1 = sorted((box.y0, box.y1))
        color = box_color(box)
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
        caption = box_caption(box)
        if caption:
            left, top, right, bottom = draw.textbbox((x0, y0), caption, font=font)
            lift = bottom - top + 2
            y = y0 - lift if y0 >= lift else y0
            draw.rectangle((x0, y, x0 + right - left + 2, y + lift), fill=color)
            draw.text((x0 + 1, y), caption, fill=(255, 255, 255), font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue(), image.width, image.height


__all__ = [
    "PALETTE",
    "RECORD_METHODS",
    "TrackerPlugin",
    "TrackerSession",
    "box_caption",
    "box_color",
    "box_dict",
    "draw_boxes",
]
