"""Delivery: one consumer per tracker reads the journal and calls that tracker's plugin.

While a run is live, each tracker's consumer runs in its own process
(``python -m loggerhub.delivery RUN_DIR --backend NAME --follow``), at lower CPU priority than the
trainer. A process per tracker keeps the trainer's GIL free of SDK imports and network code,
keeps one SDK's side effects (Comet patching MLflow, say) away from the others, and lets a hung or
crashing client fail alone. ``loggerhub sync`` runs the same :class:`Consumer` in the foreground.

A consumer commits its position in ``consumers/<name>.json`` after every batch the plugin
acknowledged, and holds ``consumers/<name>.lock`` so that two deliveries of one tracker never run
at once. Records are delivered in journal order; a restarted consumer goes on from its offset.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loggerhub import codec
from loggerhub import journal as j
from loggerhub._normalize import Redactor
from loggerhub.plugins import get_plugin_manager, resolve
from loggerhub_hookspecs import MetricPoint, Phase, Rejected, RunError, RunInfo, Status, Unsupported

#: Metric points of consecutive records delivered in one hook call (and one offset commit):
#: enough for a plugin to send several of its tracker's batches at once (MLflow's log_batch
#: takes 1,000), few enough that a retried call repeats little.
BATCH_POINTS = 10_000
POLL_SECONDS = 0.05
LIVENESS_SECONDS = 1.0


_RUN_RECORDS = frozenset({codec.RUN_START, codec.RUN_RESUME})

#: Turns a journal entry into the keyword arguments of its hook.
Decoder = Callable[[j.Entry, Path], dict[str, Any]]


def _as(argument: str) -> Decoder:
    def decode(entry: j.Entry, run_dir: Path) -> dict[str, Any]:
        return {argument: codec.decode(entry, run_dir)}

    return decode


#: Delivery dispatch: record kind -> (hook, decoder). A record's kind is its journal type, except
#: for lifecycle events, whose kind is their phase, since each phase has its own hook. The run
#: records (run_start, run_resume, run_end) are the consumer's own: they open and close the
#: tracker run rather than carry data, and are handled by :class:`Consumer` itself.
DISPATCH: Mapping[str, tuple[str, Decoder]] = {
    codec.PARAMS: ("loggerhub_log_params", _as("params")),
    codec.METRICS: ("loggerhub_log_metrics", _as("points")),
    codec.IMAGE: ("loggerhub_log_image", _as("image")),
    codec.FIGURE: ("loggerhub_log_figure", _as("figure")),
    codec.ARTIFACT: ("loggerhub_log_artifact", _as("artifact")),
    codec.CHECKPOINT: ("loggerhub_checkpoint_saved", _as("checkpoint")),
    codec.TEXT: ("loggerhub_log_text", _as("text")),
    codec.TABLE: ("loggerhub_log_table", _as("table")),
    codec.SYSTEM_METRICS: ("loggerhub_log_system_metrics", _as("points")),
    codec.CONSOLE: ("loggerhub_log_console", _as("output")),
    codec.CONTEXT: ("loggerhub_log_context", _as("context")),
    **{phase.value: (f"loggerhub_{phase.value}", _as("event")) for phase in Phase},
}


def record_kind(entry: j.Entry) -> str:
    """The entry's key in :data:`DISPATCH` (and in a consumer's ``skipped`` counts)."""
    return str(entry.data.get("phase")) if entry.type == codec.EVENT else entry.type


def supported_records(plugin: Any) -> frozenset[str]:
    """The record kinds a plugin takes (``loggerhub backends`` shows them).

    A kit plugin takes the kinds its session class overrides; this imports the session module,
    and with it the tracker's client, as ``loggerhub_client_version`` does. Any other plugin takes
    the kinds whose hook it implements.
    """
    from loggerhub_hookspecs.kit import TrackerPlugin

    if isinstance(plugin, TrackerPlugin):
        return type(plugin).session_class().supported_records()
    pm = get_plugin_manager({"plugin": plugin})
    return frozenset(kind for kind, (hook, _) in DISPATCH.items() if getattr(pm.hook, hook).get_hookimpls())


class DeliveryBusy(RuntimeError):
    """Another process is delivering this run to this tracker right now."""


class _Stopped(Exception):
    """The consumer was asked to stop, or ran out of time, in the middle of a retry."""


@dataclass
class ConsumerStatus:
    """What ``consumers/<name>.json`` holds: the delivered position and the plugin's state.

    ``skipped`` counts, by record kind, the records the tracker has no place for: the plugin does
    not implement the kind's hook, or raised ``Unsupported``. Like ``delivered``, it counts metric
    points, and records of every other kind.
    """

    offset: int = -1
    state: dict[str, Any] | None = None
    delivered: int = 0
    rejected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    last_error: str | None = None
    finished: bool = False

    @classmethod
    def load(cls, path: Path) -> ConsumerStatus:
        import json

        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def consumer_names(paths: j.RunPaths) -> list[str]:
    return sorted(p.stem for p in paths.consumers.glob("*.json"))


class Consumer:
    """Delivers one run's journal to one tracker plugin."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        backend: str,
        *,
        plugin: Any = None,
        follow: bool = False,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        progress: Callable[[int], None] | None = None,
        log: Callable[[str], None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.paths = j.RunPaths(run_dir)
        self.backend = backend
        self._plugin = plugin
        self._follow = follow
        self._stop = stop or threading.Event()
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._backoff = backoff
        self._progress = progress
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._redactor = Redactor()
        self._options = options
        self._status_path = self.paths.consumer_file(backend)
        self.status = ConsumerStatus.load(self._status_path)
        self._attached = False
        # Kept across the attempts of one run_start: a retried start sees what the failed one
        # stored, and attaches to the tracker run it may have created.
        self._start_state: dict[str, Any] = {}
        self._failing = False
        self._end_seq = -2

    # -- public -------------------------------------------------------------------------------

    def run(self) -> ConsumerStatus:
        """Deliver until caught up (or, when following, until the run ends or its logger dies)."""
        self.paths.consumers.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.paths.consumers / f"{self.backend}.lock", os.O_RDWR | os.O_CREAT)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DeliveryBusy(
                    f"another process is delivering {self.paths.root} to {self.backend}"
                ) from None
            plugin = self._plugin if self._plugin is not None else resolve([self.backend])[0].load()
            self._pm = get_plugin_manager({self.backend: plugin})
            self._commit(self.status.offset)
            try:
                self._deliver_all()
            except _Stopped:
                pass
            return self.status
        finally:
            os.close(lock_fd)

    # -- the loop -----------------------------------------------------------------------------

    def _deliver_all(self) -> None:
        reader = j.JournalReader(self.paths.root)
        next_liveness_check = 0.0
        while True:
            self._drain(reader)
            if not self._follow or self._stop.is_set():
                return
            if self.status.finished:
                return
            if self._deadline is not None and time.monotonic() > self._deadline:
                return
            if time.monotonic() >= next_liveness_check:
                if not j.run_is_live(self.paths):
                    # The logging process died without ending the run: take what it flushed.
                    self._drain(reader)
                    return
                next_liveness_check = time.monotonic() + LIVENESS_SECONDS
            self._stop.wait(POLL_SECONDS)

    def _drain(self, reader: j.JournalReader) -> None:
        points: list[MetricPoint] = []
        last_metric_seq = -1
        for entry in reader.entries(after=self.status.offset):
            if entry.type == codec.METRICS:
                points.extend(codec.metric_points(entry))
                last_metric_seq = entry.seq
                if len(points) >= BATCH_POINTS:
                    self._deliver_points(last_metric_seq, points)
                    points = []
                continue
            if points:
                self._deliver_points(last_metric_seq, points)
                points = []
            self._deliver(entry.seq, functools.partial(self._dispatch, entry), kind=record_kind(entry), count=1)
        if points:
            self._deliver_points(last_metric_seq, points)

    def _deliver_points(self, seq: int, points: list[MetricPoint]) -> None:
        call = functools.partial(self._call, codec.METRICS, {"points": points})
        self._deliver(seq, call, kind=codec.METRICS, count=len(points))

    def _dispatch(self, entry: j.Entry) -> None:
        kind = entry.type
        if kind == codec.REJECTED:
            return  # input loggerhub itself refused; it stays in the journal for the record
        if kind == codec.RUN_START:
            self._start(entry)
        elif kind == codec.RUN_RESUME:
            self._ensure_attached()
        elif kind == codec.RUN_END:
            # Even when the tracker refuses to end the run, this is the run's last record.
            self._end_seq = entry.seq
            self._ensure_attached()
            status, ended_at, error = codec.run_end(entry)
            self._pm.hook.loggerhub_run_end(run=self._run_info(), status=status, ended_at=ended_at, error=error)
            self._attached = False
        elif record_kind(entry) in DISPATCH:
            kind = record_kind(entry)
            self._call(kind, DISPATCH[kind][1](entry, self.paths.root))
        else:
            raise Rejected(f"unknown journal record type {kind!r}")

    def _call(self, kind: str, arguments: dict[str, Any]) -> None:
        """Call the hook of ``kind``; Unsupported when the plugin does not implement it."""
        hook = getattr(self._pm.hook, DISPATCH[kind][0])
        if not hook.get_hookimpls():
            raise Unsupported(f"{self.backend} does not implement {hook.name}")
        self._ensure_attached()
        hook(**arguments)

    def _start(self, entry: j.Entry) -> None:
        if self.status.state is None:
            self._pm.hook.loggerhub_run_start(run=self._run_info(), state=self._start_state)
            self.status.state = self._start_state
            self._attached = True
            # Persist the tracker run's identity now: a retry of the config params below, or
            # a crash, must re-attach to this tracker run rather than create another.
            self._commit(self.status.offset)
        else:
            self._ensure_attached()
        config = entry.data.get("config")
        if config:
            try:
                self._call(codec.PARAMS, {"params": config})
            except Unsupported:
                self._skip(codec.PARAMS, 1)

    def _ensure_attached(self) -> None:
        if self._attached:
            return
        state = self.status.state if self.status.state is not None else {}
        self._pm.hook.loggerhub_run_resume(run=self._run_info(), state=state)
        self.status.state = state
        self._attached = True

    def _run_info(self) -> RunInfo:
        """The run as its plugin sees it; options given at a resume override earlier ones."""
        if not hasattr(self, "_info"):
            # Only the run's start and resumes: the metrics lines are not parsed twice.
            entries = j.JournalReader(self.paths.root).entries(kinds=_RUN_RECORDS)
            first = next(entries)
            if first.type != codec.RUN_START:
                raise RuntimeError(f"{self.paths.root}: the journal does not start with run_start")
            options = dict(first.data.get("options", {}).get(self.backend, {}))
            for entry in entries:
                if entry.type == codec.RUN_RESUME:
                    options.update(entry.data.get("options", {}).get(self.backend, {}))
            options.update(self._options or {})
            self._info = codec.run_info(first.data, self.paths.root, options)
        return self._info

    # -- acknowledgement and retries ----------------------------------------------------------

    def _deliver(self, seq: int, call: Callable[[], None], *, kind: str, count: int) -> None:
        attempt = 0
        while True:
            try:
                call()
                self.status.delivered += count
                break
            except Unsupported:
                self._skip(kind, count)
                break
            except Rejected as error:
                self._file_rejected(seq, error)
                break
            except Exception as error:  # noqa: BLE001 - any client failure is retried, never raised
                attempt += 1
                self.status.errors += 1
                message = self._redactor.text(f"{type(error).__name__}: {error}")
                self.status.last_error = message[:2000]
                if not self._failing:
                    self._failing = True
                    self._log(
                        f"loggerhub[{self.backend}]: delivery failed: {message[:500]} "
                        "-- retrying with backoff; training is not affected"
                    )
                self._commit(self.status.offset)
                # The exponent is capped: 2 ** 1100 is no float, and an outage may last that long.
                delay = min(self._backoff[1], self._backoff[0] * 2 ** min(attempt - 1, 60))
                delay *= random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not cryptography
                if self._deadline is not None:
                    delay = min(delay, max(0.0, self._deadline - time.monotonic()))
                if self._stop.wait(delay) or (
                    self._deadline is not None and time.monotonic() >= self._deadline
                ):
                    raise _Stopped from None
        if self._failing:
            self._failing = False
            self._log(f"loggerhub[{self.backend}]: delivery recovered after {attempt} failed attempts")
        self.status.finished = seq == self._end_seq
        self._commit(seq)
        if self._progress is not None:
            self._progress(seq)

    def _skip(self, kind: str, count: int) -> None:
        self.status.skipped[kind] = self.status.skipped.get(kind, 0) + count

    def _file_rejected(self, seq: int, error: Exception) -> None:
        import json

        self.status.rejected += 1
        reason = self._redactor.text(str(error))
        if self.status.rejected == 1:
            self._log(f"loggerhub[{self.backend}]: record {seq} rejected by the tracker: {reason}")
        with (self.paths.consumers / f"{self.backend}.rejected.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"seq": seq, "reason": reason}) + "\n")

    def _commit(self, seq: int) -> None:
        self.status.offset = seq
        j.write_json_atomic(self._status_path, asdict(self.status))


# --------------------------------------------------------------------------- sync


def sync(
    run_dir: str | os.PathLike[str],
    to: list[str] | None = None,
    *,
    timeout: float | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    progress: bool = False,
) -> dict[str, ConsumerStatus]:
    """Deliver what is left of a run: after a crash, an outage, or to a tracker added later.

    :param to: the trackers; default, every tracker the run was logged to. A tracker the run has
        not seen yet gets the whole journal.
    :param options: per-tracker options for trackers added now (secrets belong in env vars).

    A run whose logging process died without ending it is first ended KILLED in the journal, so
    every tracker shows the same status.
    """
    paths = j.RunPaths(run_dir)
    lock = j.RunLock(paths.lock)
    if not lock.acquire():
        raise DeliveryBusy(f"{paths.root} is still being logged; its delivery runs with it")
    try:
        _end_if_crashed(paths)
    finally:
        lock.release()
    start = next(j.JournalReader(paths.root).entries())
    targets = to or [b for b in start.data.get("backends", []) if b != "local"]
    last_seq = j.JournalReader(paths.root).last_seq()
    results = {}
    for backend in targets:
        bar = None
        if progress:
            from tqdm import tqdm

            done = ConsumerStatus.load(paths.consumer_file(backend)).offset + 1
            bar = tqdm(total=last_seq + 1, initial=done, desc=backend, unit="rec")
        consumer = Consumer(
            paths.root, backend, timeout=timeout, options=(options or {}).get(backend),
            progress=None if bar is None else functools.partial(_advance, bar),
        )
        try:
            results[backend] = consumer.run()
        finally:
            if bar is not None:
                bar.close()
    return results


def _advance(bar: Any, seq: int) -> None:
    bar.update(seq + 1 - bar.n)


def _end_if_crashed(paths: j.RunPaths) -> None:
    """End a run whose logging process died without ending it: a run_end KILLED whose error
    (type ``Crashed``) says what happened, written through the journal writer, which first cuts
    off a line torn by the dying process."""
    open_run = False
    last_seq = -1
    for entry in j.JournalReader(paths.root).entries():
        last_seq = entry.seq
        if entry.type in (codec.RUN_START, codec.RUN_RESUME):
            open_run = True
        elif entry.type == codec.RUN_END:
            open_run = False
    if not open_run:
        return
    error = codec.error_fields(RunError(
        "Crashed", "the logging process died without ending the run; ended by loggerhub sync"), Redactor())
    writer = j.JournalWriter(paths, last_seq + 1, 1.0, on_error=print)
    writer.put((codec.RUN_END, time.time(), codec.end_fields(Status.KILLED, error)))
    writer.close()
    summary: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        import json

        summary = json.loads(paths.summary.read_text(encoding="utf-8"))
    summary.update(status=Status.KILLED.value, ended_at=time.time(), error=error)
    with contextlib.suppress(OSError):
        j.write_json_atomic(paths.summary, summary)


# --------------------------------------------------------------------------- trainer side


@dataclass
class Worker:
    """A delivery process started for a live run."""

    backend: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


def spawn(run_dir: Path, backend: str) -> Worker:
    command = [sys.executable, "-m", "loggerhub.delivery", str(run_dir), "--backend", backend, "--follow"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True)  # noqa: S603
    return Worker(backend, process)


#: How long ``wait`` gives the late delivery processes, all at once, to stop after SIGTERM
#: before it kills them.
TERMINATE_GRACE = 5.0
_TICK_SECONDS = 0.5


def wait(workers: list[Worker], timeout: float, *, grace: float = TERMINATE_GRACE,
         on_tick: Callable[[list[str]], None] | None = None) -> list[Worker]:
    """Wait for workers to finish; stop those still running at the deadline and return them.

    Returns within ``timeout + grace`` (plus the milliseconds it takes to reap killed
    processes): at ``timeout`` the late workers are sent SIGTERM together and share one
    ``grace`` to commit and exit; any still running then are killed (offsets are committed after
    every batch, so nothing delivered is lost or sent twice).
    ``on_tick(backends still running)`` is called about every 0.5 s while waiting.
    """
    deadline = time.monotonic() + timeout
    running = list(workers)
    while running and time.monotonic() < deadline:
        if on_tick is not None:
            on_tick([w.backend for w in running])
        try:
            running[0].process.wait(max(0.0, min(deadline - time.monotonic(), _TICK_SECONDS)))
        except subprocess.TimeoutExpired:
            pass
        running = [w for w in running if w.process.poll() is None]
    late = [w for w in workers if w.process.poll() is None]
    for worker in late:
        worker.process.terminate()
    end = time.monotonic() + grace
    for worker in late:
        try:
            worker.process.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()  # a client hung inside a call; its offset is already committed
            worker.process.wait()
    return late


def _yield_to_the_trainer() -> None:
    """Run delivery on CPU time the trainer leaves idle.

    SCHED_IDLE (Linux) runs this process only when a core would otherwise idle, so a trainer that
    keeps every core busy is not slowed at all; delivery catches up in its pauses and at the end.
    Elsewhere, the lowest nice level.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loggerhub.delivery")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args(argv)
    _yield_to_the_trainer()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        Consumer(args.run_dir, args.backend, follow=args.follow, stop=stop).run()
    except DeliveryBusy as error:
        print(f"loggerhub[{args.backend}]: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
