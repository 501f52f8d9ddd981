"""The importer contract, and the one safe-input layer every importer reads its source through.

An importer turns another tracker's files (or server) into loggerhub runs. It is registered in
the ``loggerhub.importers`` entry-point group, under the source's name, as an :class:`Importer`
instance::

    [project.entry-points."loggerhub.importers"]
    comet = "loggerhub_comet.importer:import_runs"   # import_runs = CometImporter()

The core (``loggerhub import``) builds the importer's CLI options from :attr:`Importer.options`,
then calls :meth:`Importer.read` with a :class:`Source` and a :class:`BuilderFactory`.

Every importer treats its input as hostile. It reads through :class:`Source` (never ``open`` on a
path the input names): paths are :meth:`contained <Source.contained>` in the folder being
imported (symlinks resolved first), reads are streamed with the size caps of :class:`Limits`,
names derived from the input go through :func:`safe_name`, and a malformed item is skipped and
reported with its file and line (:meth:`Source.skip`) instead of raising. The core stages every
run and commits it with one ``rename`` (see ``loggerhub.importing``): a failed import leaves
nothing behind, and nothing the importer did not create is ever deleted or replaced.

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from loggerhub_hookspecs.records import ArtifactKind, Box, Phase, RunError, Status, TableRole

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# --------------------------------------------------------------------------- errors


class ImportRefused(Exception):
    """The whole import is refused, with a message that says why; nothing is written."""


class TooLarge(ValueError):
    """One item is over a size limit (:class:`Limits`); the item is skipped."""


class OutsideSource(ValueError):
    """The input names a file outside the folder being imported (and outside every allowed root)."""


# --------------------------------------------------------------------------- limits


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``512M``, ``4GiB``, ``100k`` or a plain number of bytes; units are powers of 1024."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 4G, 100000)")
    unit = (match.group(2) or "").lower()[:1]
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class Limits:
    """What one import may read and write. Raise any of them with ``loggerhub import --limit
    NAME=SIZE`` (or ``import_runs(..., limits=Limits(...))``)."""

    #: The largest file copied from the source into a run: an artifact, an archive member.
    file_bytes: int = 4 * GiB
    #: The largest item read into memory at once: a line of a log, a JSON document, an image,
    #: a table, an event record, a decoded tensor.
    item_bytes: int = 64 * MiB
    #: Everything one import writes into the store.
    total_bytes: int = 64 * GiB
    #: The highest compression ratio accepted for an archive member larger than ``ratio_from``:
    #: real files compress far less; a decompression bomb far more.
    ratio: int = 200
    ratio_from: int = 16 * MiB
    #: Free space an import leaves on the store's disk; it stops before going below.
    reserve_bytes: int = 256 * MiB
    #: The most files one source folder, glob or archive may hold.
    files: int = 200_000

    @classmethod
    def parse(cls, items: Iterable[str]) -> Limits:
        """``NAME=SIZE`` items (the CLI's ``--limit``) over the defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, int] = {}
        for item in items:
            name, sep, text = item.partition("=")
            if not sep or name not in known:
                raise ValueError(f"--limit takes NAME=SIZE with NAME one of {', '.join(sorted(known))}; "
                                 f"got {item!r}")
            values[name] = parse_size(text)
        return cls(**values)


# --------------------------------------------------------------------------- names


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: Any, *, fallback: str = "unnamed", length: int = 80) -> str:
    """A file name made from input: only ``[A-Za-z0-9_.-]``, never empty, never ``.`` or ``..``,
    never hidden, no separators, at most ``length`` characters."""
    normal = unicodedata.normalize("NFKC", str(text))
    name = _UNSAFE.sub("-", normal).strip("-.")[:length].strip("-.")
    return name or fallback


def source_run_id(kind: str, source_id: str, *, length: int = 60) -> str:
    """The imported run's id: a readable prefix, plus a short hash of the exact source id.

    Distinct source ids always give distinct run ids (``exp/1`` and ``exp 1``; two long ids that
    differ only at the end), and no logged run id looks like one.
    """
    digest = hashlib.sha256(f"{kind}\x00{source_id}".encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe_name(f'{kind}-{source_id}', fallback=kind, length=length)}-{digest}"


# --------------------------------------------------------------------------- containment


def contained(root: str | os.PathLike[str], path: str | os.PathLike[str],
              allow: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """``path`` (relative to ``root`` unless absolute) with every symlink resolved, if it lies
    inside ``root`` or inside one of the ``allow`` roots; :class:`OutsideSource` otherwise."""
    text = os.fspath(path)
    if "\x00" in text:
        raise OutsideSource(f"a path with NUL in it: {text!r}")
    resolved = Path(root, text).resolve()
    for base in (root, *allow):
        base_resolved = Path(base).resolve()
        if resolved == base_resolved or resolved.is_relative_to(base_resolved):
            return resolved
    raise OutsideSource(f"{text!r} is outside the folder being imported ({root})")


def contained_member(name: str) -> str:
    """An archive member's or upload's name as a relative ``/`` path that stays where it is put:
    no absolute path, drive, ``..`` or empty part (:class:`OutsideSource` otherwise)."""
    unified = str(name).replace("\\", "/")
    if "\x00" in unified or unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise OutsideSource(f"an absolute name: {name!r}")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise OutsideSource(f"a name that leaves its folder: {name!r}")
    return "/".join(parts)


# --------------------------------------------------------------------------- capped reads


_CHUNK = 1 * MiB


def read_capped(stream: IO[bytes], limit: int, what: str) -> bytes:
    """All of ``stream``, or :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{what} is larger than {limit} bytes (raise with --limit item_bytes=SIZE)")
    return data


def lines_capped(stream: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line)`` from 1; a line longer than ``limit`` is read past, never held, and
    given as ``None``. The stream is read in 1 MiB blocks (``readline`` on a zip member reads a
    long line a few hundred bytes at a time). The last line may lack its newline."""
    number = 0
    buffer = bytearray()
    skipping = False  # inside a line already over the limit
    while chunk := stream.read(_CHUNK):
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            number += 1
            too_long = skipping or end + 1 - start > limit
            yield number, None if too_long else bytes(buffer[start:end + 1])
            skipping = False
            start = end + 1
        del buffer[:start]
        if skipping or len(buffer) > limit:
            skipping = True
            buffer.clear()
    if skipping or buffer:
        yield number + 1, None if skipping else bytes(buffer)


@dataclass
class Budget:
    """What one import has written, against :attr:`Limits.total_bytes` and the free space."""

    limits: Limits
    written: int = 0

    def claim(self, folder: Path, size: int) -> None:
        """Before writing ``size`` bytes under ``folder``: refuse the import if they would pass
        the total, or leave less than the reserve free on the disk."""
        if self.written + size > self.limits.total_bytes:
            raise ImportRefused(f"the import would write more than {self.limits.total_bytes} bytes "
                                "(raise with --limit total_bytes=SIZE)")
        free = shutil.disk_usage(folder).free
        if free - size < self.limits.reserve_bytes:
            raise ImportRefused(f"not enough free space under {folder}: {free} bytes free, "
                                f"{size} needed plus {self.limits.reserve_bytes} kept free")
        self.written += size


# --------------------------------------------------------------------------- reports


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: Any, limit: int = 300) -> str:
    """Text from the input made safe for a terminal: control and bidi characters become ``?``
    (escape sequences cannot reach it), and long text is cut."""
    cleaned = _CONTROL.sub("?", str(text))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


@dataclass(frozen=True)
class Skip:
    """One item of the input that was not imported, where it is, and why."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"skipped: {where}: {self.reason}"


# --------------------------------------------------------------------------- the builder side


class RunBuilder(Protocol):
    """What an importer writes one run with (``loggerhub.importing.RunBuilder``). Every method
    takes the source's wall time ``ts``; a bad item raises ``ValueError`` (the core's
    ``InvalidInput``), which :func:`write_in_order` reports as a skip."""

    scratch: Path

    def params(self, params: Mapping[str, Any], ts: float) -> None: ...
    def metrics(self, values: Mapping[str, float], step: int, ts: float, epoch: int | None = None) -> None: ...
    def image(self, key: str, image: Any, step: int, ts: float, boxes: Iterable[Box] = (),
              caption: str | None = None, epoch: int | None = None) -> None: ...
    def figure(self, key: str, png: bytes, step: int, ts: float, epoch: int | None = None) -> None: ...
    def artifact(self, path: Path, name: str, ts: float, kind: ArtifactKind = ArtifactKind.FILE,
                 step: int = 0, checkpoint: bool = False) -> None: ...
    def text(self, key: str, text: str, step: int, ts: float) -> None: ...
    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int, ts: float,
              role: TableRole = TableRole.TABLE) -> None: ...
    def event(self, phase: Phase, step: int, ts: float, epoch: int | None = None) -> None: ...
    def system_metrics(self, values: Mapping[str, float], step: int, ts: float) -> None: ...
    def console(self, stream: str, lines: Sequence[str], step: int, ts: float) -> None: ...
    def context(self, ts: float, *, command: Sequence[str] = (), python_version: str = "",
                python_executable: str = "", hostname: str = "", os: str = "",  # noqa: A002 - the field's name
                cpu: str = "", cpu_count: int | None = None, gpus: Sequence[str] = (),
                packages: Mapping[str, str] | None = None, environment: Mapping[str, str] | None = None,
                git: Mapping[str, Any] | None = None, diff: str | bytes | None = None) -> None: ...
    def unmapped(self, reason: str, count: int = 1) -> None: ...
    def end(self, status: Status | str, ts: float, error: RunError | None = None) -> None: ...
    def __enter__(self) -> RunBuilder: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...


class BuilderFactory(Protocol):
    """What an importer calls once per source run: a builder, or None when already imported.

    :param source_id: the source's own run id; it names the imported run, so it must be stable.
    :param source_project: the source's project (used when the user gives none).
    """

    def __call__(self, *, source_id: str, name: str, started_at: float,
                 config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
                 source_project: str | None = None) -> RunBuilder | None: ...

    def unmapped(self, reason: str, count: int = 1) -> None:
        """Something found at the source that is not part of any run (a folder that is not a run)."""


# --------------------------------------------------------------------------- the source


@dataclass
class Source:
    """What an importer reads, and how it may read it.

    :param location: what the user named: a path, or a URI (MLflow).
    :param root: the folder being imported; every file read must lie inside it (or inside one of
        ``allow``). None for a source that is not a folder (a tracking server).
    :param allow: more roots the user allowed reads from (``--allow-read``); such reads are reported.
    """

    location: str
    root: Path | None
    limits: Limits = field(default_factory=Limits)
    allow: tuple[Path, ...] = ()
    budget: Budget = field(init=False)
    skips: list[Skip] = field(default_factory=list)
    #: Allowed root outside the source -> the files read under it.
    outside_reads: dict[str, set[Path]] = field(default_factory=dict)
    #: How text from the input is made printable (the core adds its secret redaction).
    clean: Callable[[str], str] = printable
    #: Where :meth:`temporary` folders go: the core sets it to the import's staging folder, on
    #: the store's disk (the system's temporary folder may be a small tmpfs).
    scratch_root: Path | None = None

    def __post_init__(self) -> None:
        self.budget = Budget(self.limits)

    # -- reports --

    def skip(self, file: str | os.PathLike[str], line: int | None, reason: object) -> None:
        """Report one item that was not imported: its file (relative to the source when inside
        it), its line or record number, and why (redacted and stripped of control characters)."""
        self.skips.append(Skip(self.clean(self._relative(file)), line, self.clean(_reason(reason))))

    def _relative(self, file: str | os.PathLike[str]) -> str:
        path = Path(file)
        if self.root is not None and path.is_absolute():
            try:
                return path.relative_to(self.root).as_posix() or path.name
            except ValueError:
                return str(path)
        return str(file)

    @contextlib.contextmanager
    def temporary(self) -> Iterator[Path]:
        """A folder for files made while reading, before any run is written; removed after."""
        folder = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.scratch_root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- paths --

    def contained(self, path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> Path:
        """``path`` resolved, if inside the source (or an allowed root, which is reported);
        relative paths are taken from ``base``, else from the source's root."""
        if self.root is None and not self.allow:
            raise OutsideSource(f"{os.fspath(path)!r}: this source has no folder; allow one with --allow-read")
        root = self.root if self.root is not None else self.allow[0]
        start = Path(base) if base is not None else root
        resolved = contained(root, Path(start, path), self.allow)
        if self.root is None or not (resolved == self.root.resolve() or resolved.is_relative_to(self.root.resolve())):
            allowed = next(str(a) for a in self.allow
                           if resolved == a.resolve() or resolved.is_relative_to(a.resolve()))
            self.outside_reads.setdefault(allowed, set()).add(resolved)
        return resolved

    def file(self, path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> Path:
        """A regular file the input names, contained and at most :attr:`Limits.file_bytes`."""
        resolved = self.contained(path, base)
        if not resolved.is_file():
            raise FileNotFoundError(f"no such file: {os.fspath(path)!r}")
        if resolved.stat().st_size > self.limits.file_bytes:
            raise TooLarge(f"{os.fspath(path)!r} is larger than {self.limits.file_bytes} bytes "
                           "(raise with --limit file_bytes=SIZE)")
        return resolved

    def tree(self, path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> Path:
        """A file or folder to import as an artifact: contained, its size and file count within
        the limits. Symlinks below it that leave it are not followed (the journal skips them)."""
        resolved = self.contained(path, base)
        if resolved.is_file():
            return self.file(resolved)
        if not resolved.is_dir():
            raise FileNotFoundError(f"no such file or folder: {os.fspath(path)!r}")
        total = count = 0
        for folder, _dirs, names in os.walk(resolved):
            for name in names:
                count += 1
                child = Path(folder, name)
                if child.is_symlink() and not child.resolve().is_relative_to(resolved):
                    continue
                total += child.stat().st_size if child.exists() else 0
            if count > self.limits.files or total > self.limits.file_bytes:
                raise TooLarge(f"{os.fspath(path)!r} holds more than {self.limits.files} files or "
                               f"{self.limits.file_bytes} bytes (raise with --limit)")
        return resolved

    # -- reads --

    def read_bytes(self, path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> bytes:
        """A contained file read into memory, at most :attr:`Limits.item_bytes`."""
        resolved = self.contained(path, base)
        with resolved.open("rb") as handle:
            return read_capped(handle, self.limits.item_bytes, os.fspath(path))

    def lines(self, path: Path) -> Iterator[tuple[int, bytes]]:
        """The lines of a contained text file, each at most :attr:`Limits.item_bytes`; an
        over-long line is skipped and reported."""
        resolved = self.contained(path)
        with resolved.open("rb") as handle:
            for number, line in lines_capped(handle, self.limits.item_bytes):
                if line is None:
                    self.skip(path, number, f"a line longer than {self.limits.item_bytes} bytes "
                                            "(raise with --limit item_bytes=SIZE)")
                else:
                    yield number, line

    def zip_member(self, archive: zipfile.ZipFile, name: str) -> bytes:
        """One archive member read into memory, capped at :attr:`Limits.item_bytes` whatever its
        header claims."""
        with archive.open(name) as member:
            return read_capped(member, self.limits.item_bytes, f"{name!r} in {archive.filename}")

    def extract(self, archive: zipfile.ZipFile, name: str, target: Path) -> None:
        """Stream one archive member to ``target`` (a path the importer built, under its
        scratch folder), checking its size, compression ratio and the free space first, and
        counting the bytes as they come."""
        info = archive.getinfo(name)
        limits = self.limits
        if info.file_size > limits.file_bytes:
            raise TooLarge(f"{name!r} is {info.file_size} bytes, over {limits.file_bytes} "
                           "(raise with --limit file_bytes=SIZE)")
        if info.file_size > limits.ratio_from and info.file_size > limits.ratio * max(info.compress_size, 1):
            raise TooLarge(f"{name!r} inflates {info.file_size // max(info.compress_size, 1)} times "
                           f"(a decompression bomb?); the limit is {limits.ratio} (--limit ratio=N)")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.budget.claim(target.parent, info.file_size)
        written = 0
        with archive.open(info) as member, target.open("xb") as out:
            while chunk := member.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size or written > limits.file_bytes:
                    # The header lied: stop at what it claimed.
                    raise TooLarge(f"{name!r} inflates beyond the size its header gives")
                out.write(chunk)

    def report_lines(self) -> list[str]:
        """What the core prints after an import, besides what each run reports."""
        lines = [f"read outside the source (allowed by --allow-read {root}): {len(files)} files"
                 for root, files in sorted(self.outside_reads.items())]
        return lines + [str(skip) for skip in self.skips]


def _reason(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


# --------------------------------------------------------------------------- ordering


Emit = Callable[[Any, int, float], None]  # (builder, step, ts)


@dataclass(order=True)
class Pending:
    """One record an importer will write: ordered by source time, then step, then reading order.

    :param auto_step: the source has no step for it: loggerhub's rule gives one (metrics one
        more than the highest step so far, anything else the highest so far).
    :param where: the file and line (or record) it came from, for the report when it is refused.
    """

    ts: float
    step: int
    order: int
    emit: Emit = field(compare=False)
    auto_step: bool = field(default=False, compare=False)
    metrics: bool = field(default=False, compare=False)
    where: tuple[str, int | None] = field(default=("", None), compare=False)


def write_in_order(items: list[Pending], builder: RunBuilder, source: Source) -> None:
    """Write the items in order; an item the builder refuses (or that fails to read) is skipped
    and reported with its file and line, and never stops the others."""
    highest = -1
    for item in sorted(items):
        step = item.step
        if item.auto_step:
            step = highest + 1 if item.metrics else max(highest, 0)
        try:
            item.emit(builder, step, item.ts)
        except (ImportRefused, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 - one hostile item must not stop the import
            source.skip(item.where[0], item.where[1], error)
            continue
        highest = max(highest, step)


def write_metrics(builder: RunBuilder, values: Mapping[str, float], step: int, ts: float, source: Source,
                  where: tuple[str, int | None], epoch: int | None = None) -> None:
    """One metrics record; if the builder refuses it, each value is tried on its own, so that one
    bad key (too long, say) costs only itself, and is reported."""
    try:
        builder.metrics(values, step, ts, epoch=epoch)
    except (ImportRefused, MemoryError):
        raise
    except Exception:  # noqa: BLE001 - find the values at fault below
        if len(values) == 1:
            raise
        for key, value in values.items():
            try:
                builder.metrics({key: value}, step, ts, epoch=epoch)
            except (ImportRefused, MemoryError):
                raise
            except Exception as error:  # noqa: BLE001 - reported, the others are written
                source.skip(where[0], where[1], f"metric {str(key)[:80]!r}: {_reason(error)}")


# --------------------------------------------------------------------------- importers


@dataclass(frozen=True)
class Option:
    """One CLI option of an importer: ``--run-id`` for ``name="run_id"``."""

    name: str
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Importer:
    """Base of every importer. A subclass sets :attr:`name`, declares its :attr:`options`, and
    implements :meth:`read`.

    .. versionadded:: 0.2
    """

    #: The source's name: ``loggerhub import NAME``.
    name: ClassVar[str] = ""
    #: Its own CLI options; their values reach :meth:`read` as ``options``.
    options: ClassVar[tuple[Option, ...]] = ()
    #: What the location argument is, for ``--help``.
    location_help: ClassVar[str] = "what to import"
    #: The option that may stand for the location argument (MLflow's ``tracking_uri``).
    location_option: ClassVar[str | None] = None

    def source(self, location: str, limits: Limits, allow: Sequence[Path], options: Mapping[str, Any]) -> Source:
        """The :class:`Source` for ``location``: by default a path, whose folder (or the folder
        holding the file) is the root every read stays in."""
        path = Path(location).expanduser().absolute()
        root = path if path.is_dir() else path.parent
        return Source(location, root, limits, tuple(Path(a).expanduser().absolute() for a in allow))

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse options this importer does not declare."""
        unknown = sorted(set(options) - {o.name for o in self.options})
        if unknown:
            known = ", ".join(o.name for o in self.options) or "none"
            raise TypeError(f"unknown {self.name} import options {unknown}; known: {known}")

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        """Call ``builder_factory`` once per source run and describe the run to its builder.

        Must not raise on malformed input except :class:`ImportRefused` (or ``FileNotFoundError``
        / ``LookupError`` when there is nothing to import); skip and :meth:`Source.skip` instead.
        """
        raise NotImplementedError


def open_zip(path: Path, source: Source) -> zipfile.ZipFile:
    """An archive opened for reading, refused when it lists more than :attr:`Limits.files` members."""
    archive = zipfile.ZipFile(path)
    if len(archive.infolist()) > source.limits.files:
        archive.close()
        raise TooLarge(f"{path.name} lists more than {source.limits.files} members")
    return archive
