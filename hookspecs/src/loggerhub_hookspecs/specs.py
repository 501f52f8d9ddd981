"""Hook specifications for loggerhub tracker plugins.

A tracker plugin is a class, named by an entry point in the ``loggerhub`` group. loggerhub
instantiates it once per run and delivery, registers the instance with a pluggy
``PluginManager``, and calls its hooks from that tracker's own delivery worker, never from the
training loop and never together with another tracker's hooks. Records arrive in journal order.

Calling rules shared by every hook below:

* A hook that returns normally has delivered its record: the worker commits the journal offset.
* A hook that raises :class:`~loggerhub_hookspecs.records.Rejected` refuses the record for good;
  the worker files it beside the journal and goes on.
* A hook that raises :class:`~loggerhub_hookspecs.records.Unsupported`, or that the plugin does
  not implement, skips the record: the tracker has no place for that kind. The worker counts it,
  by kind, as skipped for that tracker (shown in the run summary, ``loggerhub show`` and, per
  backend, ``loggerhub backends``) and goes on; it is never counted as delivered.
* Any other exception is transient: the worker retries the same call with backoff. A hook must
  therefore tolerate being called again with the same record, and a record delivered just before
  a crash (after the hook returned, before the offset was committed) is delivered again.

The optional plugin kit, ``loggerhub_hookspecs.kit``, implements every hook once on top of a
typed session class and applies these rules for you.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from loggerhub_hookspecs.records import (
    ArtifactRecord,
    ConsoleRecord,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    RunContext,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
)

hookspec = pluggy.HookspecMarker("loggerhub")

# -------------------------------------------------------------------------
# Plugin description
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def loggerhub_client_version() -> str | None:
    """Import the tracker's client library and return its version.

    Called by ``loggerhub backends`` to report whether a backend can run. This is the one hook that
    may import the tracker SDK outside a delivery; it raises ``ImportError`` when the client is
    missing.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------
# Run lifecycle
# -------------------------------------------------------------------------


@hookspec
def loggerhub_run_start(run: RunInfo, state: dict[str, Any]) -> None:
    """Create the run in the tracker.

    :param run: the run being delivered.
    :param state: an empty dict the plugin fills with what it needs to find its tracker run again
        (an experiment key, a run id). loggerhub persists it beside the journal, with no secrets
        in it, and passes it to :func:`loggerhub_run_resume` when delivery restarts.

    Called once per run and tracker, before any other hook of that run.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_run_resume(run: RunInfo, state: dict[str, Any]) -> None:
    """Attach to the tracker run created earlier by :func:`loggerhub_run_start`.

    :param run: the run being delivered.
    :param state: the dict the plugin filled in ``loggerhub_run_start``; it may update it.

    Called instead of ``loggerhub_run_start`` whenever a delivery worker starts on a run the tracker
    has already seen: after ``loggerhub.init(resume=...)``, and after a crash or an outage when
    ``loggerhub sync`` finishes the delivery.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_run_end(run: RunInfo, status: Status, ended_at: float, error: RunError | None) -> None:
    """Close the tracker run with its final status.

    :param run: the run being delivered.
    :param status: FINISHED, FAILED or KILLED.
    :param ended_at: wall time the run ended, seconds since the epoch (not the delivery time:
        ``loggerhub sync`` may deliver it much later). A tracker that stores an end time stores
        this one.
    :param error: why the run FAILED or was KILLED, when loggerhub knows: the exception type, its
        redacted message and a short traceback. A tracker with a place for it (a tag, a field, a
        text) stores it there.

    Called once, after every other record of the run was delivered; the plugin flushes and closes
    its client here. A resumed run may start again afterwards.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``error``.
    """


# -------------------------------------------------------------------------
# Trainer lifecycle
# -------------------------------------------------------------------------


@hookspec
def loggerhub_train_start(event: LifecycleEvent) -> None:
    """Training begins.

    :param event: the boundary, with the step training starts at.

    Called at most once per training, in journal order with the data hooks.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_train_end(event: LifecycleEvent) -> None:
    """Training ends, whatever the outcome; the run may still log final results after it.

    :param event: the boundary, with the last step.

    Called at most once per training, after the last epoch's records.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_epoch_start(event: LifecycleEvent) -> None:
    """An epoch begins.

    :param event: the boundary; ``event.epoch`` is the epoch number as the trainer counts it.

    Called once per epoch, before the epoch's records.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_epoch_end(event: LifecycleEvent) -> None:
    """An epoch ends; its metrics were delivered before this call.

    :param event: the boundary; ``event.epoch`` is the epoch that ended.

    Called once per epoch, after every record the epoch logged.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_step_start(event: LifecycleEvent) -> None:
    """An optimisation step begins.

    :param event: the boundary, with the step about to run.

    Only trainers that report step boundaries call it; a tracker rarely needs it.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_step_end(event: LifecycleEvent) -> None:
    """An optimisation step ends.

    :param event: the boundary, with the step that ran.

    Called after the step's metrics; only trainers that report step boundaries call it.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_validation_end(event: LifecycleEvent) -> None:
    """A validation pass ends; its metrics were delivered before this call.

    :param event: the boundary, with the step validated at.

    Called once per validation pass, after its metrics and images.

    A lifecycle boundary is a record like any other: a tracker with no place for it does not
    implement this hook (the record is counted as skipped); the kit routes every boundary to
    ``TrackerSession.on_event``.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_checkpoint_saved(checkpoint: ArtifactRecord) -> None:
    """A checkpoint was saved; upload it the way the tracker stores models.

    :param checkpoint: the checkpoint file, copied into the run directory when it was saved.

    A checkpoint reaches this hook only, never also :func:`loggerhub_log_artifact`.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------


@hookspec
def loggerhub_log_params(params: Mapping[str, ParamValue]) -> None:
    """Record run parameters.

    :param params: flat ``/``-grouped keys with normalised values; secrets already redacted.

    Called for the run's ``config`` right after ``loggerhub_run_start``, and for every
    ``log_params`` call. A later value for the same key replaces the earlier one.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_log_metrics(points: Sequence[MetricPoint]) -> None:
    """Record a batch of scalar points.

    :param points: one or more points, over any number of keys, in the order they were logged.

    The worker batches consecutive points into one call, so that a plugin can use its tracker's
    bulk API. NaN and infinite values arrive as they were logged; a plugin whose tracker cannot
    hold them documents what it does with them.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_log_image(image: ImageRecord) -> None:
    """Record an image, with its bounding boxes when it has any.

    :param image: a PNG in the run directory and its boxes in pixel coordinates.

    Called once per logged image. A tracker without box annotations draws the boxes onto the
    image and keeps their data beside it, as its README documents.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_log_figure(figure: FigureRecord) -> None:
    """Record a plot.

    :param figure: the plot rendered to PNG, and the source figure when there is one.

    Called once per logged plot; the PNG is always there, the source figure only for plots logged
    live from matplotlib.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_log_artifact(artifact: ArtifactRecord) -> None:
    """Upload a file or a directory.

    :param artifact: the copy in the run directory, with its kind (model, dataset or file).

    Called once per logged artifact; the copy stays in place, so the plugin may upload it lazily
    but must have finished with it when the hook returns.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_log_text(text: TextRecord) -> None:
    """Record a piece of text.

    :param text: the text under its key.

    Called once per logged text; several texts may share a key at different steps.

    .. versionadded:: 0.1
    """


@hookspec
def loggerhub_log_table(table: TableRecord) -> None:
    """Record a table, such as a confusion matrix.

    :param table: the header and rows; ``table.role`` says when it is a confusion matrix.

    Called once per logged table. A tracker with a native confusion-matrix view uses it for
    tables whose role is ``CONFUSION_MATRIX``.

    .. versionadded:: 0.1
    """


# -------------------------------------------------------------------------
# Run context and telemetry
# -------------------------------------------------------------------------


@hookspec
def loggerhub_log_system_metrics(points: Sequence[MetricPoint]) -> None:
    """Record a sample of system metrics: CPU, memory, disk, network and GPUs.

    :param points: one sample, every key under ``system/`` (see
        :mod:`loggerhub_hookspecs.telemetry` for the names); ``timestamp`` is the sample's wall
        time, the axis these series are meant for, and ``step`` the training step at that time.

    Called every sampling interval (10 s by default) while the run is live. Place the series where
    the tracker keeps its own system metrics, under its own names; a tracker whose series need a
    step can use :func:`~loggerhub_hookspecs.telemetry.seconds_since_start`. The kit's default
    delivers the points as ordinary metrics.

    Example::

        from loggerhub_hookspecs.telemetry import parse_system_key

        @hookimpl
        def loggerhub_log_system_metrics(self, points):
            for point in points:
                parsed = parse_system_key(point.key)
                ...

    .. versionadded:: 0.3
    """


@hookspec
def loggerhub_log_console(output: ConsoleRecord) -> None:
    """Record lines the training process printed to its stdout or stderr.

    :param output: complete lines of one stream, in order, secrets redacted.

    Called for each batch of lines the console tee journaled (at most about one per second per
    stream). Append them where the tracker keeps a run's console output, per stream when it can.

    .. versionadded:: 0.3
    """


@hookspec
def loggerhub_log_context(context: RunContext) -> None:
    """Record the code and environment that produced the run.

    :param context: the command line, Python, host, installed packages, allow-listed environment
        variables and the git state, with the uncommitted diff as a patch file.

    Called once, right after ``loggerhub_run_start`` (and again on a redelivery). Put each field
    where the tracker shows it: a git commit tag, a requirements artifact, a host field.

    .. versionadded:: 0.3
    """
