"""Run context and system telemetry, captured off the training loop's path.

:func:`start` is called by ``loggerhub.init`` and :meth:`Telemetry.stop` by ``Run.finish`` (also on
the exit and SIGTERM paths, which end in ``finish``). Three parts, each with its switch
(``Settings``: ``capture_context``, ``system_metrics`` and ``system_metrics_interval``, ``console``;
or ``LOGGERHUB_<NAME>``):

* the ``context`` record, captured in ``init`` right after ``run_start`` (not on resume):
  :mod:`loggerhub.telemetry.context`;
* ``system_metrics`` records from :class:`~loggerhub.telemetry.system.SystemSampler`, every
  ``system_metrics_interval`` seconds and once more at the end;
* ``console`` records from :mod:`loggerhub.telemetry.console`'s tee of fds 1 and 2.

One background thread (``loggerhub-telemetry``) takes the samples and moves the console's batches
into the journal; the console's reader thread only reads and writes through. Neither takes a lock
the training loop takes: records go in with the journal's ``put`` (a ``deque.append``), and the
current step is read as a plain attribute.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from loggerhub import codec
from loggerhub.telemetry import console as console_tee

if TYPE_CHECKING:
    from loggerhub.config import Settings
    from loggerhub.run import Run

__all__ = ["Telemetry", "start"]


class Telemetry:
    """The running telemetry of one run."""

    def __init__(self, run: Run, *, system_metrics: bool, interval: float, console: bool) -> None:
        self._run = run
        self._interval = interval
        self._batches: deque[console_tee.Batch] = deque()
        #: Console lines not journaled because the journal did not keep up (see console.MAX_WAITING)
        #: or refused them; ``finish`` reports them in run.json.
        self.dropped_lines = 0
        self._wake = threading.Event()
        self._stopping = False
        #: Seconds spent in each sample (the last ones), for the benchmark and ``show``.
        self.sample_seconds: deque[float] = deque(maxlen=100)
        self._sampler: Any = None
        if system_metrics:
            from loggerhub.telemetry.system import SystemSampler

            try:
                self._sampler = SystemSampler(run.dir, exclude=self._worker_pids)
            except Exception as error:  # noqa: BLE001 - telemetry never fails the run
                _warn(run._redactor.text(f"system metrics are off: {type(error).__name__}: {error}"))
        self._tee = console_tee.start(self._step, self._hand_over) if console else None
        self._thread: threading.Thread | None = None
        if self._sampler is not None or self._tee is not None:
            self._thread = threading.Thread(target=self._loop, name="loggerhub-telemetry", daemon=True)
            self._thread.start()

    # Read without a lock: a plain attribute of the run; a sample may carry a step that is one behind.
    def _step(self) -> int:
        return max(self._run._step, 0)

    def _worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in self._run._workers]

    def _put(self, item: tuple[str, float, Any]) -> None:
        # The run's current put: the journal's deque.append, or its back-pressure variant.
        self._run._put(item)

    def _hand_over(self, batch: console_tee.Batch) -> None:
        """From the console's reader thread: never blocks, never touches the journal."""
        if len(self._batches) >= console_tee.MAX_WAITING:
            self.dropped_lines += len(batch[3])
            return
        self._batches.append(batch)
        self._wake.set()

    def _loop(self) -> None:
        next_sample = time.monotonic() + self._interval
        while not self._stopping:
            timeout = max(0.0, next_sample - time.monotonic()) if self._sampler is not None else None
            self._wake.wait(timeout)
            self._wake.clear()
            self._forward()
            if self._sampler is not None and not self._stopping and time.monotonic() >= next_sample:
                self._sample()
                next_sample = max(next_sample + self._interval, time.monotonic())

    def _forward(self) -> None:
        batches = self._batches
        redactor = self._run._redactor
        while batches:
            stream, ts, step, lines = batches.popleft()
            try:
                self._put((codec.CONSOLE, ts, codec.console_fields(stream, lines, step, redactor)))
            except Exception:  # noqa: BLE001 - a finished or broken journal: the terminal has the lines
                self.dropped_lines += len(lines)

    def _sample(self) -> None:
        started = time.perf_counter()
        try:
            values = self._sampler.sample()
            ts, step = time.time(), self._step()
            self.sample_seconds.append(time.perf_counter() - started)
            self._put((codec.SYSTEM_METRICS, ts, codec.system_fields(values, step)))
        except Exception:  # noqa: BLE001, S110 - one failed sample is a gap in the series, not an error
            pass

    def stop(self, timeout: float = 2.0) -> None:
        """Take the last sample, give the console back and journal what it printed; bounded by
        ``timeout`` for each of the console's drain and the worker thread."""
        if self._tee is not None:
            self._tee.stop(timeout)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._forward()
            if self._sampler is not None:
                self._sample()  # every run has at least one sample, the end's
        if self._sampler is not None:
            with contextlib.suppress(Exception):
                self._sampler.close()


def start(run: Run, settings: Settings, *, resumed: bool) -> Telemetry | None:
    """Capture the context (a new run only) and start the sampler and the console tee, as
    ``settings`` say. Never raises: what cannot start is left out with one warning."""
    if settings.capture_context and not resumed:
        from loggerhub.telemetry.context import capture

        try:
            run._put((codec.CONTEXT, time.time(), capture(run.dir, run._redactor)))
        except Exception as error:  # noqa: BLE001 - the context is a bonus; the run goes on
            _warn(run._redactor.text(f"the run context was not captured: {type(error).__name__}: {error}"))
    if not (settings.system_metrics or settings.console):
        return None
    try:
        return Telemetry(run, system_metrics=settings.system_metrics,
                         interval=settings.system_metrics_interval, console=settings.console)
    except Exception as error:  # noqa: BLE001 - no thread to spare, say: the run goes on without
        _warn(run._redactor.text(f"system metrics and console capture are off: {type(error).__name__}: {error}"))
        return None


def _warn(message: str) -> None:
    import warnings

    warnings.warn(f"loggerhub: {message}", RuntimeWarning, stacklevel=3)
