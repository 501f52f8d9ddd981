"""The run directory: an append-only journal, the source of truth for every tracker.

Layout (documented in docs/journal.md)::

    <run dir>/
      run.json                    summary, rewritten at start and end (derived; the journal wins)
      run.lock                    held (flock) by the process that is logging the run
      journal/<first seq>.jsonl   segments of JSON lines, one record per line, in seq order
      media/                      PNGs and pickled figures that image and figure records reference
      artifacts/                  copies of logged files and directories
      consumers/<tracker>.json    each tracker's delivered offset and its plugin state

The writer is one daemon thread per run. The training loop only appends tuples to a deque; the
thread encodes them, writes media, copies artifacts and appends lines, at least every
``flush_interval`` seconds. A line is only ever appended whole; a torn last line left by a killed
process is skipped by readers and cut off by the next appender before it writes.

The writer never dies of one record: a record that cannot be encoded becomes a ``rejected``
record, and a write the disk refuses is kept in memory (up to ``PENDING_BYTES``) and retried, so
a disk that fills and frees again loses nothing. Past that bound records are counted as lost and
the run is marked degraded; nothing is dropped without being counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import stat
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loggerhub import codec
from loggerhub.codec import ARTIFACT, CHECKPOINT, FIGURE, IMAGE, METRICS, REJECTED

SEGMENT_BYTES = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024
#: Records waiting in memory for the writer before ``log_*`` calls wait for it (back-pressure).
#: The writer looks at the queue every ``QUEUE_POLL_SECONDS``, so the queue can overshoot by what
#: the loop logs in that time; the bound is what a slow disk costs in memory, whatever the rate.
QUEUE_LIMIT = 100_000
QUEUE_POLL_SECONDS = 0.05
#: Records encoded and written per write call: the writer's memory is bounded by this, not by
#: the backlog.
WRITE_CHUNK = 10_000
#: Encoded records kept in memory while the disk refuses writes (full, over quota, EIO), retried
#: until it takes them; beyond this, new records are counted as lost.
PENDING_BYTES = 64 * 1024 * 1024
#: How long closing a run keeps retrying a write the disk refuses before counting it lost.
CLOSE_RETRY_SECONDS = 2.0


class JournalCorruption(UserWarning):
    """A journal line that is not a record (corrupted on disk) was skipped while reading."""


class RunPaths:
    """Where each part of a run lives in its directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.journal = self.root / "journal"
        self.media = self.root / "media"
        self.artifacts = self.root / "artifacts"
        self.consumers = self.root / "consumers"
        self.summary = self.root / "run.json"
        self.lock = self.root / "run.lock"

    def make(self) -> None:
        for folder in (self.journal, self.media, self.artifacts, self.consumers):
            folder.mkdir(parents=True, exist_ok=True)

    def segments(self) -> list[Path]:
        return sorted(self.journal.glob("*.jsonl"))

    def consumer_file(self, backend: str) -> Path:
        return self.consumers / f"{backend}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- liveness


class RunLock:
    """An advisory lock held by the process that logs a run, so others can tell it is alive."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock, waiting up to ``wait`` seconds for a holder to let go.

        A reader's liveness probe (:func:`run_is_live`, the run index) holds the lock for an
        instant; the owner of a new run waits that instant out instead of failing.
        """
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def run_is_live(paths: RunPaths) -> bool:
    """True while some process holds the run's lock, i.e. is still logging it."""
    if not paths.lock.exists():
        return False
    lock = RunLock(paths.lock)
    if lock.acquire():
        lock.release()
        return False
    return True


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: its sequence number, type and raw fields."""

    seq: int
    type: str
    data: dict[str, Any]


class JournalReader:
    """Reads records in seq order, from any position, and can follow a live journal.

    A line that is not a record (a segment corrupted on disk, or a torn line that an old writer
    glued to the next record) is skipped, counted in :attr:`corrupt`, and reported once per reader
    with a :class:`JournalCorruption` warning: one bad line must not make the run unreadable.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.paths = RunPaths(run_dir)
        self._segment: Path | None = None
        self._position = 0
        self._pending = b""
        #: Lines skipped because they are not records, and where the first one was.
        self.corrupt = 0
        self.first_corrupt: str | None = None

    def entries(self, after: int = -1, kinds: frozenset[str] | None = None) -> Iterator[Entry]:
        """Every complete record with ``seq > after`` written so far. Call again to continue.

        :param kinds: only records of these types. Lines that cannot be one (the type's name
            does not occur in them) are passed over unparsed, and so not counted if corrupt.
        """
        needles = None if kinds is None else [f'"{kind}"'.encode() for kind in kinds]
        segments = self.paths.segments()
        if self._segment is None:
            start = 0
            for index, segment in enumerate(segments):
                if int(segment.stem) <= after + 1:
                    start = index
            segments = segments[start:]
        else:
            segments = [s for s in segments if s >= self._segment]
        for segment in segments:
            if segment != self._segment:
                if self._pending:
                    # A later segment exists, so this unterminated line will never be completed.
                    self._skip(self._segment, self._position - len(self._pending))
                self._segment, self._position, self._pending = segment, 0, b""
            with segment.open("rb") as handle:
                handle.seek(self._position)
                # Bounded reads: a backlog of any size costs READ_CHUNK of memory, not its size.
                while chunk := handle.read(READ_CHUNK):
                    offset = self._position - len(self._pending)
                    self._position += len(chunk)
                    lines = (self._pending + chunk).split(b"\n")
                    # The last piece is a line still being written (or torn by a kill): keep it.
                    self._pending = lines.pop()
                    for line in lines:
                        line_offset, offset = offset, offset + len(line) + 1
                        if not line:
                            continue
                        if needles is not None and not any(needle in line for needle in needles):
                            continue
                        try:
                            raw = _parse_line(line)
                            seq, kind = raw["seq"], raw["type"]
                            if type(seq) is not int or not isinstance(kind, str):
                                raise TypeError("seq or type has the wrong type")
                        except Exception:  # noqa: BLE001 - not a record: skipped and counted
                            self._skip(segment, line_offset)
                            continue
                        if seq > after and (kinds is None or kind in kinds):
                            yield Entry(seq, kind, raw)

    def _skip(self, segment: Path | None, offset: int) -> None:
        self.corrupt += 1
        if self.first_corrupt is None:
            self.first_corrupt = f"{segment}: byte {offset}"
            warnings.warn(f"loggerhub: skipped a corrupt journal line in {self.first_corrupt}",
                          JournalCorruption, stacklevel=3)

    def last_seq(self) -> int:
        last = -1
        for entry in JournalReader(self.paths.root).entries():
            last = entry.seq
        return last


_scan_json = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse_line(line: bytes) -> Any:
    """``json.loads(line)``: the same C scanner without the per-call wrapper (encoding detection,
    whitespace skipping), which costs as much as the scan on a metrics line. A line it does not
    take whole goes through ``json.loads``, which decides."""
    try:
        text = line.decode("utf-8")
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except (UnicodeDecodeError, StopIteration, ValueError):
        pass
    return json.loads(line)


def repair_tail(fd: int) -> int:
    """Cut a torn last line (no newline: a write interrupted by a kill) off an open segment, so
    that the next record is not glued to it. The torn record was never acknowledged to anyone:
    ``flush()`` returns only after whole lines are on disk. Returns the segment's size."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    end = size
    while end > 0:
        start = max(0, end - READ_CHUNK)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            good = start + newline + 1
            break
        end = start
    else:
        good = 0
    if good != size:
        os.ftruncate(fd, good)
    return good


# --------------------------------------------------------------------------- writing


class _Flush:
    """A flush request in the queue: set once everything before it is on disk (or cannot be)."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class JournalWriter:
    """Appends records to a run's journal from a background thread.

    ``put`` is the only call on the training loop's path: a ``deque.append`` of a tuple
    ``(type, timestamp, fields)``. Everything slow happens in the thread. When more than
    ``queue_limit`` records wait, the writer swaps ``put`` for one that waits until the queue is
    half empty (it tells its owner through ``on_put_changed``), so memory stays bounded whatever
    the rate; it waits for the local disk only, and never while the disk refuses writes.

    State the owner reads after :meth:`close`: ``degraded`` (the disk refused a write at some
    point, or the thread died), ``lost`` (records that never reached the disk), ``failure`` (the
    first error, for the report).
    """

    def __init__(
        self,
        paths: RunPaths,
        next_seq: int,
        flush_interval: float,
        on_error: Callable[[str], Any],
        *,
        on_put_changed: Callable[[Callable[[Any], None]], None] | None = None,
        on_degraded: Callable[[str], None] | None = None,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.paths = paths
        self._seq = next_seq
        self._flush_interval = flush_interval
        self._queue: deque[Any] = deque()
        self._append = self._queue.append
        self.put: Callable[[Any], None] = self._append
        self._queue_limit = queue_limit
        self._room = threading.Event()
        self._on_put_changed = on_put_changed
        self._on_degraded = on_degraded
        self._wake = threading.Event()
        self._closing = False
        self._on_error = on_error
        self._counts: dict[str, int] = {}
        self._metric_records = 0
        self._metric_points = 0
        # Encoded lines not yet on disk (the disk refused them, or they are being written).
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._fd: int | None = None
        self._segment_size = 0
        self._written = next_seq  # seq of the first record not yet on disk
        self._failing = False
        self.degraded = False
        self.lost = 0
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="loggerhub-journal", daemon=True)
        self._thread.start()

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def written(self) -> int:
        """Records on disk in the whole journal: the seq the next record to reach it will have."""
        return self._written

    @property
    def counts(self) -> dict[str, int]:
        """Records encoded, by type (see ``lost`` for those that did not reach the disk)."""
        counts = dict(self._counts)
        if self._metric_records:
            counts[METRICS] = self._metric_records
        return counts

    @property
    def points(self) -> int:
        """Metric points encoded (each metrics record holds one or more)."""
        return self._metric_points

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything put before this call is written and fsynced. False when it is
        not: the timeout passed, the disk refused the write, or the writer is dead (never waits
        on a dead writer)."""
        if not self._thread.is_alive():
            return False
        marker = _Flush()
        self._append((_FLUSH, 0.0, marker))
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not marker.done.wait(0.1):
            if not self._thread.is_alive():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return marker.ok

    def close(self) -> None:
        """Write everything queued and stop the thread. Bounded: a disk that still refuses writes
        after ``CLOSE_RETRY_SECONDS`` leaves those records counted in ``lost``."""
        self._closing = True
        self._wake.set()
        self._room.set()
        self._thread.join()
        # Whatever a dead thread left behind never reaches the disk.
        left = sum(1 for kind, _, _ in self._queue if kind is not _FLUSH)
        self._queue.clear()
        self.lost += left + len(self._pending)
        self._pending.clear()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def abandon_after_fork(self) -> None:
        """In a forked child: the thread did not survive the fork; drop what the parent queued."""
        self._queue = deque()
        self.put = _drop
        self._closing = True

    # -- back-pressure (the put side) ----------------------------------------------------------

    def _put_waiting(self, item: Any) -> None:
        self._append(item)
        queue, limit = self._queue, self._queue_limit
        while len(queue) > limit and self._thread.is_alive() and not self._closing:
            self._room.clear()
            self._wake.set()
            self._room.wait(0.1)  # the writer sets it when the queue is half empty

    def _set_put(self, put: Callable[[Any], None]) -> None:
        if self.put is put or self.put is _drop:
            return
        self.put = put
        if self._on_put_changed is not None:
            self._on_put_changed(put)

    def _pressure(self) -> None:
        """Called by the thread after each chunk: apply or release back-pressure."""
        length = len(self._queue)
        if length > self._queue_limit and not self._failing:
            self._set_put(self._put_waiting)
        elif length <= self._queue_limit // 2 or self._failing:
            self._room.set()
            self._set_put(self._append)

    # -- thread side ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # noqa: BLE001 - a dying writer must say so and count
            self._die(error)

    def _loop(self) -> None:
        poll = min(self._flush_interval, QUEUE_POLL_SECONDS)
        last_drain = time.monotonic()
        while True:
            woken = self._wake.wait(poll)
            self._wake.clear()
            closing = self._closing
            if (woken or closing or self._pending or len(self._queue) > WRITE_CHUNK
                    or time.monotonic() - last_drain >= self._flush_interval):
                self._drain()
                last_drain = time.monotonic()
            else:
                self._pressure()
            if closing:
                deadline = time.monotonic() + CLOSE_RETRY_SECONDS
                while self._pending and time.monotonic() < deadline:
                    time.sleep(0.1)
                    self._write_pending()
                return

    def _die(self, error: BaseException) -> None:
        import traceback

        self.degraded = True
        self.failure = self.failure or f"{type(error).__name__}: {error}"
        self.put = _Lost(self)
        if self._on_put_changed is not None:
            self._on_put_changed(self.put)
        self._room.set()
        print(f"loggerhub: the journal writer of {self.paths.root} stopped; records logged from now on "
              "are counted as lost, not written:\n" + "".join(traceback.format_exception(error)),
              file=sys.stderr, flush=True)
        if self._on_degraded is not None:
            with contextlib.suppress(Exception):
                self._on_degraded(self.failure)

    def _drain(self) -> None:
        queue = self._queue
        popleft = queue.popleft
        encode_values, metric_line = _encode_values, _METRIC_LINE
        while True:
            lines: list[bytes] = []
            append = lines.append
            marker: _Flush | None = None
            # The disk has refused writes for a while and 64 MiB wait: count, rather than hold,
            # what comes next (checked per chunk: the bound may be passed by one chunk).
            overflow = self._failing and self._pending_bytes >= PENDING_BYTES
            for _ in range(WRITE_CHUNK):
                try:
                    kind, ts, fields = popleft()
                except IndexError:
                    break
                if kind is _FLUSH:
                    marker = fields
                    break
                if overflow:
                    self.lost += 1
                    continue
                if kind is METRICS:
                    # Most of the journal, and in the trainer's process: formatted inline, the
                    # same JSON as the general path at about half the cost.
                    try:
                        step, epoch, values = _metric_fields(fields)
                        line = (metric_line % (step, "null" if epoch is None else epoch,
                                               "".join(encode_values(values, 0)), self._seq, ts)).encode()
                    except Exception:  # noqa: BLE001 - e.g. a lone surrogate in a key: the slow path
                        line = self._line(kind, ts, fields)
                    else:
                        self._seq += 1
                        self._metric_records += 1
                        self._metric_points += len(values)
                    append(line)
                else:
                    append(self._line(kind, ts, fields))
            if lines:
                self._pending.extend(lines)
                self._pending_bytes += sum(map(len, lines))
            ok = self._write_pending()
            if marker is not None:
                if ok and self._fd is not None:
                    try:
                        os.fsync(self._fd)
                    except OSError as error:
                        ok = False
                        self._io_failed(error)
                        self._failing = False  # nothing is pending: the next write tells
                marker.ok = ok
                marker.done.set()
                continue
            self._pressure()
            if len(lines) < WRITE_CHUNK and not overflow:
                return
            if overflow and not queue:
                return

    def _line(self, kind: str, ts: float, fields: Any) -> bytes:
        """One record as a journal line; a record that cannot be encoded becomes ``rejected``."""
        seq = self._seq
        if kind is METRICS:
            # Most of the journal, and in the trainer's process: formatted directly, the same
            # JSON as the general path below at about half the cost.
            step, epoch, values = _metric_fields(fields)
            epoch_text = "null" if epoch is None else epoch
            try:
                line = (_METRIC_LINE % (step, epoch_text, _encode(values), seq, ts)).encode()
            except UnicodeEncodeError:
                line = (_METRIC_LINE % (step, epoch_text, _encode(_escape_surrogates(values)), seq, ts)).encode()
            except Exception as error:  # noqa: BLE001 - a bad record must not stop the journal
                line = self._rejected_line(kind, ts, error)
                self._seq += 1
                return line
            self._seq += 1
            self._metric_records += 1
            self._metric_points += len(values)
            return line
        try:
            record = self._materialise(kind, fields)
            record["seq"] = seq
            record["type"] = kind
            record["ts"] = ts
            try:
                line = (_encode(record) + "\n").encode()
            except UnicodeEncodeError:
                # A lone surrogate (a file name as os.listdir decodes it): written escaped.
                line = (_encode(_escape_surrogates(record)) + "\n").encode()
        except Exception as error:  # noqa: BLE001 - a bad item must not stop the journal
            line = self._rejected_line(kind, ts, error)
        else:
            self._counts[kind] = self._counts.get(kind, 0) + 1
        self._seq += 1
        return line

    def _rejected_line(self, kind: str, ts: float, error: Exception) -> bytes:
        reason = f"{type(error).__name__}: {error}"
        self._on_error(reason)
        self._counts[REJECTED] = self._counts.get(REJECTED, 0) + 1
        record = {"api": kind, "reason": reason, "value": "", "seq": self._seq, "type": REJECTED, "ts": ts}
        return (_encode(_escape_surrogates(record)) + "\n").encode()

    def _write_pending(self) -> bool:
        """Append the pending lines to the current segment. On an I/O error the segment is cut
        back to its last whole line, the lines stay pending, and the run is marked degraded."""
        if not self._pending:
            return True
        payload = b"".join(self._pending)
        try:
            fd = self._segment_fd()
            start = self._segment_size
            view = memoryview(payload)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # a partial write must not become a torn line
                raise
        except OSError as error:
            self._io_failed(error)
            return False
        self._segment_size += len(payload)
        self._written += len(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if self._failing:
            self._failing = False
            print(f"loggerhub: the journal of {self.paths.root} is written again"
                  + (f"; {self.lost} records were lost while it was not" if self.lost else "; nothing was lost"),
                  file=sys.stderr, flush=True)
        return True

    def _segment_fd(self) -> int:
        if self._fd is not None and self._segment_size < SEGMENT_BYTES:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._fd is None and self._segment_size == 0:
            self._repair_last_segment()
        path = self.paths.journal / f"{self._written:012d}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._segment_size = repair_tail(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _repair_last_segment(self) -> None:
        """Before the first append of this writer: the last existing segment may end in a torn
        line (the previous process was killed mid-write); cut it off so no reader ever sees the
        next record glued to it."""
        segments = self.paths.segments()
        if not segments:
            return
        fd = os.open(segments[-1], os.O_RDWR)
        try:
            repair_tail(fd)
        finally:
            os.close(fd)

    def _io_failed(self, error: OSError) -> None:
        if self._failing:
            return
        self._failing = True
        self._room.set()
        self._set_put(self._append)
        first = not self.degraded
        self.degraded = True
        self.failure = self.failure or f"{type(error).__name__}: {error}"
        if first:
            print(f"loggerhub: cannot write the journal of {self.paths.root} ({error}); keeping up to "
                  f"{PENDING_BYTES // 2**20} MiB of records in memory and retrying. The run is degraded "
                  "(see run.json); records beyond that are counted as lost.", file=sys.stderr, flush=True)
            if self._on_degraded is not None:
                with contextlib.suppress(Exception):
                    self._on_degraded(self.failure)

    def _materialise(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Turn a queued item into its journal fields, writing its media or artifact files."""
        if kind in (IMAGE, FIGURE):
            return self._write_media(kind, fields)
        if kind in (ARTIFACT, CHECKPOINT):
            return self._copy_artifact(fields)
        return fields

    def _write_media(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        stem = f"{self._seq:012d}"
        relative = f"media/{stem}.png"
        source = fields.pop("image")
        png = source.png
        if png is None:
            from PIL import Image

            from loggerhub._normalize import decode

            array = source.array if source.array is not None else decode(source.encoded)
            with io.BytesIO() as buffer:
                # Level 1: several times faster than the default, for files a little larger.
                Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
                png = buffer.getvalue()
        (self.paths.root / relative).write_bytes(png)
        fields["file"] = relative
        pickled = fields.pop("pickled", None)
        if pickled is not None:
            fields["figure_file"] = f"media/{stem}.fig.pickle"
            (self.paths.root / fields["figure_file"]).write_bytes(pickled)
        return fields

    def _copy_artifact(self, fields: dict[str, Any]) -> dict[str, Any]:
        source = Path(fields.pop("source"))
        # One folder per record: a name logged again (last.pt every epoch) must not replace the
        # copy an earlier, still undelivered record points to.
        relative = f"artifacts/{self._seq:012d}/{fields['name']}"
        target = self.paths.root / relative
        artifacts_root = self.paths.artifacts.resolve()
        # The name was checked already; resolving catches a symlink planted inside artifacts/.
        if not target.parent.resolve().is_relative_to(artifacts_root) and target.parent.exists():
            raise ValueError(f"artifact name escapes the run directory: {fields['name']}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(artifacts_root):
            raise ValueError(f"artifact name escapes the run directory: {fields['name']}")
        # Checked again here: the file may have been replaced by a FIFO or a device since the call.
        mode = source.stat().st_mode
        if stat.S_ISDIR(mode):
            links, special = _copy_tree(source, target)
            if links:
                fields["skipped_links"] = links
            if special:
                fields["skipped_special"] = special
            size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        elif stat.S_ISREG(mode):
            shutil.copyfile(source, target)
            size = target.stat().st_size
        else:
            raise ValueError(f"not a regular file or a directory ({codec.special_kind(mode)}): {source}")
        fields.update(file=relative, is_dir=stat.S_ISDIR(mode), size=size)
        return fields


def _copy_tree(source: Path, target: Path) -> tuple[list[str], list[str]]:
    """Copy a directory, following only symlinks that stay inside it and copying only regular
    files and directories; return the symlinks skipped and the special files (FIFOs, sockets,
    devices) skipped."""
    root = source.resolve()
    links: list[str] = []
    special: list[str] = []

    def ignore(folder: str, names: list[str]) -> list[str]:
        dropped = []
        for name in names:
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                dropped.append(name)
                links.append(str(path.relative_to(source)))
                continue
            try:
                mode = path.stat().st_mode
            except OSError:  # a dangling link inside the tree
                dropped.append(name)
                links.append(str(path.relative_to(source)))
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                dropped.append(name)
                special.append(str(path.relative_to(source)))
        return dropped

    shutil.copytree(source, target, symlinks=False, ignore=ignore)
    return links, special


def _escape_surrogates(value: Any) -> Any:
    """``value`` with every string made encodable: a lone surrogate, as ``os.fsdecode`` makes
    of a non-UTF-8 file name, becomes its bytes written ``\\xe9`` (the name as ``ls -b`` shows
    it); any other lone surrogate becomes ``\\udXXX``. The record is kept, escaped."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            try:
                return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:
                return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_surrogates(item) for item in value]
    return value


class _Lost:
    """``put`` once the writer thread has died: counts what is logged instead of piling it up."""

    def __init__(self, writer: JournalWriter) -> None:
        self._writer = writer

    def __call__(self, _item: Any) -> None:
        self._writer.lost += 1


_FLUSH = "__flush__"
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The C encoder ``_encode`` builds afresh on every call, built once: a metrics line's values
# (str keys, float values) encode the same through it at a third of the cost. Without the C
# accelerator (other Pythons), the same encoder's pure-Python path.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _make_encoder is not None:
    _encode_values = _make_encoder(None, None, json.encoder.encode_basestring, None, ":", ",", False, False, True)
else:
    def _encode_values(values: dict[str, float], _level: int) -> list[str]:
        return [_encode(values)]
def _metric_fields(fields: tuple[Any, ...]) -> tuple[int, int | None, dict[str, float]]:
    """A queued metrics record: ``(step, epoch, key..., value...)`` from ``Run.log_metrics``
    (flat, so that the garbage collector can untrack it), ``(step, epoch, values)`` from the
    importers."""
    if len(fields) == 3 and type(fields[2]) is dict:
        return fields  # type: ignore[return-value]
    half = (len(fields) - 2) // 2
    return fields[0], fields[1], dict(zip(fields[2:2 + half], fields[2 + half:], strict=True))


_METRIC_LINE = '{"step":%d,"epoch":%s,"values":%s,"seq":%d,"type":"metrics","ts":%r}\n'


def _drop(_item: Any) -> None:
    warnings.warn(
        "loggerhub: a forked process logged to its parent's run; the record was dropped. "
        "Log from the parent, or call loggerhub.init() in the child.",
        RuntimeWarning,
        stacklevel=3,
    )


