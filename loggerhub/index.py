"""The run index: one small sqlite file per machine that lists the runs of a store without reading
every journal on every command.

It is a cache, never a source of truth: each row is derived from a run directory, carries the
signature it was derived from, and is checked against that directory on every use. What a
listing costs:

* one ``os.scandir`` of the store and of each project folder (the run directories, with inodes);
* one ``stat`` of each run's ``run.json`` (its ``mtime_ns`` and size): a run whose run.json changed
  (a status written at finish, ``sync`` ending a crashed run, a resume, an import) is read again;
* for the runs that have not ended only, a listing of ``journal/`` and a ``stat`` of its last
  segment, and a probe of ``run.lock`` (is someone still logging it, or did it crash?).

A run is read from where its row stopped (segment and byte offset), so a live run costs what it
appended since the last listing. A run directory replaced by another one of the same name (a new
inode, or a journal shorter than what was read) is read again from its start.

Where the file lives, and the locking it relies on (docs/journal.md, "The run store"):
``<store>/.loggerhub-index/<host>.sqlite``, one file per machine, in sqlite's rollback-journal mode
(not WAL, whose shared memory does not work on network filesystems) with a busy timeout. Only the
processes of one machine ever open one file, so sqlite's POSIX locks only have to work between
processes of one kernel, which they do on a local disk and on NFS (even mounted ``nolock``, where
locks are local to the client). A file that cannot be read as an index (garbage, truncated, an
older schema) is deleted and rebuilt; a store that cannot be written (read-only, or the lock is
held past the timeout) is listed from a scan kept in memory. Losing the file loses nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loggerhub import codec

#: The folder in the store that holds the index files (skipped when looking for projects).
INDEX_DIR = ".loggerhub-index"
#: Bumped when the table changes: a file with another version is rebuilt.
SCHEMA_VERSION = 1
#: How long a command waits for another process of this machine to finish writing the index.
BUSY_TIMEOUT_SECONDS = 10.0
READ_CHUNK = 1024 * 1024
_decode = json.JSONDecoder().decode  # json.loads less its per-call checks: a cold index reads every line


@dataclass
class IndexedRun:
    """One run as the index knows it. ``status`` is the journal's, with CRASHED for a run that has
    no run_end and that no process is logging any more (``loggerhub sync`` ends it)."""

    #: the store, and the run directory in it as ``<project folder>/<run folder>``
    root: Path
    path: str
    run_id: str
    project: str
    name: str
    status: str
    started_at: float
    ended_at: float | None
    #: metric values in the journal (``log_metrics`` scalars, not system metrics)
    points: int
    #: image and figure records
    media: int
    #: artifact and checkpoint records
    artifacts: int
    #: the run's group (``per_rank=True`` runs of one distributed job) and its rank, or None
    group: str | None = None
    rank: int | None = None

    @property
    def dir(self) -> Path:
        """The run directory (made on demand: a listing of 10,000 runs need not build 10,000 Paths)."""
        return self.root / self.path


# Columns of the table, in order; the last ones are the row's signature and read position.
_RUN_COLUMNS = ("path", "run_id", "project", "name", "status", "started_at", "ended_at", "points",
                "media", "artifacts", "run_group", "rank")
_STATE_COLUMNS = ("inode", "summary_sig", "segment", "offset", "ended")
_COLUMNS = _RUN_COLUMNS + _STATE_COLUMNS
# Built from this module's own column names, never from input.
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM runs"  # noqa: S608
_UPSERT = f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    path TEXT PRIMARY KEY, run_id TEXT, project TEXT, name TEXT, status TEXT, started_at REAL,
    ended_at REAL, points INTEGER, media INTEGER, artifacts INTEGER, run_group TEXT, rank INTEGER,
    inode INTEGER, summary_sig TEXT, segment TEXT, offset INTEGER, ended INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_group ON runs (run_group);
PRAGMA user_version = {SCHEMA_VERSION};
"""


@dataclass
class _Row:
    """A row of the table while it is brought up to date."""

    path: str
    run_id: str
    project: str
    name: str
    status: str = "RUNNING"
    started_at: float = 0.0
    ended_at: float | None = None
    points: int = 0
    media: int = 0
    artifacts: int = 0
    run_group: str | None = None
    rank: int | None = None
    inode: int = 0
    summary_sig: str | None = None
    #: the journal segment read last and the byte offset just past its last whole line
    segment: str | None = None
    offset: int = 0
    #: the journal's last lifecycle record is a run_end
    ended: bool = False

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _COLUMNS)


class RunIndex:
    """The runs under a store, kept in the machine's index file.

    ``RunIndex(store).runs(project=None, group=None)``: every run, oldest first, brought up to date
    with the directories first. Safe to use from many processes at once; never raises for the
    index file itself (a file that cannot be used is rebuilt, or replaced by one in memory).
    """

    def __init__(self, root: str | os.PathLike[str], *, host: str | None = None) -> None:
        self.root = Path(root)
        self.path = self.root / INDEX_DIR / f"{_safe(host or socket.gethostname())}.sqlite"
        #: True when the last refresh could not keep its result in the file (read-only store, or
        #: another process held the lock past the timeout): the listing came from a scan.
        self.in_memory = False

    def runs(self, project: str | None = None, group: str | None = None) -> list[IndexedRun]:
        return [run for run in self.refresh()
                if (project is None or run.project == project) and (group is None or run.group == group)]

    def refresh(self) -> list[IndexedRun]:
        """Bring the index up to date with the store; every run, oldest first."""
        if not self.root.is_dir():
            return []
        rows = self._load()
        current: dict[str, _Row] = {}
        changed: list[_Row] = []
        for project_entry in _scandir(self.root):
            if project_entry.name == INDEX_DIR or not _is_dir(project_entry):
                continue
            for entry in _scandir(project_entry.path):
                if not _is_dir(entry):
                    continue
                key = f"{project_entry.name}/{entry.name}"
                row = _update(rows.get(key), key, entry)
                if row is None:
                    continue
                current[key] = row
                if row is not rows.get(key):
                    changed.append(row)
        gone = [key for key in rows if key not in current]
        if changed or gone:
            self._save(changed, gone)
        ordered = sorted(current.values(), key=lambda r: (r.started_at, r.path))
        return [self._public(row) for row in ordered]

    # -- the file ----------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(exist_ok=True)
        # isolation_level=None: transactions are begun explicitly, IMMEDIATE for writes, so two
        # writers wait for each other (busy timeout) instead of failing to upgrade a read lock.
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            # Rollback journal, never WAL: WAL's shared-memory index breaks on network filesystems.
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    db.execute("DROP TABLE IF EXISTS runs")
                    db.executescript(_SCHEMA)  # commits
                else:
                    db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _load(self) -> dict[str, _Row]:
        self.in_memory = False
        if not self.path.exists():
            return {}  # made by the first listing that finds a run: --dir pointing elsewhere leaves no file
        for attempt in range(2):
            try:
                db = self._connect()
                try:
                    found = db.execute(_SELECT).fetchall()
                finally:
                    db.close()
                rows = {values[0]: _Row(*values) for values in found}
                for row in rows.values():
                    row.ended = bool(row.ended)  # stored as an integer
                return rows
            except sqlite3.OperationalError:
                break  # read-only, or locked for longer than the timeout: scan without the file
            except (sqlite3.DatabaseError, TypeError, ValueError):
                # Not an index (garbage, truncated, hand-edited): a cache, so thrown away.
                if attempt == 0 and not _unlink(self.path):
                    break
            except OSError:
                break  # the index folder cannot be made: a read-only store
        self.in_memory = True
        return {}

    def _save(self, changed: list[_Row], gone: list[str]) -> None:
        if self.in_memory:
            return
        try:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("DELETE FROM runs WHERE path = ?", ((key,) for key in gone))
                db.executemany(_UPSERT, (row.values() for row in changed))
                db.execute("COMMIT")
            finally:
                db.close()
        except (sqlite3.DatabaseError, OSError):
            # Not kept this time; the listing is right all the same, and the next one tries again.
            self.in_memory = True

    def _public(self, row: _Row) -> IndexedRun:
        status = row.status
        if status == "RUNNING" and not is_live(f"{self.root}{os.sep}{row.path}{os.sep}run.lock"):
            status = "CRASHED"
        return IndexedRun(
            root=self.root, path=row.path, run_id=row.run_id, project=row.project, name=row.name,
            status=status, started_at=row.started_at, ended_at=row.ended_at, points=row.points,
            media=row.media, artifacts=row.artifacts, group=row.run_group, rank=row.rank,
        )


def is_live(lock: str | Path) -> bool:
    """True while a process holds the run's lock (it is logging the run). A shared, non-blocking
    probe on a read-only descriptor: works in a store this user cannot write."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's lock
    return False


# --------------------------------------------------------------------------- one run


def _update(row: _Row | None, key: str, entry: os.DirEntry[str]) -> _Row | None:
    """``row`` if it still describes the run directory ``entry``, else a row brought up to date
    from the directory; None when the directory is not a run (it has no journal folder)."""
    try:
        inode = entry.inode()
    except OSError:
        return None
    run_dir = entry.path  # strings, not Paths, in this loop: it runs once per run per listing
    journal = run_dir + os.sep + "journal"
    summary_sig = _signature(run_dir + os.sep + "run.json")
    if row is not None and row.inode == inode:
        if row.summary_sig == summary_sig and row.ended:
            return row  # the common case: an ended run nobody touched, one stat
        segments = _segments(journal)
        if segments is None:
            return None
        fresh = replace(row)
        if not _grew(journal, row, segments):
            if row.summary_sig == summary_sig:
                return row
            fresh.summary_sig = summary_sig  # e.g. run.json written at finish after run_end
            return fresh
    else:
        segments = _segments(journal)
        if segments is None:
            return None
        project, _, name = key.partition("/")
        fresh = _Row(path=key, run_id=name, project=project, name=name, inode=inode)
        if _from_ending(fresh, run_dir, journal, segments):
            fresh.summary_sig = summary_sig
            return fresh
    fresh.summary_sig = summary_sig
    if not _read(fresh, journal, segments):
        # The journal is not the one this row was read from (the directory was replaced): again.
        project, _, name = key.partition("/")
        fresh = _Row(path=key, run_id=name, project=project, name=name, inode=inode, summary_sig=summary_sig)
        _read(fresh, journal, segments)
    if fresh.started_at == 0.0:
        _from_summary(fresh, run_dir)
    return fresh


def _signature(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_mtime_ns}:{st.st_size}"


def _segments(journal: str) -> list[str] | None:
    try:
        return sorted(e.name for e in _scandir(journal, strict=True) if e.name.endswith(".jsonl"))
    except OSError:
        return None


def _grew(journal: str, row: _Row, segments: list[str]) -> bool:
    if not segments:
        return row.segment is not None
    if segments[-1] != row.segment:
        return True
    try:
        return os.stat(os.path.join(journal, segments[-1])).st_size != row.offset
    except OSError:
        return True


def _read(row: _Row, journal: str, segments: list[str]) -> bool:
    """Read the records after the row's position into it. False when the position is not in this
    journal (its segment is gone or shorter than what was read)."""
    if row.segment is not None:
        if row.segment not in segments:
            return False
        segments = segments[segments.index(row.segment):]
    for name in segments:
        start = row.offset if name == row.segment else 0
        try:
            with open(os.path.join(journal, name), "rb") as handle:
                if handle.seek(0, os.SEEK_END) < start:
                    return False
                handle.seek(start)
                pending = b""
                while chunk := handle.read(READ_CHUNK):
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()  # a line still being written, or torn by a kill
                    for line in lines:
                        start += len(line) + 1
                        if line:
                            _add(row, line)
                    # The position moves with what was counted, so a read cut short by an error
                    # continues from here next time rather than counting records twice.
                    row.segment, row.offset = name, start
                row.segment, row.offset = name, start
        except OSError:
            return True  # gone while read: the next listing sees what replaced it
    return True


def _add(row: _Row, line: bytes) -> None:
    """One journal line into the row: what ``RunSummary.add`` does, for the columns listed."""
    try:
        data = _decode(line.decode())
        kind = data["type"]
        if kind == codec.METRICS:
            row.points += len(data["values"])
        elif kind in (codec.IMAGE, codec.FIGURE):
            row.media += 1
        elif kind in (codec.ARTIFACT, codec.CHECKPOINT):
            row.artifacts += 1
        elif kind == codec.RUN_START:
            row.run_id, row.name, row.project = str(data["run_id"]), str(data["name"]), str(data["project"])
            row.started_at = float(data["ts"])
            group, rank = data.get("group"), data.get("rank")
            row.run_group = None if group is None else str(group)
            row.rank = rank if isinstance(rank, int) else None
        elif kind == codec.RUN_RESUME:
            row.status, row.ended_at, row.ended = "RUNNING", None, False
        elif kind == codec.RUN_END:
            row.status, row.ended_at, row.ended = str(data["status"]), float(data["ts"]), True
    except Exception:  # noqa: BLE001, S110 - not a record (JournalReader reports those): skipped
        pass


def _from_ending(row: _Row, run_dir: str, journal: str, segments: list[str]) -> bool:
    """A run not in the index yet that ``finish()`` ended whole: its row from run.json, which
    ``finish`` writes after the journal's last record, with the counts the writer kept, so that a
    first listing of a large store does not read every journal. False (read the journal) for
    anything else: a run still open, ended by ``sync``, degraded, or written by an older version."""
    try:
        summary = json.loads(Path(run_dir, "run.json").read_text(encoding="utf-8"))
        counts, points = summary["counts"], summary["points"]
        if (summary["status"] not in _ENDED or summary.get("degraded") or summary.get("lost")
                or not isinstance(points, int) or not isinstance(counts, dict) or not segments):
            return False
        size = os.stat(os.path.join(journal, segments[-1])).st_size
        row.run_id, row.name, row.project = str(summary["run_id"]), str(summary["name"]), str(summary["project"])
        row.status, row.started_at, row.ended_at = str(summary["status"]), float(summary["started_at"]), \
            float(summary["ended_at"])
        row.points = points
        row.media = int(counts.get(codec.IMAGE, 0)) + int(counts.get(codec.FIGURE, 0))
        row.artifacts = int(counts.get(codec.ARTIFACT, 0)) + int(counts.get(codec.CHECKPOINT, 0))
        group, rank = summary.get("group"), summary.get("rank")
        row.run_group = None if group is None else str(group)
        row.rank = rank if isinstance(rank, int) else None
    except (OSError, ValueError, TypeError, KeyError):
        return False
    row.segment, row.offset, row.ended = segments[-1], size, True
    return True


_ENDED = frozenset({"FINISHED", "FAILED", "KILLED"})


def _from_summary(row: _Row, run_dir: str) -> None:
    """A run with no run_start in its journal yet (being created, or an older layout): what its
    run.json says, else the time its journal folder was made."""
    try:
        summary = json.loads(Path(run_dir, "run.json").read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise TypeError("run.json is not an object")
    except (OSError, ValueError, TypeError):
        summary = {}
    try:
        row.started_at = float(summary["started_at"])
    except (KeyError, TypeError, ValueError):
        try:
            row.started_at = os.stat(os.path.join(run_dir, "journal")).st_mtime
        except OSError:
            row.started_at = 0.0
    if summary.get("group") is not None:
        row.run_group = str(summary["group"])
        rank = summary.get("rank")
        row.rank = rank if isinstance(rank, int) else None


def _scandir(path: str | Path, *, strict: bool = False) -> Iterable[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        if strict:
            raise
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks, as a glob of the store does
    except OSError:
        return False


def _unlink(path: Path) -> bool:
    for leftover in (path, path.with_name(path.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            try:
                leftover.unlink()
            except OSError:
                return False
    return True


def _safe(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", host).strip("-.") or "host"
