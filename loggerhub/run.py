"""The Python API: ``loggerhub.init`` and :class:`Run`.

Every ``log_*`` call validates and normalises its input, then appends one tuple to the journal
writer's queue. Nothing here waits on a tracker: trackers read the journal in their own processes.
"""

from __future__ import annotations

import atexit
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
from typing import Any, NoReturn

from loggerhub import _normalize as norm
from loggerhub import codec
from loggerhub import journal as j
from loggerhub._normalize import InvalidInput
from loggerhub.store import claim_run_dir
from loggerhub_hookspecs import ArtifactKind, Phase, RunError, Status, TableRole


class LoggerhubWarning(UserWarning):
    """Bad input that loggerhub recorded as rejected instead of raising (``strict=False``)."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM, so that the run ends KILLED and cleanup runs."""


class RunFinishedError(RuntimeError):
    """A ``log_*`` call on a run that has finished: raised with ``strict=True``; otherwise a
    :class:`LoggerhubWarning` names the call and nothing is recorded.

    .. versionadded:: 0.2
    """


_now = time.time
_MAX_STEP = norm.MAX_STEP
_METRICS = codec.METRICS
_PHASES = frozenset(phase.value for phase in Phase)
_live_runs: weakref.WeakSet[Run] = weakref.WeakSet()
_process_hooks_installed = False
# (type, exception) of the last uncaught exception (sys.excepthook) or SIGTERM, for runs ended at exit.
_uncaught: list[tuple[type[BaseException], BaseException]] = []
# The codes sys.exit() was called with in the main thread; see _exit_status.
_exit_calls: list[object] = []
_main_root_frame: Any = None
_NO_KEY = object()
_summary_lock = threading.Lock()
_API_FILES = frozenset(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    for name in ("run.py", "codec.py", "_normalize.py", "journal.py")
)


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
    system_metrics: bool | None = None,
    system_metrics_interval: float | None = None,
    console: bool | None = None,
    capture_context: bool | None = None,
    group: str | None = None,
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
    :param system_metrics: sample CPU, memory, disk, network and GPU use every
        ``system_metrics_interval`` seconds (default 10) into ``system/...`` series.
    :param console: tee stdout and stderr (fds 1 and 2) into the journal.
    :param capture_context: record the command line, host, packages and git state at the start.
        All three are on by default; see docs/telemetry.md.
    :param per_rank: under a distributed launcher (``RANK`` set, or an initialised
        ``torch.distributed``), journal one run per rank, all in one group; by default only rank
        zero logs and the other ranks get a run that records nothing.
    :param group: the group id of a ``per_rank`` job; by default the launcher's (see
        :func:`rank_group`).
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
            "system_metrics": system_metrics,
            "system_metrics_interval": system_metrics_interval,
            "console": console,
            "capture_context": capture_context,
            "group": group,
            "options": options,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    rank = _rank()
    if rank not in (None, 0) and not settings.per_rank:
        return Run._disabled(settings.strict)
    membership = None
    if resume is None:
        if settings.per_rank and rank is not None:
            membership = {"group": settings.group or rank_group(), "rank": rank,
                          "world_size": _world_size()}
            name = f"{name or 'run'}-rank{rank}"
        elif settings.group is not None:
            _warn(f"group={settings.group!r} is ignored: only per_rank=True runs of a distributed job "
                  "(RANK set, or torch.distributed initialised) belong to a group")

    redactor = norm.Redactor()
    usable = []
    for backend in resolve(settings.backends, origin=settings.origin("backends")):
        try:
            backend.load()
        except BackendLoadError as error:
            if settings.strict:
                raise
            _warn(str(error))
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
        # Claimed by one atomic mkdir, so that processes drawing the same id never share a journal.
        run_dir = claim_run_dir(settings.dir / project, lambda: _new_run_id(name))
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
            membership=membership,
        )
    from loggerhub import telemetry

    run._telemetry = telemetry.start(run, settings, resumed=resume is not None)
    return run


def _new_run_id(name: str | None) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "run").strip("-.")[:40] or "run"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _rank() -> int | None:
    for variable in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(variable)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    dist = _torch_distributed()
    return None if dist is None else int(dist.get_rank())


def _world_size() -> int | None:
    value = os.environ.get("WORLD_SIZE", "")
    if value.strip().isdigit():
        return int(value)
    dist = _torch_distributed()
    return None if dist is None else int(dist.get_world_size())


def _torch_distributed() -> Any:
    """``torch.distributed`` when the program imported it and initialised a process group (a
    launcher that sets no ``RANK``, such as ``torch.multiprocessing.spawn``), else None. loggerhub
    never imports torch itself: that alone takes seconds."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist
    except Exception:  # noqa: BLE001 - a torch build without distributed support
        return None
    return None


_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def rank_group() -> str:
    """The group id of this distributed job, equal on every rank of one job and different between
    jobs, from the first of:

    1. ``TORCHELASTIC_RUN_ID``, torchrun's rendezvous id (a fresh uuid with ``--standalone``, the
       ``--rdzv-id`` given otherwise), unless it is ``none``, torchrun's default ``--rdzv-id`` for
       the static rendezvous, which every job shares;
    2. ``slurm-<SLURM_JOB_ID>[.<SLURM_STEP_ID>]`` under SLURM;
    3. with ``torch.distributed`` initialised: a random id made by rank zero and broadcast to
       every rank, so every rank must call ``init`` (it is a collective, as ``barrier`` is);
    4. else a hash of this machine, the launcher's process (the parent: its pid and start time)
       and the rendezvous address, equal for the ranks one launcher started on one machine. On
       several machines they would differ, so that case warns: pass ``group=`` or call ``init``
       after ``init_process_group``.

    ``MASTER_ADDR:MASTER_PORT`` alone is never the id: consecutive jobs reuse it.
    """
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "").strip()
    if run_id and run_id != "none":
        return _group_id(run_id)
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    if job:
        step = os.environ.get("SLURM_STEP_ID", "").strip()
        return _group_id(f"slurm-{job}" + (f".{step}" if step else ""))
    dist = _torch_distributed()
    if dist is not None:
        box = [secrets.token_hex(8) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return f"job-{box[0]}"
    return _launcher_group()


def _launcher_group() -> str:
    import hashlib

    parent = os.getppid()
    try:
        import psutil

        started = str(psutil.Process(parent).create_time())
    except Exception:  # noqa: BLE001 - no psutil, or the parent is gone: its pid alone
        started = ""
    local, world = os.environ.get("LOCAL_WORLD_SIZE"), os.environ.get("WORLD_SIZE")
    if local and world and local != world:
        _warn(f"ranks on other machines get another group id ({world} ranks, {local} on this "
              "machine, no launcher id): pass group= to loggerhub.init, or call it after "
              "torch.distributed.init_process_group")
    parts = (os.uname().nodename, str(parent), started,
             os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""))
    return "job-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _group_id(text: str) -> str:
    """A launcher's id as a group id: the characters every tracker takes in a name or a path."""
    return _GROUP_UNSAFE.sub("-", text).strip("-.")[:128] or "group"


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
        self._telemetry: Any = None  # loggerhub.telemetry.Telemetry, stopped first in finish()
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
        if not self._lock.acquire(wait=0.5):
            raise RuntimeError(f"run {self.dir} is being logged by another process")
        self._writer = j.JournalWriter(self.paths, next_seq, self._flush_interval, self._writer_error,
                                       on_put_changed=self._writer_put_changed,
                                       on_degraded=self._writer_degraded)
        self._put = self._writer.put
        _install_process_hooks()
        _live_runs.add(self)

    def _start(self, *, run_id: str, project: str, name: str, config: dict[str, Any],
               tags: dict[str, str], backends: list[str], options: dict[str, Any],
               membership: dict[str, Any] | None = None) -> None:
        self.id, self.name, self.project = run_id, name, project
        self.backends = backends
        self._open(0)
        fields = {
            "run_id": run_id, "project": project, "name": name, "config": config, "tags": tags,
            "backends": backends, "options": options, "journal_version": codec.JOURNAL_VERSION,
            "host": os.uname().nodename, "pid": os.getpid(),
            **(membership or {}),  # group, rank, world_size of a per_rank run
        }
        self._put((codec.RUN_START, _now(), fields))
        self._write_summary(status="RUNNING", started_at=_now(), **(membership or {}))
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
        self._put((codec.RUN_RESUME, _now(), {"backends": self.backends, "options": options}))
        self._write_summary(status="RUNNING")
        self._start_delivery()

    def _start_delivery(self) -> None:
        from loggerhub.delivery import spawn

        assert self._writer is not None
        self._writer.flush()
        self._workers = [spawn(self.dir, name) for name in self.backends if name != "local"]

    def _write_summary(self, **fields: Any) -> None:
        """Update run.json. It is derived from the journal, so a disk that refuses it is
        reported, not raised: the journal (or its degraded state) is what counts."""
        import json

        with _summary_lock:  # the writer thread marks a degraded run from its side
            summary = {}
            try:
                if self.paths.summary.exists():
                    summary = json.loads(self.paths.summary.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                summary = {}
            summary.update(run_id=self.id, name=self.name, project=self.project,
                           backends=self.backends, **fields)
            try:
                j.write_json_atomic(self.paths.summary, summary)
            except OSError as error:
                print(f"loggerhub: cannot write {self.paths.summary}: {error}", file=sys.stderr)

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
            # The common case inlined: a dict of known keys and plain floats. Anything else goes
            # through the codec's checks (codec.metrics_fields agrees with _checked_metrics).
            if type(metrics) is not dict:
                metrics = self._checked_metrics(metrics)
            values = metrics.values()
            for value in values:
                if type(value) is not float:
                    metrics = self._checked_metrics(metrics)
                    values = metrics.values()
                    break
            else:
                if not self._known_keys.issuperset(metrics):
                    metrics = self._checked_metrics(metrics)
                    values = metrics.values()
            if epoch is not None:
                epoch = norm.check_step(epoch)
            # One flat tuple, snapshotting keys then values in C (the caller may reuse its dict).
            # It holds no container, so the garbage collector untracks it at its first pass, and
            # the record around it at the next: a dict (or a nested tuple) inside would keep
            # queued records tracked into the oldest generation, and every full collection would
            # walk the whole queue, which was most of the call's cost.
            self._put((_METRICS, _now(), (step, epoch, *metrics, *values)))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse("log_metrics", _explain_metrics(error, metrics), metrics)

    def _checked_metrics(self, metrics: Mapping[Any, Any]) -> dict[str, float]:
        """A call with a new key, a value that is not a plain float, or a mapping that is not a
        dict: the checks of codec.metrics_fields, which names the key at fault on a refusal."""
        known = self._known_keys
        values = {}
        for key, value in metrics.items():
            if key not in known:
                known.add(norm.check_key(key))
            values[key] = value if type(value) is float else norm.metric_value(value)
        return values

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters. Nested mappings are flattened with ``/``; secrets are redacted."""
        try:
            self._put((codec.PARAMS, _now(), codec.params_fields(params, self._redactor)))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse("log_params", error, params)

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
            fields = codec.image_fields(key, image, self._media_step(step), boxes=boxes,
                                        caption=caption, epoch=epoch)
            self._put((codec.IMAGE, _now(), fields))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse("log_image", error, image, key)

    def log_figure(self, key: str, figure: Any, step: int | None = None, *, epoch: int | None = None) -> None:
        """Log a plot: a matplotlib figure (rendered to PNG now, and kept) or a PNG file path."""
        try:
            fields = codec.figure_fields(key, figure, self._media_step(step), epoch=epoch)
            self._put((codec.FIGURE, _now(), fields))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse("log_figure", error, figure, key)

    def log_artifact(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        kind: ArtifactKind | str = ArtifactKind.FILE,
        step: int | None = None,
    ) -> None:
        """Log a regular file or a directory, copied into the run directory. Symlinks are
        followed; devices, FIFOs and sockets are refused (inside a directory, skipped and listed
        in the record's ``skipped_special``).

        :param name: the artifact's relative name; defaults to the file or directory name.
        :param kind: ``"model"``, ``"dataset"`` or ``"file"``.
        """
        self._artifact(codec.ARTIFACT, "log_artifact", path, name, kind, step)

    def log_checkpoint(
        self, path: str | os.PathLike[str], *, name: str | None = None, step: int | None = None
    ) -> None:
        """Log a saved checkpoint (a model file); trackers store it as a model."""
        self._artifact(codec.CHECKPOINT, "log_checkpoint", path, name, ArtifactKind.MODEL, step)

    def _artifact(self, record: str, api: str, path: Any, name: str | None,
                  kind: ArtifactKind | str, step: int | None) -> None:
        try:
            fields = codec.artifact_fields(path, self._media_step(step), name=name, kind=kind)
            self._put((record, _now(), fields))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse(api, error, path)

    def log_text(self, key: str, text: str, step: int | None = None) -> None:
        """Log a piece of text under ``key``."""
        try:
            self._put((codec.TEXT, _now(), codec.text_fields(key, text, self._media_step(step), self._redactor)))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse("log_text", error, text, key)

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

    def _table(self, api: str, key: str, columns: Any, rows: Any, step: int | None,
               role: TableRole) -> None:
        try:
            fields = codec.table_fields(key, columns, rows, self._media_step(step), role)
            self._put((codec.TABLE, _now(), fields))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse(api, error, rows, key)

    def log_event(self, phase: Phase | str, *, step: int | None = None, epoch: int | None = None) -> None:
        """Mark a trainer lifecycle boundary: ``train_start``, ``epoch_end``, ``validation_end``..."""
        try:
            self._put((codec.EVENT, _now(), codec.event_fields(phase, self._media_step(step), epoch=epoch)))
        except Exception as error:  # noqa: BLE001 - no input may escape as an exception
            self._refuse("log_event", error, phase)

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

    def _refuse(self, api: str, error: BaseException, value: Any, key: Any = _NO_KEY) -> None:
        """The one way a log_* call refuses: raise in strict mode, else warn (naming the caller's
        line, the call and the key) and journal a ``rejected`` record."""
        where = api if key is _NO_KEY else f"{api}({norm._short(key, 60)})"
        if isinstance(error, RunFinishedError):
            if self._strict:
                raise error
            _warn(f"loggerhub: {where}: {error}; the call was not recorded")
            return
        if self._strict:
            raise error
        reason = str(error) if isinstance(error, InvalidInput) else f"{type(error).__name__}: {error}"
        message = self._redactor.text(reason)
        _warn(f"loggerhub: {where}: {message} (recorded as rejected)")
        fields = codec.rejected_fields(api, message, value, self._redactor)
        if key is not _NO_KEY:
            fields["key"] = self._redactor.text(norm._short(key, 200))
        self._put((codec.REJECTED, _now(), fields))

    def _writer_error(self, reason: str) -> None:
        print(f"loggerhub: a record could not be written and was journaled as rejected: "
              f"{self._redactor.text(reason)}", file=sys.stderr)

    def _writer_put_changed(self, put: Callable[[Any], None]) -> None:
        # Back-pressure on and off, or a dead writer: the hot path's one call follows the writer.
        if not self._finished and not self._forked:
            self._put = put

    def _writer_degraded(self, failure: str) -> None:
        self._write_summary(degraded=True, failure=self._redactor.text(failure))

    def _closed(self, _item: Any) -> None:
        raise RunFinishedError(f"run {self.id} is finished")

    # -- ending ----------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything logged before this call is durable in the journal. False when
        it is not (the disk refuses writes, or ``timeout`` passed); never waits on a dead writer."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def finish(self, status: Status | str = Status.FINISHED, *, timeout: float | None = None,
               exc: BaseException | None = None) -> None:
        """End the run, wait up to ``timeout`` (default ``drain_timeout``) for the trackers, and
        report, per tracker, anything still undelivered with the command that delivers it.

        :param exc: the exception that ended the run, for a FAILED or KILLED status: its type,
            redacted message and short traceback are journaled in ``run_end`` and run.json.

        Waits at most: the journal writer's last write (retried for up to 2 s on a disk that
        refuses it), then ``timeout`` for the delivery processes, then one shared 5 s grace for
        those still running, sent SIGTERM together; any left are killed.
        Logging after ``finish`` is refused (see :class:`RunFinishedError`).

        .. versionchanged:: 0.2 ``exc``; a degraded run reports the records lost.
        """
        if self._finished or self._forked:
            return
        telemetry, self._telemetry = self._telemetry, None
        if telemetry is not None:
            # Its last records (the console's last lines, a last sample) go in before run_end.
            telemetry.stop()
        self._finished = True
        self._put = self._closed
        status = Status(status)
        error = None
        if status is not Status.FINISHED:
            cause = exc if exc is not None else _default_cause(status)
            error = codec.error_fields(cause, self._redactor)
        writer = self._writer
        assert writer is not None
        writer.put((codec.RUN_END, _now(), codec.end_fields(status, error, writer.lost)))
        writer.close()
        last_seq = writer.written - 1  # the last record on disk: what trackers can receive
        ending: dict[str, Any] = {"status": status.value, "ended_at": _now(), "counts": writer.counts,
                                  "points": writer.points, "error": error, "degraded": writer.degraded,
                                  "lost": writer.lost}
        if writer.failure:
            ending["failure"] = self._redactor.text(writer.failure)
        if telemetry is not None and telemetry.dropped_lines:
            # The terminal showed them; the journal could not keep up with the console.
            ending["console_lines_not_journaled"] = telemetry.dropped_lines
            print(f"loggerhub: {telemetry.dropped_lines} console lines of run {self.dir} were shown but not "
                  "journaled (the journal fell behind). run.json says so.", file=sys.stderr)
        self._write_summary(**ending)
        if writer.degraded:
            print(f"loggerhub: run {self.dir} is degraded: {writer.lost} records never reached the disk"
                  f" ({self._redactor.text(writer.failure or '')}). run.json says so.", file=sys.stderr)
        from loggerhub import delivery

        progress = _FinishProgress(self.paths, last_seq) if sys.stderr.isatty() and self._workers else None
        late = delivery.wait(self._workers, self._drain_timeout if timeout is None else timeout,
                             on_tick=progress)
        if progress is not None:
            progress.done()
        self.summary = self._report(status, last_seq, {w.backend for w in late})
        self.summary.update(degraded=writer.degraded, lost=writer.lost, error=error)
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
                                 "rejected": consumer.rejected, "skipped": consumer.skipped,
                                 "last_error": consumer.last_error}
            # Lifecycle boundaries a tracker has no place for carry no data: counted (summary,
            # `show`), but not worth a line at every finish.
            skipped_data = {kind: n for kind, n in consumer.skipped.items() if kind not in _PHASES}
            if skipped_data:
                kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(skipped_data.items()))
                lines.append(f"loggerhub: {backend}: skipped records it has no place for: {kinds} "
                             "(see `loggerhub backends`)")
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
        self.finish(status_for(exc_type, exc), exc=exc)

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


def _explain_metrics(error: Exception, metrics: Any) -> Exception:
    """The refusal to report for a log_metrics call: off the hot path, the codec's check finds
    the key at fault and names it; an error in the step or epoch stands as it is."""
    if isinstance(error, RunFinishedError):
        return error
    try:
        codec.metrics_fields(metrics)
    except InvalidInput as named:
        return named
    return error


def _default_cause(status: Status) -> RunError:
    return RunError("Killed" if status is Status.KILLED else "Failed",
                          f"the run was ended {status.value} without an exception", "")


def _warn(message: str) -> None:
    """Warn, naming the first line outside loggerhub's API modules: the user's (or the
    integration's) call, whichever log_* path led here."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _API_FILES:
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, LoggerhubWarning, stacklevel=level)


class _FinishProgress:
    """What finish() shows on a terminal while it waits for the trackers: records left per
    tracker (from its committed offset in consumers/<name>.json), rate and ETA."""

    def __init__(self, paths: j.RunPaths, last_seq: int) -> None:
        self._paths = paths
        self._last_seq = last_seq
        self._started = time.monotonic()
        self._first: dict[str, int] = {}
        self._shown = False

    def __call__(self, waiting: list[str]) -> None:
        from loggerhub.delivery import ConsumerStatus

        parts = []
        elapsed = max(time.monotonic() - self._started, 1e-3)
        for backend in waiting:
            offset = ConsumerStatus.load(self._paths.consumer_file(backend)).offset
            first = self._first.setdefault(backend, offset)
            left = self._last_seq - offset
            rate = (offset - first) / elapsed
            eta = f"{left / rate:.0f} s" if rate > 0 else "?"
            parts.append(f"{backend}: {left} left, {rate:.0f} rec/s, ETA {eta}")
        if parts:
            self._shown = True
            sys.stderr.write("\rloggerhub: delivering... " + "; ".join(parts) + "\x1b[K")
            sys.stderr.flush()

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _discard(_item: Any) -> None:
    pass


def _not_open(_item: Any) -> None:
    raise RuntimeError("this run is not open")


def _box_fields(box: Any) -> tuple[Any, ...]:
    return (box.x0, box.y0, box.x1, box.y1, box.label, box.score, box.class_id)


# --------------------------------------------------------------------------- process-wide hooks


def _install_process_hooks() -> None:
    """Once per process: end open runs at exit, on SIGTERM, and cleanly across fork."""
    global _process_hooks_installed, _main_root_frame
    if _process_hooks_installed:
        return
    _process_hooks_installed = True
    atexit.register(_finish_open_runs)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    previous_hook = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _uncaught.append((exc_type, exc))
        previous_hook(exc_type, exc, tb)

    sys.excepthook = excepthook
    # SystemExit never reaches sys.excepthook and its code is gone by the time atexit runs (and
    # Python 3.11 has no sys.monitoring to see it unwind), so sys.exit() is observed where it is
    # called, and the main thread's outermost frame tells at exit whether the program really
    # ended by an exception (rather than catching that exit). Known gap: ``raise SystemExit(3)``
    # written out, not through sys.exit, is not seen and the run ends FINISHED.
    main_frame = sys._current_frames().get(threading.main_thread().ident or -1)
    while main_frame is not None and main_frame.f_back is not None:
        main_frame = main_frame.f_back
    _main_root_frame = main_frame
    real_exit = sys.exit

    def exit(status: object = None, /) -> NoReturn:  # noqa: A001 - it is sys.exit
        if threading.current_thread() is threading.main_thread():
            _exit_calls.append(status)
        real_exit(status)  # type: ignore[arg-type]

    exit.__doc__ = real_exit.__doc__
    sys.exit = exit
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    error = Terminated(128 + signum)
    _uncaught.append((Terminated, error))  # for runs ended at exit, outside a with block
    raise error


def _ended_by_exception() -> bool:
    """At exit: did the main module end by an exception (its outermost frame's last instruction
    is not a return)? Unknown (no frame) counts as yes, trusting the recorded sys.exit call."""
    frame = _main_root_frame
    if frame is None:
        return True
    import dis

    code = frame.f_code.co_code
    lasti = frame.f_lasti
    if not 0 <= lasti < len(code):
        return True
    return dis.opname[code[lasti]] not in ("RETURN_VALUE", "RETURN_CONST")


def _exit_status() -> tuple[Status, BaseException | None]:
    """How a program that did not call finish() ended: an uncaught exception (excepthook), a
    SIGTERM, or sys.exit(code) with a non-zero code make the run FAILED or KILLED."""
    if _uncaught:
        exc_type, exc = _uncaught[-1]
        return status_for(exc_type, exc), exc
    if _exit_calls and _ended_by_exception():
        code = _exit_calls[-1]
        if code not in (0, None):
            error = SystemExit(code)
            return Status.FAILED, error
    return Status.FINISHED, None


def _finish_open_runs() -> None:
    status, exc = _exit_status()
    for run in list(_live_runs):
        run.finish(status, exc=exc)


def _after_fork_in_child() -> None:
    for run in list(_live_runs):
        run._after_fork()
