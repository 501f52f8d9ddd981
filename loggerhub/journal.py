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
``flush_interval`` seconds. A line is only ever appended whole, so a reader skips a torn last line
left by a killed process.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loggerhub_hookspecs import (
    ArtifactKind,
    ArtifactRecord,
    Box,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    Phase,
    RunInfo,
    Status,
    TableRecord,
    TableRole,
    TextRecord,
)

SEGMENT_BYTES = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024
JOURNAL_VERSION = 1

# Record types as written in the journal's "type" field.
RUN_START = "run_start"
RUN_RESUME = "run_resume"
RUN_END = "run_end"
PARAMS = "params"
METRICS = "metrics"
IMAGE = "image"
FIGURE = "figure"
ARTIFACT = "artifact"
CHECKPOINT = "checkpoint"
TEXT = "text"
TABLE = "table"
EVENT = "event"
REJECTED = "rejected"


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

    def acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
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
    """Reads records in seq order, from any position, and can follow a live journal."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.paths = RunPaths(run_dir)
        self._segment: Path | None = None
        self._position = 0
        self._pending = b""

    def entries(self, after: int = -1) -> Iterator[Entry]:
        """Every complete record with ``seq > after`` written so far. Call again to continue."""
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
                self._segment, self._position, self._pending = segment, 0, b""
            with segment.open("rb") as handle:
                handle.seek(self._position)
                # Bounded reads: a backlog of any size costs READ_CHUNK of memory, not its size.
                while chunk := handle.read(READ_CHUNK):
                    self._position += len(chunk)
                    lines = (self._pending + chunk).split(b"\n")
                    # The last piece is a line still being written (or torn by a kill): keep it.
                    self._pending = lines.pop()
                    for line in lines:
                        if not line:
                            continue
                        raw = json.loads(line)
                        if raw["seq"] > after:
                            yield Entry(raw["seq"], raw["type"], raw)

    def last_seq(self) -> int:
        last = -1
        for entry in JournalReader(self.paths.root).entries():
            last = entry.seq
        return last


# --------------------------------------------------------------------------- decoding


def run_info(start: dict[str, Any], run_dir: Path, options: dict[str, Any]) -> RunInfo:
    """The RunInfo a backend sees, from the run_start record and that backend's options."""
    return RunInfo(
        run_id=start["run_id"],
        project=start["project"],
        name=start["name"],
        dir=run_dir,
        config=start.get("config", {}),
        started_at=start["ts"],
        tags=start.get("tags", {}),
        options=options,
    )


def metric_points(entry: Entry) -> list[MetricPoint]:
    data = entry.data
    step, ts, epoch = data["step"], data["ts"], data.get("epoch")
    return [MetricPoint(key, float(value), step, ts, epoch) for key, value in data["values"].items()]


def decode(entry: Entry, run_dir: Path) -> Any:
    """The typed record for a data or lifecycle entry (see ``loggerhub_hookspecs.records``)."""
    d = entry.data
    kind = entry.type
    if kind == METRICS:
        return metric_points(entry)
    if kind == PARAMS:
        return d["params"]
    if kind == IMAGE:
        return ImageRecord(
            key=d["key"], path=run_dir / d["file"], width=d["width"], height=d["height"],
            step=d["step"], timestamp=d["ts"], epoch=d.get("epoch"), caption=d.get("caption"),
            boxes=tuple(Box(*b) for b in d.get("boxes", ())),
        )
    if kind == FIGURE:
        figure_file = d.get("figure_file")
        return FigureRecord(
            key=d["key"], path=run_dir / d["file"], width=d["width"], height=d["height"],
            step=d["step"], timestamp=d["ts"], epoch=d.get("epoch"),
            figure_path=run_dir / figure_file if figure_file else None,
        )
    if kind in (ARTIFACT, CHECKPOINT):
        return ArtifactRecord(
            name=d["name"], path=run_dir / d["file"], kind=ArtifactKind(d["kind"]),
            is_dir=d["is_dir"], size=d["size"], step=d["step"], timestamp=d["ts"],
        )
    if kind == TEXT:
        return TextRecord(key=d["key"], text=d["text"], step=d["step"], timestamp=d["ts"])
    if kind == TABLE:
        return TableRecord(
            key=d["key"], columns=tuple(d["columns"]), rows=tuple(tuple(r) for r in d["rows"]),
            step=d["step"], timestamp=d["ts"], role=TableRole(d.get("role", "table")),
        )
    if kind == EVENT:
        return LifecycleEvent(Phase(d["phase"]), d["step"], d["ts"], d.get("epoch"))
    if kind == RUN_END:
        return Status(d["status"])
    raise ValueError(f"not a data record: {kind}")


# --------------------------------------------------------------------------- writing


class JournalWriter:
    """Appends records to a run's journal from a background thread.

    ``put`` is the only call on the training loop's path: a ``deque.append`` of a tuple
    ``(type, timestamp, fields)``. Everything slow happens in the thread.
    """

    def __init__(self, paths: RunPaths, next_seq: int, flush_interval: float, on_error: Any) -> None:
        self.paths = paths
        self._seq = next_seq
        self._flush_interval = flush_interval
        self._queue: deque[Any] = deque()
        self.put = self._queue.append
        self._wake = threading.Event()
        self._closing = False
        self._on_error = on_error
        self._handle: io.BufferedWriter | None = None
        self._segment_size = 0
        self._counts: dict[str, int] = {}
        self._metric_records = 0
        self._thread = threading.Thread(target=self._loop, name="loggerhub-journal", daemon=True)
        self._thread.start()

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def counts(self) -> dict[str, int]:
        """Records written, by type."""
        counts = dict(self._counts)
        if self._metric_records:
            counts[METRICS] = self._metric_records
        return counts

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything put before this call is written and fsynced."""
        if not self._thread.is_alive():
            return not self._queue
        done = threading.Event()
        self._queue.append((_FLUSH, 0.0, done))
        self._wake.set()
        return done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._closing = True
        self._wake.set()
        self._thread.join()
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def abandon_after_fork(self) -> None:
        """In a forked child: the thread did not survive the fork; drop what the parent queued."""
        self._queue = deque()
        self.put = _drop
        self._closing = True

    # -- thread side ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            closing = self._closing
            self._drain()
            if closing:
                return

    def _drain(self) -> None:
        queue = self._queue
        lines: list[bytes] = []
        while True:
            try:
                kind, ts, fields = queue.popleft()
            except IndexError:
                break
            if kind is _FLUSH:
                self._write(lines)
                lines = []
                if self._handle is not None:
                    os.fsync(self._handle.fileno())
                fields.set()
                continue
            if kind is METRICS:
                # Most of the journal, and in the trainer's process: formatted directly, the same
                # JSON as the general path below at about half the cost.
                step, epoch, values = fields
                lines.append((_METRIC_LINE % (step, "null" if epoch is None else epoch, _encode(values),
                                              self._seq, ts)).encode())
                self._seq += 1
                self._metric_records += 1
                continue
            try:
                record = self._materialise(kind, fields)
            except Exception as error:  # noqa: BLE001 - a bad item must not stop the journal
                record = {"api": kind, "reason": f"{type(error).__name__}: {error}"}
                kind = REJECTED
                self._on_error(record["reason"])
            record["seq"] = self._seq
            record["type"] = kind
            record["ts"] = ts
            self._seq += 1
            self._counts[kind] = self._counts.get(kind, 0) + 1
            lines.append(_encode(record).encode())
        self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        handle = self._handle
        if handle is None or self._segment_size >= SEGMENT_BYTES:
            if handle is not None:
                handle.close()
            first_seq = json.loads(lines[0])["seq"]
            handle = self._handle = (self.paths.journal / f"{first_seq:012d}.jsonl").open("ab")
            self._segment_size = 0
        payload = b"\n".join(lines) + b"\n"
        handle.write(payload)
        handle.flush()
        self._segment_size += len(payload)

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
        if source.is_dir():
            skipped = _copy_tree(source, target)
            if skipped:
                fields["skipped_links"] = skipped
            size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        else:
            shutil.copyfile(source, target)
            size = target.stat().st_size
        fields.update(file=relative, is_dir=source.is_dir(), size=size)
        return fields


def _copy_tree(source: Path, target: Path) -> list[str]:
    """Copy a directory, following only symlinks that stay inside it; return those skipped."""
    root = source.resolve()
    skipped: list[str] = []

    def ignore(folder: str, names: list[str]) -> list[str]:
        dropped = []
        for name in names:
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                dropped.append(name)
                skipped.append(str(path.relative_to(source)))
        return dropped

    shutil.copytree(source, target, symlinks=False, ignore=ignore)
    return skipped


_FLUSH = "__flush__"
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_METRIC_LINE = '{"step":%d,"epoch":%s,"values":%s,"seq":%d,"type":"metrics","ts":%r}'


def _drop(_item: Any) -> None:
    warnings.warn(
        "loggerhub: a forked process logged to its parent's run; the record was dropped. "
        "Log from the parent, or call loggerhub.init() in the child.",
        RuntimeWarning,
        stacklevel=3,
    )


