"""The typed, immutable records that loggerhub hands to tracker plugins.

Every record comes out of the run's journal, so a plugin sees the same record whether it is
delivered live, re-delivered by ``loggerhub sync`` after a crash, or replayed from an imported run.

Step model, shared by all records: ``step`` is an integer ``>= 0``; ``timestamp`` is wall-clock
seconds since the epoch when the value was logged; ``epoch`` is optional and set only when the
logger knew it.

Keys are canonical: any non-empty string, with ``/`` grouping (``train/loss``). A plugin maps
canonical keys to what its tracker accepts; it never receives a key it has to validate itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

#: A parameter value after normalisation: JSON scalars, or a list of them.
ParamValue = Union[str, int, float, bool, None, list[Any]]


class Status(str, enum.Enum):
    """How a run ended. The same three values in every tracker."""

    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class ArtifactKind(str, enum.Enum):
    """What an artifact is, so that a tracker can use its native view (a model registry, say)."""

    MODEL = "model"
    DATASET = "dataset"
    FILE = "file"


class Unsupported(Exception):
    """Raised by a plugin for a kind of record its tracker has no place for.

    The delivery worker counts the record as skipped for that tracker, by kind, and goes on: the
    count shows in the run's summary, in ``loggerhub show`` and (per backend) in
    ``loggerhub backends``. The record stays in the journal.
    """


class Rejected(Exception):
    """Raised by a plugin when its tracker can never accept a record.

    The delivery worker does not retry a rejected record: it files it in the consumer's
    ``rejected.jsonl`` beside the journal (so nothing is lost) and moves on. Any other exception
    counts as transient and is retried with backoff.
    """


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The run a consumer delivers, as recorded in its journal.

    :param run_id: loggerhub's id of the run; stable across resumes and replays.
    :param project: the project the run belongs to.
    :param name: the human-readable run name.
    :param dir: the run directory (the journal).
    :param config: the run's configuration as passed to ``init``, flattened and redacted.
    :param started_at: wall time the run started, seconds since the epoch.
    :param tags: free-form string tags.
    :param options: this plugin's options (tracking URI, mode, ...), never secrets: a plugin reads
        credentials from its tracker's own environment variables.
    :param group: the group of runs this run belongs to (one run per rank of a distributed job,
        ``per_rank=True``), or ``None``. Runs of one group share it exactly; a plugin delivers them
        as its tracker groups runs (a parent run, a group field, a subdirectory).
    :param rank: this run's rank in its group (``RANK``), or ``None`` outside a group.
    :param world_size: the number of ranks in the group (``WORLD_SIZE``), or ``None``.

    .. versionchanged:: 0.3 ``group``, ``rank`` and ``world_size``.
    """

    run_id: str
    project: str
    name: str
    dir: Path
    config: Mapping[str, ParamValue]
    started_at: float
    tags: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None
    rank: int | None = None
    world_size: int | None = None


@dataclass(frozen=True, slots=True)
class RunError:
    """Why a run ended FAILED or KILLED, as journaled when it ended.

    :param type: the exception's class name (``ValueError``), or a cause such as ``Crashed``.
    :param message: the exception's message, with secrets redacted.
    :param traceback: the last frames of the traceback, short and redacted; may be empty.
    """

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One scalar: ``value`` of ``key`` at ``step``. ``value`` may be NaN or +/-inf."""

    key: str
    value: float
    step: int
    timestamp: float
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class Box:
    """A bounding box in pixel coordinates of its image, corners ``(x0, y0)``-``(x1, y1)``."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str | None = None
    score: float | None = None
    class_id: int | None = None


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A PNG image in the run directory, with optional boxes."""

    key: str
    path: Path
    width: int
    height: int
    step: int
    timestamp: float
    boxes: tuple[Box, ...] = ()
    epoch: int | None = None
    caption: str | None = None

    def png_bytes(self) -> bytes:
        """The encoded PNG."""
        return self.path.read_bytes()


@dataclass(frozen=True, slots=True)
class FigureRecord:
    """A plot, rendered once to PNG when it was logged.

    ``figure_path`` is set when the plot was logged from a live matplotlib figure: the figure was
    pickled beside the PNG, so that a tracker with a native figure view can use the real object.
    """

    key: str
    path: Path
    width: int
    height: int
    step: int
    timestamp: float
    figure_path: Path | None = None
    epoch: int | None = None

    def png_bytes(self) -> bytes:
        """The rendered PNG."""
        return self.path.read_bytes()

    def load_figure(self) -> Any | None:
        """The source matplotlib figure, or None when the plot was logged as a PNG file."""
        if self.figure_path is None:
            return None
        import pickle

        # Only loggerhub itself writes these files, into the run directory, from a live figure;
        # importers never create them.
        with self.figure_path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A file or directory, copied into the run directory when it was logged.

    :param name: the artifact's relative, ``/``-separated name; never absolute, never ``..``.
    :param path: the copy in the run directory.
    """

    name: str
    path: Path
    kind: ArtifactKind
    is_dir: bool
    size: int
    step: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class TextRecord:
    """A piece of text under ``key``."""

    key: str
    text: str
    step: int
    timestamp: float


class TableRole(str, enum.Enum):
    """What a table means, so that trackers with a native view for it can use that view."""

    TABLE = "table"
    #: ``columns`` are the class labels; ``rows[i][j]`` counts true class i predicted as class j.
    CONFUSION_MATRIX = "confusion_matrix"


@dataclass(frozen=True, slots=True)
class TableRecord:
    """A small table: a header and rows of JSON scalars."""

    key: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    step: int
    timestamp: float
    role: TableRole = TableRole.TABLE


class Phase(str, enum.Enum):
    """The trainer lifecycle boundaries that reach plugins as :class:`LifecycleEvent`."""

    TRAIN_START = "train_start"
    TRAIN_END = "train_end"
    EPOCH_START = "epoch_start"
    EPOCH_END = "epoch_end"
    STEP_START = "step_start"
    STEP_END = "step_end"
    VALIDATION_END = "validation_end"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """A lifecycle boundary of the trainer."""

    phase: Phase
    step: int
    timestamp: float
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class ConsoleRecord:
    """Lines the training process wrote to ``stream`` (``"stdout"`` or ``"stderr"``).

    Lines come without their line ending, in the order written, secrets redacted, each at most a
    few KiB (a longer line is cut and ends with ``" [...]"``). A progress bar redrawn with ``\\r``
    arrives as its last state only. ``timestamp`` is when the first of the lines was complete.

    .. versionadded:: 0.3
    """

    stream: str
    lines: tuple[str, ...]
    step: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class GitState:
    """The git checkout the run's code came from.

    :param commit: the full hash of ``HEAD``.
    :param branch: the branch name, ``None`` on a detached ``HEAD``.
    :param remote: the ``origin`` URL (or the first remote's), credentials removed.
    :param dirty: tracked files differ from ``HEAD``, or untracked files exist.
    :param untracked: untracked files (not ignored), relative to the repository root.
    :param diff_path: ``git diff HEAD`` as a patch file in the run directory, when dirty.
    :param diff_truncated: the patch was cut at loggerhub's size cap.

    .. versionadded:: 0.3
    """

    commit: str
    branch: str | None
    remote: str | None
    dirty: bool
    untracked: tuple[str, ...] = ()
    diff_path: Path | None = None
    diff_truncated: bool = False


@dataclass(frozen=True, slots=True)
class RunContext:
    """The code and environment that produced the run, captured once at ``init``.

    :param command: the command line (``sys.argv`` with the interpreter's own flags), redacted.
    :param packages: installed distributions and their versions (what ``pip freeze`` lists).
    :param environment: only allow-listed variables (``CUDA_VISIBLE_DEVICES``, ``WORLD_SIZE``,
        ...); never the whole environment.
    :param gpus: one model name per visible GPU; empty without NVIDIA's management library.

    .. versionadded:: 0.3
    """

    command: tuple[str, ...]
    python_version: str
    python_executable: str
    hostname: str
    os: str
    cpu: str
    cpu_count: int | None
    gpus: tuple[str, ...]
    packages: Mapping[str, str]
    environment: Mapping[str, str]
    git: GitState | None
    timestamp: float

    def requirements(self) -> str:
        """``packages`` as a ``requirements.txt`` (``name==version`` lines, sorted)."""
        return "".join(f"{name}=={version}\n" for name, version in sorted(self.packages.items()))
