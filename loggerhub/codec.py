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
import re
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


#: A console line longer than this many characters is cut and ends with CUT_MARK.
MAX_CONSOLE_LINE = 4096
CUT_MARK = " [...]"
CONSOLE_STREAMS = ("stdout", "stderr")
#: Where a context record's git diff lives, relative to the run directory, and its size cap.
DIFF_FILE = "context/git.diff"
MAX_DIFF_BYTES = 1 << 20
#: Untracked files listed in a context record at most (a repository full of outputs has thousands).
MAX_UNTRACKED = 200
_SYSTEM_PREFIX = "system/"
# CSI sequences (colours, cursor moves, erase), OSC sequences (titles, hyperlinks), character
# set selections (tput's "\x1b(B") and the two-character escapes: what a terminal interprets and
# a stored line must not carry.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()*+].|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def system_fields(values: Any, step: Any) -> dict[str, Any]:
    """A ``system_metrics`` record: metric points like ``metrics_fields``', every key under
    ``system/`` (the names of ``loggerhub_hookspecs.telemetry``, or a tracker's own name for a
    series it has and loggerhub does not)."""
    checked = metrics_fields(values)
    for key in checked:
        if not key.startswith(_SYSTEM_PREFIX):
            raise InvalidInput(f"a system metric key must start with {_SYSTEM_PREFIX!r}: {norm._short(key)}")
    return {"values": checked, "step": norm.check_step(step)}


def console_line(text: str) -> str:
    """One console line as stored: only the last state of a line redrawn with ``\r`` (a progress
    bar), without terminal escape sequences or control characters, cut at ``MAX_CONSOLE_LINE``."""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\r" in text:
        # A bar redraws from column 0; its last non-empty state is what the terminal ends with.
        states = [state for state in text.split("\r") if state.strip()]
        text = states[-1] if states else ""
    if _CONTROL.search(text):
        text = _CONTROL.sub("", text)
    text = text.expandtabs(8) if "\t" in text else text
    if len(text) > MAX_CONSOLE_LINE:
        text = text[: MAX_CONSOLE_LINE - len(CUT_MARK)] + CUT_MARK
    return text


def console_fields(stream: Any, lines: Any, step: Any, redactor: norm.Redactor) -> dict[str, Any]:
    """A ``console`` record: complete lines of one stream, each cleaned by :func:`console_line`
    and redacted. A string holding several lines (``"a\nb"``) counts as those lines."""
    if stream not in CONSOLE_STREAMS:
        raise InvalidInput(f"stream must be one of {', '.join(CONSOLE_STREAMS)}; got {norm._short(stream)}")
    if isinstance(lines, str) or not isinstance(lines, Iterable):
        raise InvalidInput(f"lines must be a sequence of str, got {type(lines).__name__}")
    stored: list[str] = []
    for line in lines:
        if not isinstance(line, str):
            raise InvalidInput(f"each line must be str, got {type(line).__name__}")
        stored.extend(redactor.text(console_line(part)) for part in line.split("\n"))
    if not stored:
        raise InvalidInput("a console record needs at least one line")
    return {"stream": stream, "lines": stored, "step": norm.check_step(step)}


def strip_userinfo(url: str) -> str:
    """A remote URL without its credentials: ``https://user:token@host/x`` -> ``https://host/x``.
    An scp-like ``git@host:path`` names an account, not a secret, and stays."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return norm.Redactor({}).text(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def write_diff(run_dir: Path, diff: str | bytes, redactor: norm.Redactor) -> tuple[str, bool]:
    """Write a ``git diff`` into ``run_dir`` at :data:`DIFF_FILE`, redacted and cut at
    :data:`MAX_DIFF_BYTES`; returns (the file relative to the run directory, whether it was cut)."""
    data = diff if isinstance(diff, bytes) else diff.encode("utf-8", "surrogateescape")
    truncated = len(data) > MAX_DIFF_BYTES
    if truncated:
        data = data[:MAX_DIFF_BYTES]
        data = data[: data.rfind(b"\n") + 1] or data  # whole lines: a patch tool reads up to there
    text = redactor.text(data.decode("utf-8", "replace"))
    target = run_dir / DIFF_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return DIFF_FILE, truncated


def context_fields(*, command: Any, python_version: Any, python_executable: Any, hostname: Any,
                   os: Any,  # noqa: A002 - the record's field name
                   cpu: Any, cpu_count: Any = None, gpus: Any = (), packages: Any = None,
                   environment: Any = None, git: Mapping[str, Any] | None = None,
                   redactor: norm.Redactor) -> dict[str, Any]:
    """A ``context`` record. Secrets are kept out: the command line is redacted, environment
    variables whose name looks like a credential are dropped (whatever the producer's allow-list),
    and the git remote loses its credentials. ``git["diff_file"]`` is a file already in the run
    directory (see :func:`write_diff`), or None."""

    def text(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be str, got {type(value).__name__}")
        return redactor.text(value)

    def strings(name: str, value: Any) -> list[str]:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise InvalidInput(f"{name} must be a sequence of str, got {type(value).__name__}")
        return [text(name, item) for item in value]

    def mapping(name: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise InvalidInput(f"{name} must be a mapping of str to str, got {type(value).__name__}")
        return {text(name, k): text(name, v) for k, v in value.items()}

    if cpu_count is not None and (type(cpu_count) is not int or cpu_count < 0):
        raise InvalidInput(f"cpu_count must be a non-negative int, got {norm._short(cpu_count)}")
    environment = {key: value for key, value in mapping("environment", environment).items()
                   if not norm._SECRET_KEY.search(key)}
    fields: dict[str, Any] = {
        "command": strings("command", command), "python_version": text("python_version", python_version),
        "python_executable": text("python_executable", python_executable), "hostname": text("hostname", hostname),
        "os": text("os", os), "cpu": text("cpu", cpu), "cpu_count": cpu_count, "gpus": strings("gpus", gpus),
        "packages": mapping("packages", packages), "environment": environment, "git": None,
    }
    if git is not None:
        if not isinstance(git, Mapping):
            raise InvalidInput(f"git must be a mapping or None, got {type(git).__name__}")
        commit = text("git commit", git.get("commit"))
        if not re.fullmatch(r"[0-9a-f]{7,64}", commit):
            raise InvalidInput(f"git commit must be a hex hash, got {norm._short(commit)}")
        branch, remote, diff_file = git.get("branch"), git.get("remote"), git.get("diff_file")
        untracked = strings("git untracked", git.get("untracked", ()))
        if diff_file is not None and (not isinstance(diff_file, str) or Path(diff_file).is_absolute()
                                      or ".." in Path(diff_file).parts):
            raise InvalidInput(f"git diff_file must be a path inside the run directory, got {norm._short(diff_file)}")
        fields["git"] = {
            "commit": commit,
            "branch": None if branch is None else text("git branch", branch),
            "remote": None if remote is None else strip_userinfo(text("git remote", remote)),
            "dirty": bool(git.get("dirty", False)),
            "untracked": untracked[:MAX_UNTRACKED],
            "diff_file": None if diff_file is None else text("git diff_file", diff_file),
            "diff_truncated": bool(git.get("diff_truncated", False)),
        }
    return fields


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
