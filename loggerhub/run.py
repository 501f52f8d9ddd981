"""The Python API: ``loggerhub.init`` and :class:`Run`.

Every ``log_*`` call validates and normalises its input, then appends one tuple to the journal
writer's queue. Nothing here waits on a tracker: trackers read the journal in their own processes.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import secrets
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from loggerhub import _normalize as norm
from loggerhub import journal as j
from loggerhub._normalize import InvalidInput
from loggerhub_hookspecs import ArtifactKind, Phase, Status, TableRole


class LoggerhubWarning(UserWarning):
    """Bad input that loggerhub recorded as rejected instead of raising (``strict=False``)."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM, so that the run ends KILLED and cleanup runs."""


_now = time.time
_MAX_STEP = norm.MAX_STEP
_METRICS = j.METRICS
_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_process_hooks_installed = False
_uncaught: list[type[BaseException]] = []


def init(
    project: str | None = None,
    name: str | None = None,
    *,
    backends: Sequence[str] | str | None = None,
    config: Mapping[str, Any] | None = None,
    dir: str | os.PathLike[str] | None = None,  # noqa: A002 - the documented API name
    resume: str | os.PathLike[str] | None = None,
    tags: Mapping[str, str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    strict: bool | None = None,
    flush_interval: float | None = None,
    drain_timeout: float | None = None,
    per_rank: bool | None = None,
) -> Run:
    """Start a run (or continue one with ``resume=``) and its delivery to the chosen backends.

    :param project: groups runs; the run directory is ``<dir>/<project>/<run id>``.
    :param name: a human-readable name; defaults to the run id.
    :param backends: backend names; ``local`` is always included. Defaults to
        ``LOGGERHUB_BACKENDS``, then ``loggerhub.toml``, then ``["local"]``.
    :param config: the run's configuration, logged as params (nested keys flattened with ``/``).
    :param dir: root of the local run store (default ``./loggerhub-runs``).
    :param resume: a run id in ``project``, or a run directory, to continue.
    :param options: per-backend options, e.g. ``{"mlflow": {"tracking_uri": "..."}}``.
    :param strict: raise on bad input instead of warning and recording it as rejected.
    """
    from loggerhub.config import Settings
    from loggerhub.plugins import BackendLoadError, resolve

    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "backends": backends,
            "dir": dir,
            "strict": strict,
            "flush_interval": flush_interval,
            "drain_timeout": drain_timeout,
            "per_rank": per_rank,
            "options": options,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    rank = _rank()
    if rank not in (None, 0) and not settings.per_rank:
        return Run._disabled(settings.strict)

    redactor = norm.Redactor()
    usable = []
    for backend in resolve(settings.backends):
        try:
            backend.load()
        except BackendLoadError as error:
            if settings.strict:
                raise
            warnings.warn(str(error), LoggerhubWarning, stacklevel=2)
            continue
        usable.append(backend.name)

    project = project or "default"
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "journal").is_dir():
            run_dir = settings.dir / project / str(resume)
        if not (run_dir / "journal").is_dir():
            raise FileNotFoundError(f"no run to resume at {run_dir}")
    else:
        run_id = _new_run_id(name)
        run_dir = settings.dir / project / run_id
    run = Run(run_dir, settings.flush_interval, settings.drain_timeout, settings.strict, redactor)
    secret_free_options = {
        backend: redactor.params(dict(settings.options.get(backend, {}))) for backend in usable
    }
    if resume is not None:
        run._resume(usable, secret_free_options)
    else:
        flat_config = redactor.params(norm.flatten_params(config or {}))
        run._start(
            run_id=run_dir.name,
            project=project,
            name=name or run_dir.name,
            config=flat_config,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            backends=usable,
            options=secret_free_options,
        )
    return run


def _new_run_id(name: str | None) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "run").strip("-.")[:40] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _rank() -> int | None:
    for variable in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(variable)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


class Run:
    """A run being logged. Create it with :func:`loggerhub.init`.

    Use it as a context manager: leaving the block normally ends the run FINISHED, an exception
    ends it FAILED, and ``KeyboardInterrupt`` or SIGTERM end it KILLED.
    """

    def __init__(
        self,
        run_dir: Path,
        flush_interval: float,
        drain_timeout: float,
        strict: bool,
        redactor: norm.Redactor,
    ) -> None:
        self.dir = run_dir
        self.paths = j.RunPaths(run_dir)
        self._strict = strict
        self._redactor = redactor
        self._drain_timeout = drain_timeout
        self._flush_interval = flush_interval
        self._step = -1
        self._step_lock = threading.Lock()
        self._known_keys: set[str] = set()
        self._finished = False
        self._forked = False
        self._workers: list[Any] = []
        self._lock: j.RunLock | None = None
        self._writer: j.JournalWriter | None = None
        self.summary: dict[str, Any] = {}
        self.backends: list[str] = ["local"]
        # The hot path's one call: the journal writer's deque.append once the run is open.
        self._put: Callable[[tuple[str, float, Any]], None] = _not_open
        self.id = run_dir.name
        self.name = self.id
        self.project = run_dir.parent.name

    @classmethod
    def _disabled(cls, strict: bool) -> Run:
        """A run that accepts every call and records nothing (non-zero distributed ranks)."""
        run = cls(Path(os.devnull), 1.0, 0.0, strict, norm.Redactor({}))
        run._put = _discard
        run._finished = True
        return run

    # -- starting --------------------------------------------------------------------------------

    def _open(self, next_seq: int) -> None:
        self.paths.make()
        self._lock = j.RunLock(self.paths.lock)
        if not self._lock.acquire():
            raise RuntimeError(f"run {self.dir} is being logged by another process")
        self._writer = j.JournalWriter(self.paths, next_seq, self._flush_interval, self._writer_error)
        self._put = self._writer.put
        _install_process_hooks()
        _live_runs.add(self)

    def _start(self, *, run_id: str, project: str, name: str, config: dict[str, Any],
               tags: dict[str, str], backends: list[str], options: dict[str, Any]) -> None:
        self.id, self.name, self.project = run_id, name, project
        self.backends = backends
        self._open(0)
        fields = {
            "run_id": run_id, "project": project, "name": name, "config": config, "tags": tags,
            "backends": backends, "options": options, "journal_version": j.JOURNAL_VERSION,
            "host": os.uname().nodename, "pid": os.getpid(),
        }
        self._put((j.RUN_START, _now(), fields))
        self._write_summary(status="RUNNING", started_at=_now())
        self._start_delivery()

    def _resume(self, extra_backends: list[str], options: dict[str, Any]) -> None:
        start = next(j.JournalReader(self.dir).entries())
        last_seq, max_step = -1, -1
        for entry in j.JournalReader(self.dir).entries():
            last_seq = entry.seq
            max_step = max(max_step, entry.data.get("step", -1))
        self.id, self.name, self.project = start.data["run_id"], start.data["name"], start.data["project"]
        self.backends = list(dict.fromkeys(start.data["backends"] + extra_backends))
        self._step = max_step
        self._open(last_seq + 1)
        self._put((j.RUN_RESUME, _now(), {"backends": self.backends, "options": options}))
        self._write_summary(status="RUNNING")
        self._start_delivery()

    def _start_delivery(self) -> None:
        from loggerhub.delivery import spawn

        assert self._writer is not None
        self._writer.flush()
        self._workers = [spawn(self.dir, name) for name in self.backends if name != "local"]

    def _write_summary(self, **fields: Any) -> None:
        summary = {}
        if self.paths.summary.exists():
            import json

            summary = json.loads(self.paths.summary.read_text(encoding="utf-8"))
        summary.update(run_id=self.id, name=self.name, project=self.project,
                       backends=self.backends, **fields)
        j.write_json_atomic(self.paths.summary, summary)

    # -- the hot path ----------------------------------------------------------------------------

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None
    ) -> None:
        """Log scalars at one step.

        :param metrics: key to number (int, float, numpy or torch scalar). NaN and inf are kept.
        :param step: an integer ``>= 0``; when omitted, one more than the highest step so far.
        :param epoch: the epoch, when the trainer knows it.
        """
        try:
            if step is None:
                with self._step_lock:
                    self._step = step = self._step + 1
            else:
                if type(step) is not int or not 0 <= step <= _MAX_STEP:
                    step = norm.check_step(step)
                if step > self._step:
                    self._step = step
            known = self._known_keys
            values = {}
            for key, value in metrics.items():
                if key not in known:
                    known.add(norm.check_key(key))
                values[key] = value if type(value) is float else norm.metric_value(value)
            if epoch is not None:
                epoch = norm.check_step(epoch)
            # A tuple, not a dict: the writer formats metric lines itself (see JournalWriter).
            self._put((_METRICS, _now(), (step, epoch, values)))
        except InvalidInput as error:
            self._reject("log_metrics", error, metrics)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters. Nested mappings are flattened with ``/``; secrets are redacted."""
        try:
            if not isinstance(params, Mapping):
                raise InvalidInput(f"params must be a mapping, got {type(params).__name__}")
            flat = self._redactor.params(norm.flatten_params(params))
            self._put((j.PARAMS, _now(), {"params": flat}))
        except InvalidInput as error:
            self._reject("log_params", error, params)

    def log_image(
        self,
        key: str,
        image: Any,
        step: int | None = None,
        *,
        boxes: Iterable[Any] | None = None,
        caption: str | None = None,
        epoch: int | None = None,
    ) -> None:
        """Log an image: a numpy array (HW, HWC or CHW; uint8 or float in 0-1), a PIL image, a
        torch tensor, or an image file path. ``boxes`` are in pixels, see :class:`loggerhub.Box`.
        """
        try:
            key = norm.check_key(key)
            step = self._media_step(step)
            source = norm.image_source(image)
            fields = {
                "key": key, "step": step, "epoch": norm.check_epoch(epoch), "width": source.width,
                "height": source.height, "caption": caption, "image": source,
                "boxes": [list(_box_fields(b)) for b in norm.boxes(boxes, source.width, source.height)],
            }
            self._put((j.IMAGE, _now(), fields))
        except InvalidInput as error:
            self._reject("log_image", error, key)

    def log_figure(self, key: str, figure: Any, step: int | None = None, *, epoch: int | None = None) -> None:
        """Log a plot: a matplotlib figure (rendered to PNG now, and kept) or a PNG file path."""
        try:
            key = norm.check_key(key)
            step = self._media_step(step)
            fields: dict[str, Any] = {"key": key, "step": step, "epoch": norm.check_epoch(epoch)}
            if isinstance(figure, (str, os.PathLike)):
                source = norm.image_file(figure)
            elif hasattr(figure, "savefig"):
                import pickle

                with io.BytesIO() as buffer:
                    figure.savefig(buffer, format="png")
                    png = buffer.getvalue()
                # The PNG is what matters; the figure object is a bonus for trackers that use it.
                with contextlib.suppress(Exception):
                    fields["pickled"] = pickle.dumps(figure)
                source = norm.image_bytes(png)
            else:
                raise InvalidInput(
                    f"log_figure takes a matplotlib figure or a PNG path, got {type(figure).__name__}"
                )
            fields.update(image=source, width=source.width, height=source.height)
            self._put((j.FIGURE, _now(), fields))
        except InvalidInput as error:
            self._reject("log_figure", error, key)

    def log_artifact(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        kind: ArtifactKind | str = ArtifactKind.FILE,
        step: int | None = None,
    ) -> None:
        """Log a file or directory, copied into the run directory.

        :param name: the artifact's relative name; defaults to the file or directory name.
        :param kind: ``"model"``, ``"dataset"`` or ``"file"``.
        """
        self._artifact(j.ARTIFACT, "log_artifact", path, name, kind, step)

    def log_checkpoint(
        self, path: str | os.PathLike[str], *, name: str | None = None, step: int | None = None
    ) -> None:
        """Log a saved checkpoint (a model file); trackers store it as a model."""
        self._artifact(j.CHECKPOINT, "log_checkpoint", path, name, ArtifactKind.MODEL, step)

    def _artifact(self, record: str, api: str, path: Any, name: str | None,
                  kind: ArtifactKind | str, step: int | None) -> None:
        try:
            if not isinstance(path, (str, os.PathLike)):
                raise InvalidInput(f"{api} takes a path, got {type(path).__name__}")
            source = Path(path)
            if not source.exists():
                raise InvalidInput(f"{api}: no such file or directory: {source}")
            try:
                kind = ArtifactKind(kind)
            except ValueError:
                raise InvalidInput(f"kind must be one of model, dataset, file; got {kind!r}") from None
            fields = {
                "name": norm.artifact_name(name if name is not None else source.resolve().name),
                "source": str(source.resolve()), "kind": kind.value, "step": self._media_step(step),
            }
            self._put((record, _now(), fields))
        except InvalidInput as error:
            self._reject(api, error, path)

    def log_text(self, key: str, text: str, step: int | None = None) -> None:
        """Log a piece of text under ``key``."""
        try:
            key = norm.check_key(key)
            if not isinstance(text, str):
                raise InvalidInput(f"text must be str, got {type(text).__name__}")
            self._put((j.TEXT, _now(), {"key": key, "text": text, "step": self._media_step(step)}))
        except InvalidInput as error:
            self._reject("log_text", error, key)

    def log_table(
        self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], step: int | None = None
    ) -> None:
        """Log a table of JSON scalars."""
        self._table("log_table", key, columns, rows, step, TableRole.TABLE)

    def log_confusion_matrix(
        self, key: str, matrix: Any, labels: Sequence[str], step: int | None = None
    ) -> None:
        """Log a confusion matrix: ``matrix[i][j]`` counts true ``labels[i]`` predicted ``labels[j]``."""
        self._table("log_confusion_matrix", key, labels, matrix, step, TableRole.CONFUSION_MATRIX)

    def _table(self, api: str, key: str, columns: Sequence[str], rows: Any, step: int | None,
               role: TableRole) -> None:
        try:
            key = norm.check_key(key)
            header = [str(c) for c in columns]
            body = [[norm.param_value(v) for v in row] for row in (rows.tolist() if hasattr(rows, "tolist") else rows)]
            if any(len(row) != len(header) for row in body):
                raise InvalidInput(f"{api}: every row needs {len(header)} values")
            if role is TableRole.CONFUSION_MATRIX and len(body) != len(header):
                raise InvalidInput(f"{api}: the matrix must be {len(header)}x{len(header)}")
            fields = {"key": key, "columns": header, "rows": body, "role": role.value,
                      "step": self._media_step(step)}
            self._put((j.TABLE, _now(), fields))
        except InvalidInput as error:
            self._reject(api, error, key)

    def log_event(self, phase: Phase | str, *, step: int | None = None, epoch: int | None = None) -> None:
        """Mark a trainer lifecycle boundary: ``train_start``, ``epoch_end``, ``validation_end``..."""
        try:
            try:
                phase = Phase(phase)
            except ValueError:
                raise InvalidInput(
                    f"unknown phase {phase!r}; one of {', '.join(p.value for p in Phase)}"
                ) from None
            fields = {"phase": phase.value, "step": self._media_step(step), "epoch": norm.check_epoch(epoch)}
            self._put((j.EVENT, _now(), fields))
        except InvalidInput as error:
            self._reject("log_event", error, phase)

    @property
    def step(self) -> int:
        """The highest step logged so far (-1 before the first)."""
        return self._step

    def _media_step(self, step: Any) -> int:
        """Records other than metrics default to the current step, without advancing it."""
        if step is None:
            return max(self._step, 0)
        step = norm.check_step(step)
        if step > self._step:
            self._step = step
        return step

    def _reject(self, api: str, error: InvalidInput, value: Any) -> None:
        if self._strict:
            raise error
        message = self._redactor.text(str(error))
        warnings.warn(f"loggerhub: {api}: {message} (recorded as rejected)", LoggerhubWarning, stacklevel=3)
        self._put((j.REJECTED, _now(), {"api": api, "reason": message,
                                              "value": self._redactor.text(norm._short(value, 200))}))

    def _writer_error(self, reason: str) -> None:
        print(f"loggerhub: a record could not be written and was journaled as rejected: {reason}",
              file=sys.stderr)

    # -- ending ----------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged before this call is durable in the journal."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def finish(self, status: Status | str = Status.FINISHED, *, timeout: float | None = None) -> None:
        """End the run, wait up to ``timeout`` (default ``drain_timeout``) for the trackers, and
        report, per tracker, anything still undelivered with the command that delivers it."""
        if self._finished or self._forked:
            return
        self._finished = True
        status = Status(status)
        assert self._writer is not None
        self._put((j.RUN_END, _now(), {"status": status.value}))
        self._writer.close()
        last_seq = self._writer.next_seq - 1
        self._write_summary(status=status.value, ended_at=_now(), counts=self._writer.counts)
        from loggerhub import delivery

        late = delivery.wait(self._workers, self._drain_timeout if timeout is None else timeout)
        self.summary = self._report(status, last_seq, {w.backend for w in late})
        if self._lock is not None:
            self._lock.release()
        _live_runs.discard(self)

    def _report(self, status: Status, last_seq: int, late: set[str]) -> dict[str, Any]:
        from loggerhub.delivery import ConsumerStatus

        trackers = {}
        lines = []
        for backend in self.backends:
            if backend == "local":
                continue
            consumer = ConsumerStatus.load(self.paths.consumer_file(backend))
            left = last_seq - consumer.offset
            trackers[backend] = {"undelivered": left, "errors": consumer.errors,
                                 "rejected": consumer.rejected, "last_error": consumer.last_error}
            if left > 0:
                lines.append(
                    f"loggerhub: {backend}: {left} records not delivered"
                    + (" (still running at the drain deadline)" if backend in late else "")
                    + (f"; last error: {consumer.last_error[:200]}" if consumer.last_error else "")
                    + f". Deliver them with: loggerhub sync {self.dir} --to {backend}"
                )
            elif consumer.rejected:
                lines.append(f"loggerhub: {backend}: {consumer.rejected} records rejected by the tracker; "
                             f"see {self.paths.consumers / (backend + '.rejected.jsonl')}")
        for line in lines:
            print(line, file=sys.stderr)
        summary = {"status": status.value, "records": last_seq + 1, "trackers": trackers}
        self._write_summary(delivery=trackers)
        return summary

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(status_for(exc_type, exc))

    def _after_fork(self) -> None:
        self._forked = True
        if self._writer is not None:
            self._writer.abandon_after_fork()
            self._put = self._writer.put
        self._workers = []


def status_for(exc_type: type[BaseException] | None, exc: BaseException | None) -> Status:
    """The status a run ends with when ``exc`` ends it: the rule of the ``with`` block, for
    adapters that end runs themselves."""
    if exc_type is None:
        return Status.FINISHED
    if issubclass(exc_type, (KeyboardInterrupt, Terminated)):
        return Status.KILLED
    if issubclass(exc_type, SystemExit) and getattr(exc, "code", 1) in (0, None):
        return Status.FINISHED
    return Status.FAILED


def _discard(_item: Any) -> None:
    pass


def _not_open(_item: Any) -> None:
    raise RuntimeError("this run is not open")


def _box_fields(box: Any) -> tuple[Any, ...]:
    return (box.x0, box.y0, box.x1, box.y1, box.label, box.score, box.class_id)


# --------------------------------------------------------------------------- process-wide hooks


def _install_process_hooks() -> None:
    """Once per process: end open runs at exit, on SIGTERM, and cleanly across fork."""
    global _process_hooks_installed
    if _process_hooks_installed:
        return
    _process_hooks_installed = True
    atexit.register(_finish_open_runs)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    previous_hook = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _uncaught.append(exc_type)
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    _uncaught.append(Terminated)  # for runs ended at exit, outside a with block
    raise Terminated(128 + signum)


def _finish_open_runs() -> None:
    status = status_for(_uncaught[-1], None) if _uncaught else Status.FINISHED
    for run in list(_live_runs):
        run.finish(status)


def _after_fork_in_child() -> None:
    for run in list(_live_runs):
        run._after_fork()
