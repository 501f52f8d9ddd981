"""The journal codec: every record type, its name in the journal and its typed form for plugins.

One module for the record vocabulary, shared by every producer (``Run``, the importers'
``RunBuilder``, ``loggerhub sync``'s crash ending) and every reader (delivery, ``show``).

The encoding functions (``*_fields``) validate one record's input and return the fields the journal
writer takes, or raise :class:`~loggerhub._normalize.InvalidInput` naming what is wrong. Producers
keep their own bookkeeping (``Run`` its current step, ``RunBuilder`` the source's timestamps) and
decide what a refusal means (``Run`` journals a ``rejected`` record, ``RunBuilder`` raises to its
importer), so every record in any journal has passed the same checks.
"""

from __future__ import annotations

import io
import os
import stat
import traceback as traceback_module
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loggerhub import _normalize as norm
from loggerhub._normalize import InvalidInput
from loggerhub_hookspecs import (
    ArtifactKind,
    ArtifactRecord,
    Box,
    ConsoleRecord,
    FigureRecord,
    GitState,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    Phase,
    RunContext,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TableRole,
    TextRecord,
)

if TYPE_CHECKING:
    from loggerhub.journal import Entry

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
# Run context and telemetry (contract 0.3).
SYSTEM_METRICS = "system_metrics"
CONSOLE = "console"
CONTEXT = "context"

#: Record types whose points are metrics: ``show``, ``plot`` and the report read both alike.
METRIC_TYPES = (METRICS, SYSTEM_METRICS)


MAX_TRACEBACK = 4000


# --------------------------------------------------------------------------- encoding


def metrics_fields(metrics: Any) -> dict[str, float]:
    """A metrics record's ``values``. The training loop has an inlined copy of this check for
    plain floats (``Run.log_metrics``) and calls this one for everything else, so that both agree
    and a refusal names the key at fault."""
    if not isinstance(metrics, Mapping):
        raise InvalidInput(f"metrics must be a mapping of key to number, got {type(metrics).__name__}")
    values = {}
    for key, value in metrics.items():
        key = norm.check_key(key)
        try:
            values[key] = norm.metric_value(value)
        except InvalidInput as error:
            raise InvalidInput(f"{norm._short(key)}: {error}") from None
    return values


def params_fields(params: Any, redactor: norm.Redactor) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        raise InvalidInput(f"params must be a mapping, got {type(params).__name__}")
    return {"params": redactor.params(norm.flatten_params(params))}


def image_fields(key: Any, image: Any, step: Any, *, boxes: Iterable[Any] | None = None,
                 caption: Any = None, epoch: Any = None) -> dict[str, Any]:
    """An image: encoded bytes (any format Pillow reads), or anything ``Run.log_image`` takes."""
    key = norm.check_key(key)
    if caption is not None and not isinstance(caption, str):
        raise InvalidInput(f"caption must be str, got {type(caption).__name__}")
    if isinstance(image, (bytes, bytearray)):
        source = norm.image_bytes(bytes(image))
    else:
        source = norm.image_source(image)
    return {
        "key": key, "step": norm.check_step(step), "epoch": norm.check_epoch(epoch),
        "width": source.width, "height": source.height, "caption": caption, "image": source,
        "boxes": [[b.x0, b.y0, b.x1, b.y1, b.label, b.score, b.class_id]
                  for b in norm.boxes(boxes, source.width, source.height)],
    }


def figure_fields(key: Any, figure: Any, step: Any, *, epoch: Any = None) -> dict[str, Any]:
    """A plot: a matplotlib figure (rendered to PNG now, and pickled when it can be), PNG bytes,
    or a PNG path."""
    key = norm.check_key(key)
    fields: dict[str, Any] = {"key": key, "step": norm.check_step(step), "epoch": norm.check_epoch(epoch)}
    if isinstance(figure, (str, os.PathLike)):
        source = norm.image_file(figure)
    elif isinstance(figure, (bytes, bytearray)):
        source = norm.image_bytes(bytes(figure))
    elif hasattr(figure, "savefig"):
        import pickle

        with io.BytesIO() as buffer:
            try:
                figure.savefig(buffer, format="png")
            except Exception as error:  # noqa: BLE001 - a figure that cannot draw is the caller's input
                raise InvalidInput(f"the figure could not be rendered: {type(error).__name__}: {error}") from None
            png = buffer.getvalue()
        # The PNG is what matters; the figure object is a bonus for trackers that use it.
        try:
            fields["pickled"] = pickle.dumps(figure)
        except Exception:  # noqa: BLE001, S110 - unpicklable figures are logged as PNG only
            pass
        source = norm.image_bytes(png)
    else:
        raise InvalidInput(f"a figure must be a matplotlib figure or a PNG path, got {type(figure).__name__}")
    fields.update(image=source, width=source.width, height=source.height)
    return fields


def artifact_fields(path: Any, step: Any, *, name: Any = None,
                    kind: ArtifactKind | str = ArtifactKind.FILE) -> dict[str, Any]:
    """A file or a directory to copy into the run. Only regular files and directories (after
    following symlinks) are accepted: a device, a FIFO or a socket would be read without end."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInput(f"a path is needed, got {type(path).__name__}")
    source = Path(path)
    try:
        mode = source.stat().st_mode
    except FileNotFoundError:
        raise InvalidInput(f"no such file or directory: {source}") from None
    except OSError as error:
        raise InvalidInput(f"cannot read {source}: {error.strerror or error}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InvalidInput(f"not a regular file or a directory ({special_kind(mode)}): {source}")
    try:
        kind = ArtifactKind(kind)
    except ValueError:
        raise InvalidInput(f"kind must be one of model, dataset, file; got {norm._short(kind)}") from None
    resolved = source.resolve()
    return {"name": norm.artifact_name(name if name is not None else resolved.name),
            "source": str(resolved), "kind": kind.value, "step": norm.check_step(step)}


def special_kind(mode: int) -> str:
    for test, label in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return label
    return "not a regular file"


def text_fields(key: Any, text: Any, step: Any, redactor: norm.Redactor) -> dict[str, Any]:
    """A text record; secrets in it (known credentials, URL passwords) are redacted."""
    key = norm.check_key(key)
    if not isinstance(text, str):
        raise InvalidInput(f"text must be str, got {type(text).__name__}")
    return {"key": key, "text": redactor.text(text), "step": norm.check_step(step)}


def table_fields(key: Any, columns: Any, rows: Any, step: Any,
                 role: TableRole = TableRole.TABLE) -> dict[str, Any]:
    """A table of JSON scalars; a confusion matrix must be square, one row per label."""
    key = norm.check_key(key)
    role = TableRole(role)
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
        raise InvalidInput(f"columns must be a sequence of names, got {type(columns).__name__}")
    header = [str(c) for c in columns]
    if hasattr(rows, "tolist"):
        rows = rows.tolist()
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise InvalidInput(f"rows must be a sequence of rows, got {type(rows).__name__}")
    body = []
    for row in rows:
        if isinstance(row, (str, bytes, Mapping)) or not isinstance(row, Iterable):
            raise InvalidInput(f"each row must be a sequence of values, got {type(row).__name__}")
        body.append([norm.param_value(v) for v in row])
    if any(len(row) != len(header) for row in body):
        raise InvalidInput(f"every row needs {len(header)} values")
    if role is TableRole.CONFUSION_MATRIX and len(body) != len(header):
        raise InvalidInput(f"the matrix must be {len(header)}x{len(header)}")
    return {"key": key, "columns": header, "rows": body, "role": role.value, "step": norm.check_step(step)}


def event_fields(phase: Any, step: Any, *, epoch: Any = None) -> dict[str, Any]:
    try:
        phase = Phase(phase)
    except ValueError:
        raise InvalidInput(f"unknown phase {norm._short(phase)}; one of {', '.join(p.value for p in Phase)}") from None
    return {"phase": phase.value, "step": norm.check_step(step), "epoch": norm.check_epoch(epoch)}


def error_fields(error: BaseException | RunError, redactor: norm.Redactor) -> dict[str, str]:
    """A run_end's ``error``: the exception's type, redacted message and short traceback."""
    if isinstance(error, RunError):
        kind, message, trace = error.type, error.message, error.traceback
    else:
        kind = type(error).__name__
        try:
            message = str(error)
        except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
            message = f"<unprintable {kind}>"
        trace = "".join(traceback_module.format_exception(type(error), error, error.__traceback__, limit=-8))
    trace = redactor.text(trace)
    if len(trace) > MAX_TRACEBACK:
        trace = "...\n" + trace[-MAX_TRACEBACK:]
    return {"type": kind, "message": redactor.text(message)[:MAX_TRACEBACK], "traceback": trace}


def end_fields(status: Status | str, error: dict[str, str] | None = None, lost: int = 0) -> dict[str, Any]:
    """A run_end record. ``lost``: records logged before it that never reached the disk."""
    fields: dict[str, Any] = {"status": Status(status).value}
    if error is not None:
        fields["error"] = error
    if lost:
        fields["lost"] = lost
    return fields


def rejected_fields(api: str, reason: str, value: Any, redactor: norm.Redactor) -> dict[str, Any]:
    return {"api": api, "reason": redactor.text(reason), "value": redactor.text(norm._short(value, 200))}


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
        group=start.get("group"),
        rank=start.get("rank"),
        world_size=start.get("world_size"),
    )


def metric_points(entry: Entry) -> list[MetricPoint]:
    data = entry.data
    step, ts, epoch = data["step"], data["ts"], data.get("epoch")
    return [MetricPoint(key, float(value), step, ts, epoch) for key, value in data["values"].items()]


def decode(entry: Entry, run_dir: Path) -> Any:
    """The typed record for a data or lifecycle entry (see ``loggerhub_hookspecs.records``)."""
    d = entry.data
    kind = entry.type
    if kind == METRICS or kind == SYSTEM_METRICS:
        return metric_points(entry)
    if kind == CONSOLE:
        return ConsoleRecord(stream=d["stream"], lines=tuple(d["lines"]), step=d["step"], timestamp=d["ts"])
    if kind == CONTEXT:
        return run_context(d, run_dir)
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
        return run_end(entry)
    raise ValueError(f"not a data record: {kind}")


def run_context(d: dict[str, Any], run_dir: Path) -> RunContext:
    """A context record's typed form; its diff file is a path in the run directory."""
    git = d.get("git")
    return RunContext(
        command=tuple(d["command"]), python_version=d["python_version"],
        python_executable=d["python_executable"], hostname=d["hostname"], os=d["os"], cpu=d["cpu"],
        cpu_count=d.get("cpu_count"), gpus=tuple(d.get("gpus", ())), packages=d.get("packages", {}),
        environment=d.get("environment", {}), timestamp=d["ts"],
        git=None if git is None else GitState(
            commit=git["commit"], branch=git.get("branch"), remote=git.get("remote"), dirty=git["dirty"],
            untracked=tuple(git.get("untracked", ())),
            diff_path=run_dir / git["diff_file"] if git.get("diff_file") else None,
            diff_truncated=git.get("diff_truncated", False),
        ),
    )


def run_end(entry: Entry) -> tuple[Status, float, RunError | None]:
    """A run_end record's status, end time and (when the run failed or was killed) its cause."""
    d = entry.data
    error = d.get("error")
    return Status(d["status"]), d["ts"], RunError(**error) if error else None
