"""``loggerhub import comet PATH``: Comet offline archives back into loggerhub runs.

PATH is one archive (``<experiment key>-<random>.zip``) or a folder of them; the archives of one
experiment (a resumed run writes several) are merged in start-time order, as ``comet upload``
applies them. The experiment key is the source id, so importing the same archives again writes
nothing.

What the Comet backend wrote is inverted exactly (key escapes, box layers, long parameter
assets, models, tables, the Other-tab status). An archive of any other Comet user is read the
same way, its uploads mapped by their upload type. Comet's own bookkeeping (``curr_step``,
``process duration``, ...) and what loggerhub has no record for are reported as not mapped.

Archives are hostile input (the layout is in :mod:`loggerhub_comet.offline`): members are
streamed with the limits of :class:`~loggerhub_hookspecs.importers.Limits` (size, compression
ratio, free space), upload names never leave the run's folder, and a malformed message is skipped
and reported as ``<archive>/messages.json:<line>``. An archive whose ``experiment.json`` is not an
object with a non-empty ``offline_id`` is skipped and reported.

Times are the archive's: ``local_timestamp`` of each message, which is when the Comet SDK
received the call (for an archive written by loggerhub, the delivery, not the training loop).
The run ends at the ``stop_time`` of the archive of its end, which the backend stamps with the
journal's end, so records delivered late may come after it; it starts at ``start_time`` (the
delivery's start), or at that end if the delivery started later.

A run that did not finish keeps why: the backend's Other-tab ``error_type`` and ``error_message``
and its ``loggerhub/traceback.txt`` upload, else ``experiment.json``'s ``customer_error_message``,
all taken from the archive of the run's end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from loggerhub_comet.keys import OWN_SYSTEM_PREFIX, RESERVED, SYSTEM_PREFIX, from_tracker, system_key
from loggerhub_comet.offline import SYSTEM_PARAMS
from loggerhub_hookspecs import ArtifactKind, Box, RunError, Status, TableRole
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Emit,
    Importer,
    Pending,
    RunBuilder,
    Source,
    contained,
    contained_member,
    open_zip,
    safe_name,
    write_in_order,
    write_metrics,
)

#: Other-tab entries that the Comet backend and the SDK write for themselves.
OWN_OTHERS = frozenset({"Name", "status", "loggerhub_run_id", "offline_experiment", "error_type", "error_message",
                        "git_dirty", "git_untracked", "git_diff_truncated"})
#: Other-tab entries of a run of a rank group, which an imported run has no place for.
GROUP_OTHERS = frozenset({"group", "rank", "world_size"})
#: The upload type of the zipped ``git diff`` (comet_ml's log_git_patch), and its member.
GIT_PATCH, GIT_PATCH_MEMBER = "git-patch", "git_diff.patch"
#: The backend's upload metadata for the traceback of a run that did not finish.
TRACEBACK_ROLE = "traceback"
_ERROR_TYPE = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.DOTALL)
#: The backend's ``loggerhub`` upload metadata for files, and the artifact kind each one is.
ARTIFACT_ROLES = {"checkpoint": ArtifactKind.MODEL, "model": ArtifactKind.MODEL,
                  "dataset": ArtifactKind.DATASET, "file": ArtifactKind.FILE}
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_PLACEHOLDER = "comet: archive without experiment.json (placeholder of a killed process), skipped"


class CometImporter(Importer):
    name = "comet"
    location_help = "a Comet offline archive (.zip) or a folder of them"

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        """Import every Comet experiment found at the location (an archive or a folder of them)."""
        path = Path(source.location).expanduser().absolute()
        if path.is_dir():
            archives = sorted(p for p in path.glob("*.zip") if p.is_file())
        elif path.is_file():
            archives = [path]
        else:
            raise FileNotFoundError(f"no Comet offline archive or folder at {path}")
        if not archives:
            raise FileNotFoundError(f"no Comet offline archive (*.zip) in {path}")
        parts = []
        placeholders = 0
        for archive in archives:
            try:
                part = _read_archive(source.contained(archive), source)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, OSError, ValueError, EOFError) as error:
                source.skip(archive, None, f"not a readable archive: {type(error).__name__}: {error}")
                continue
            if part is None:
                placeholders += 1
            elif part != {}:
                parts.append(part)
        if placeholders:
            # The empty placeholder a process killed before end() leaves: part of no run.
            builder_factory.unmapped(_PLACEHOLDER, placeholders)
        experiments = _merge(parts)
        for key in sorted(experiments):
            _import_experiment(experiments[key], builder_factory, source)


#: ``loggerhub.importers`` entry point.
import_runs = CometImporter()


# --------------------------------------------------------------------------- reading an archive


def _read_archive(path: Path, source: Source) -> dict[str, Any] | None:
    """One archive as plain dicts (the shape of ``offline.read_offline_zip``), every message
    checked; None for a placeholder, ``{}`` for an archive that is skipped and reported."""
    with open_zip(path, source) as archive:
        members = {info.filename: info for info in archive.infolist()}
        if "experiment.json" not in members:
            return None
        experiment = json.loads(source.zip_member(archive, "experiment.json"))
        key = experiment.get("offline_id") if isinstance(experiment, dict) else None
        if not isinstance(key, str) or not key.strip():
            source.skip(f"{path.name}/experiment.json", None,
                        "not an object with a non-empty offline_id; the archive is skipped")
            return {}
        part: dict[str, Any] = {
            "path": path, "key": key, "experiment": experiment, "params": {}, "system_params": {},
            "metrics": {}, "others": {}, "tags": _text_list(experiment.get("tags")), "uploads": [],
            "unknown": {}, **_environment(),
        }
        if "messages.json" not in members:
            return part
        where = f"{path.name}/messages.json"
        with archive.open("messages.json") as raw:
            for number, line in _lines(raw, source, where):
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("a message that is not a JSON object")
                    _apply(part, message, archive, members, source, (where, number))
                except (ValueError, TypeError, KeyError, RecursionError, zipfile.BadZipFile, zlib.error) as error:
                    source.skip(where, number, _why(error))
    return part


def _lines(raw: Any, source: Source, where: str) -> Any:
    from loggerhub_hookspecs.importers import lines_capped

    for number, line in lines_capped(raw, source.limits.item_bytes):
        if line is None:
            source.skip(where, number, f"a line longer than {source.limits.item_bytes} bytes")
            continue
        if not line.endswith(b"\n") and line.strip():
            source.skip(where, number, "a torn last line (the writer stopped mid-line)")
            continue
        yield number, line


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)


def _apply(part: dict[str, Any], message: dict[str, Any], archive: zipfile.ZipFile,
           members: dict[str, zipfile.ZipInfo], source: Source, where: tuple[str, int]) -> None:
    kind = message.get("type")
    payload = message.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    if not isinstance(kind, str):
        raise ValueError("a message without a text type")
    if kind == "metric_msg":
        metric = payload.get("metric")
        if not isinstance(metric, dict):
            raise ValueError("a metric message without its metric object")
        name = _name(metric.get("metricName"), "metricName")
        part["metrics"].setdefault(name, []).append({
            "step": _integer(metric.get("step"), "step"),
            "epoch": _integer(metric.get("epoch"), "epoch"),
            "value": _metric_value(metric.get("metricValue"), name),
            "timestamp": _seconds(payload.get("local_timestamp")),
            "where": where,
        })
    elif kind == "parameter_msg":
        param = payload.get("param") or payload.get("params")
        if not isinstance(param, dict):
            raise ValueError("a parameter message without its param object")
        name = _name(param.get("paramName"), "paramName")
        system = name in SYSTEM_PARAMS or param.get("source") == "auto-logged"
        part["system_params" if system else "params"][name] = param.get("paramValue")
    elif kind == "log_other":
        part["others"][_name(payload.get("key"), "key")] = payload.get("value")
    elif kind == "file_upload":
        part["uploads"].append(_upload(payload, archive, members, source, where))
    elif kind == "standard_output":
        output = payload.get("output")
        if not isinstance(output, str):
            raise ValueError("a standard_output message without its text")
        part["output"].append({"stderr": payload.get("stderr") is True, "output": output,
                               "ts": _seconds(payload.get("local_timestamp")), "where": where})
    elif kind == "system_details":
        part["system_details"].update({k: v for k, v in payload.items() if k != "message_id"})
    elif kind == "system_info":
        info = payload.get("system_info")
        if not isinstance(info, dict):
            raise ValueError("a system_info message without its key and value")
        part["system_info"][_name(info.get("key"), "key")] = info.get("value")
    elif kind == "installed_packages":
        packages = payload.get("installed_packages")
        if not isinstance(packages, list):
            raise ValueError("an installed_packages message without its list")
        part["packages"] = [p for p in packages if isinstance(p, str)]
    elif kind == "git_metadata":
        git = payload.get("git_metadata")
        if not isinstance(git, dict):
            raise ValueError("a git_metadata message without its object")
        part["git"] = git
    else:
        part["unknown"][kind[:60]] = part["unknown"].get(kind[:60], 0) + 1


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is not a non-empty text")
    return value


def _integer(value: Any, what: str) -> int | None:
    """A step or epoch: an integer (or an integral number), else the item is refused; never rounded."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(value)


def _metric_value(raw: Any, name: str) -> float:
    """A metric value as the archive stores it (NaN and infinities as text); the message never
    quotes the value, which may be a secret logged under the wrong name."""
    if isinstance(raw, str) and raw in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[raw]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"metric {name[:80]!r}: its value is not a number")
    try:
        return float(raw)
    except (ValueError, OverflowError):
        raise ValueError(f"metric {name[:80]!r}: its value is not a number") from None


def _seconds(millis: Any) -> float | None:
    if millis is None:
        return None
    if isinstance(millis, bool) or not isinstance(millis, (int, float)) or not math.isfinite(millis):
        raise ValueError("local_timestamp is not a number")
    return float(millis) / 1000.0


def _text_list(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def _upload(payload: dict[str, Any], archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo],
            source: Source, where: tuple[str, int]) -> dict[str, Any]:
    extra = payload.get("additional_params")
    extra = extra if isinstance(extra, dict) else {}
    member = payload.get("file_path")
    member = member if isinstance(member, str) and member in members else None
    metadata = payload.get("metadata")
    name = extra.get("figName") or extra.get("fileName")
    upload: dict[str, Any] = {
        "upload_type": str(payload.get("upload_type")),
        "name": name if isinstance(name, str) else None,
        "group": extra.get("groupingName") if isinstance(extra.get("groupingName"), str) else None,
        "step": _integer(extra.get("step"), "step"),
        "epoch": _integer(extra.get("epoch"), "epoch"),
        "metadata": metadata if isinstance(metadata, dict) else {},
        "member": member,
        "ts": _seconds(payload.get("local_timestamp")),
        "archive": archive.filename,  # opened again while the run is written
        "where": where,
    }
    if member is not None and upload["upload_type"] == "text-sample":
        upload["text"] = source.zip_member(archive, member).decode("utf-8", errors="replace")
    elif member is not None and upload["upload_type"] == "confusion-matrix":
        upload["content"] = json.loads(source.zip_member(archive, member))
    return upload


def _merge(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The archives of one experiment key as one, applied ``create`` first, then by start time."""
    def order(part: dict[str, Any]) -> tuple[bool, float]:
        start = part["experiment"].get("start_time")
        return (part["experiment"].get("resume_strategy") != "create",
                float(start) if isinstance(start, (int, float)) and not isinstance(start, bool) else 0.0)

    merged: dict[str, dict[str, Any]] = {}
    for part in sorted(parts, key=order):
        target = merged.get(part["key"])
        if target is None:
            target = merged[part["key"]] = {
                "key": part["key"], "experiment": part["experiment"], "parts": [], "params": {},
                "system_params": {}, "metrics": {}, "others": {}, "tags": [], "uploads": [], "unknown": {},
                **_environment()}
        target["parts"].append(part)
        for name in ("params", "system_params", "others", "system_details", "system_info"):
            target[name].update(part[name])
        target["output"].extend(part["output"])
        target["packages"] = part["packages"] or target["packages"]
        target["git"] = part["git"] or target["git"]
        for name, points in part["metrics"].items():
            target["metrics"].setdefault(name, []).extend(points)
        target["uploads"].extend(part["uploads"])
        target["tags"].extend(t for t in part["tags"] if t not in target["tags"])
        for kind, count in part["unknown"].items():
            target["unknown"][kind] = target["unknown"].get(kind, 0) + count
    return merged


# --------------------------------------------------------------------------- one experiment


def _import_experiment(experiment: dict[str, Any], factory: BuilderFactory, source: Source) -> None:
    others = experiment["others"]
    meta = experiment["experiment"]
    started = _safe_seconds(meta.get("start_time")) or 0.0
    # start_time is when the delivery started: after the end for a run delivered late (`loggerhub
    # sync`), which then started no later than it ended.
    stops = [_safe_seconds(part["experiment"].get("stop_time")) or 0.0 for part in experiment["parts"]]
    started = min([started, *(stop for stop in stops if stop)])
    params = dict(experiment["params"])
    with _Archives() as archives:
        for upload in experiment["uploads"]:
            upload["archive"] = archives.open(upload["archive"], source)
        long_values, uploads = _split_param_assets(experiment["uploads"], source)
        patches = [u for u in uploads if u["upload_type"] == GIT_PATCH]
        uploads = [u for u in uploads if u["upload_type"] != GIT_PATCH]
        ending = _ending_part(experiment["parts"])
        tracebacks = [u for u in uploads if u["metadata"].get("loggerhub") == TRACEBACK_ROLE]
        uploads = [u for u in uploads if u["metadata"].get("loggerhub") != TRACEBACK_ROLE]
        params.update(long_values)  # the whole value, where Comet keeps 1000 characters
        name = others.get("Name")
        project = meta.get("project_name")
        builder = factory(
            source_id=experiment["key"],
            name=name if isinstance(name, str) and name else experiment["key"],
            started_at=started,
            config={from_tracker(str(key)): value for key, value in params.items()},
            tags=_tags(experiment["tags"]),
            source_project=project if isinstance(project, str) else None,
        )
        if builder is None:
            return
        with builder:
            for param in sorted(experiment["system_params"]):
                builder.unmapped(f"comet: SDK parameter {param!r}")
            for other in sorted(set(others) - OWN_OTHERS - GROUP_OTHERS):
                builder.unmapped(f"comet: Other-tab value {other!r}")
            for other in sorted(set(others) & GROUP_OTHERS):
                builder.unmapped(f"comet: the run's {other} in its rank group (an import makes runs without groups)")
            for kind, count in sorted(experiment["unknown"].items()):
                builder.unmapped(f"comet: {kind} message", count)
            items = _metric_items(experiment["metrics"], "loggerhub_run_id" in others, started, builder, source)
            items += _upload_items(uploads, builder.scratch, builder, started, source)
            items += _telemetry_items(experiment, patches, started, builder, source)
            write_in_order(items, builder, source)
            # The end is the stop time of the archive of the run's end: the backend stamps it
            # with the journal's end, where the records' times are when the SDK received them.
            stop = _safe_seconds(ending["experiment"].get("stop_time")) if ending is not None else None
            end = stop or max([started, *stops, *(item.ts for item in items)])
            status = _status(others.get("status"), builder)
            error, taken = (None, False) if status is Status.FINISHED or ending is None else _error(ending, source)
            if len(tracebacks) > taken:
                # Of an earlier end of a resumed run (or of a run that then finished): the journal
                # keeps the cause of the last end only.
                builder.unmapped("comet: traceback of an earlier end of the run", len(tracebacks) - taken)
            builder.end(status, end, error)


class _Archives:
    """The experiment's archives, each opened once while its records are written."""

    def __init__(self) -> None:
        self._open: dict[str, zipfile.ZipFile] = {}

    def open(self, path: str | None, source: Source) -> zipfile.ZipFile:
        assert path is not None  # archives are opened from files
        if path not in self._open:
            self._open[path] = open_zip(Path(path), source)
        return self._open[path]

    def __enter__(self) -> _Archives:
        return self

    def __exit__(self, *exc: Any) -> None:
        for archive in self._open.values():
            archive.close()


def _safe_seconds(millis: Any) -> float | None:
    try:
        return _seconds(millis)
    except ValueError:
        return None


def _tags(tags: list[str]) -> dict[str, str]:
    """``key:value`` tags back to a mapping; a tag without ``:`` is a key with an empty value."""
    result: dict[str, str] = {}
    for tag in tags:
        key, _, value = str(tag).partition(":")
        result[key] = value
    return result


def _status(raw: Any, builder: RunBuilder) -> Status:
    if raw in (None, ""):
        return Status.FINISHED  # archives are written by end(): a plain Comet run that ended
    if raw == "RUNNING":
        # loggerhub's delivery stopped before the run ended; `loggerhub sync` would end it so.
        builder.unmapped("comet: status RUNNING in the last archive, imported as KILLED")
        return Status.KILLED
    try:
        return Status(raw)
    except ValueError:
        builder.unmapped(f"comet: unknown status {str(raw)[:40]!r}, imported as FINISHED")
        return Status.FINISHED


def _ending_part(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The archive of the run's last end: the last one that holds a status (an archive of a
    session that stopped before the run ended holds none); the last archive of a plain run."""
    ended = [part for part in parts if "status" in part["others"]]
    return ended[-1] if ended else (parts[-1] if parts else None)


def _error(part: dict[str, Any], source: Source) -> tuple[RunError | None, bool]:
    """Why the run failed, from the archive of its end: the backend's Other-tab ``error_type``
    and ``error_message`` and its last ``loggerhub/traceback.txt`` upload; else
    ``experiment.json``'s ``customer_error_message`` (``Type: message``; a text without a type is
    the message of an ``Error``). Also whether a traceback upload was taken."""
    others = part["others"]
    kind, message = others.get("error_type"), others.get("error_message")
    if isinstance(kind, str) and kind:
        trace = ""
        own = [u for u in part["uploads"] if u["metadata"].get("loggerhub") == TRACEBACK_ROLE and u["member"]]
        if own:
            try:
                trace = source.zip_member(own[-1]["archive"], own[-1]["member"]).decode("utf-8", errors="replace")
            except (ValueError, zipfile.BadZipFile, zlib.error) as error:  # the type and message still count
                source.skip(own[-1]["where"][0], own[-1]["where"][1], f"traceback: {_why(error)}")
        return RunError(kind, message if isinstance(message, str) else "", trace), bool(own)
    reported = part["experiment"].get("customer_error_message")
    if not isinstance(reported, str) or not reported:
        return None, False
    match = _ERROR_TYPE.match(reported)
    return (RunError(match.group(1), match.group(2)) if match else RunError("Error", reported)), False


def _split_param_assets(uploads: list[dict[str, Any]], source: Source) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = {}
    rest = []
    for upload in uploads:
        meta = upload["metadata"]
        if meta.get("loggerhub") == "param" and isinstance(meta.get("key"), str) and upload["member"] is not None:
            try:
                values[meta["key"]] = json.loads(source.zip_member(upload["archive"], upload["member"]))
            except (ValueError, RecursionError) as error:
                source.skip(upload["where"][0], upload["where"][1], f"parameter {meta['key'][:80]!r}: {_why(error)}")
        else:
            rest.append(upload)
    return values, rest


# --------------------------------------------------------------------------- metrics


def _metric_items(metrics: dict[str, list[dict[str, Any]]], ours: bool, started: float,
                  builder: RunBuilder, source: Source) -> list[Pending]:
    """Points of one time, step and epoch become one metrics record, as loggerhub logged them."""
    groups: dict[tuple[float, Any, Any], list[dict[str, float]]] = {}
    places: dict[tuple[float, Any, Any], tuple[str, int]] = {}
    for name, points in metrics.items():
        if name in RESERVED:
            builder.unmapped(f"comet: SDK metric {name!r}", len(points))
            continue
        if name.startswith(SYSTEM_PREFIX) and (not ours or system_key(name) is not None
                                               or name.startswith(OWN_SYSTEM_PREFIX)):
            continue  # system metrics: see _telemetry_items
        key = from_tracker(name)
        for point in points:
            slot = (point["timestamp"] or started, point["step"], point["epoch"])
            records = groups.setdefault(slot, [])
            places.setdefault(slot, point["where"])
            # The same key twice in one millisecond and step is a second record, not an overwrite.
            target = next((values for values in records if key not in values), None)
            if target is None:
                target = {}
                records.append(target)
            target[key] = point["value"]
    items = []
    for order, (slot, records) in enumerate(groups.items()):
        ts, step, epoch = slot
        for values in records:
            items.append(Pending(ts, -1 if step is None else step, order, _metrics(values, epoch, source, places[slot]),
                                 auto_step=step is None, metrics=True, where=places[slot]))
    return items


def _metrics(values: dict[str, float], epoch: int | None, source: Source, where: tuple[str, int]) -> Emit:
    return lambda b, step, ts: write_metrics(b, values, step, ts, source, where, epoch=epoch)


# --------------------------------------------------------------------------- telemetry


def _environment() -> dict[str, Any]:
    """The parts of an archive that describe the run's environment, empty."""
    return {"output": [], "system_details": {}, "system_info": {}, "packages": [], "git": None}


def _telemetry_items(experiment: dict[str, Any], patches: list[dict[str, Any]], started: float,
                     builder: RunBuilder, source: Source) -> list[Pending]:
    """System metrics (``sys.*``), the Output tab and the environment (system details, installed
    packages, git metadata and patch) as system_metrics, console and context records."""
    ours = "loggerhub_run_id" in experiment["others"]
    samples: dict[tuple[float, int], dict[str, float]] = {}
    places: dict[tuple[float, int], tuple[str, int]] = {}
    for name, points in experiment["metrics"].items():
        if not name.startswith(SYSTEM_PREFIX):
            continue
        found = system_key(name)
        if found is None and ours and not name.startswith(OWN_SYSTEM_PREFIX):
            continue  # a user's metric named sys.*, imported with the metrics
        # comet_ml's series loggerhub has no name for keep theirs: sys.load.avg -> system/load.avg.
        key, factor = found if found is not None else ("system/" + name[len(SYSTEM_PREFIX):], 1.0)
        for point in points:
            slot = (point["timestamp"] or started, point["step"] or 0)
            samples.setdefault(slot, {})[key] = point["value"] * factor
            places.setdefault(slot, point["where"])
    items = []
    for order, ((ts, step), values) in enumerate(samples.items()):
        items.append(Pending(ts, step, (1 << 41) + order, _system(values, step, ts), where=places[(ts, step)]))
    for order, output in enumerate(experiment["output"]):
        lines = output["output"].split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            continue
        ts = output["ts"] if output["ts"] is not None else started
        stream = "stderr" if output["stderr"] else "stdout"
        items.append(Pending(ts, 0, (1 << 42) + order, _console(stream, lines, ts), where=output["where"]))
    context = _context(experiment, patches, source)
    if context is not None:
        items.append(Pending(started, 0, 1 << 43, lambda b, step, ts: b.context(started, **context)))
    return items


def _system(values: dict[str, float], step: int, ts: float) -> Emit:
    # RunBuilder.system_metrics / console / context are loggerhub 0.3's; the hookspecs protocol
    # does not list them yet.
    return lambda b, _, __: b.system_metrics(values, step, ts)


def _console(stream: str, lines: list[str], ts: float) -> Emit:
    return lambda b, _, __: b.console(stream, lines, 0, ts)


def _context(experiment: dict[str, Any], patches: list[dict[str, Any]], source: Source) -> dict[str, Any] | None:
    details, info, git_meta = experiment["system_details"], experiment["system_info"], experiment["git"]
    if not details and not experiment["packages"] and not git_meta:
        return None

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""

    command = details.get("command")
    packages = {}
    for line in experiment["packages"]:
        name, sep, version = line.partition("==")
        if sep and name:
            packages[name] = version
    env = details.get("env")
    gpus = info.get("gpus")
    cpu_count = info.get("cpu_count")
    others = experiment["others"]
    git = None
    diff = None
    if isinstance(git_meta, dict) and isinstance(git_meta.get("parent"), str):
        untracked: Any = others.get("git_untracked")
        try:
            untracked = json.loads(untracked) if isinstance(untracked, str) else []
        except ValueError:
            untracked = []
        git = {"commit": git_meta["parent"], "branch": git_meta.get("branch") or None,
               "remote": git_meta.get("origin") or None, "dirty": others.get("git_dirty") is True,
               "untracked": [u for u in untracked if isinstance(u, str)] if isinstance(untracked, list) else []}
        for patch in patches[-1:]:
            diff = _patch_text(patch, source)
    return dict(
        command=[str(c) for c in command] if isinstance(command, list) else text(command).split(),
        python_version=text(details.get("python_version")), python_executable=text(details.get("python_exe")),
        hostname=text(details.get("hostname")), os=text(details.get("os")), cpu=text(details.get("processor")),
        cpu_count=cpu_count if type(cpu_count) is int else None,
        gpus=[g.strip() for g in gpus.split(",") if g.strip()] if isinstance(gpus, str) else [],
        packages=packages,
        environment={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        git=git, diff=diff)


def _patch_text(upload: dict[str, Any], source: Source) -> str | None:
    """The diff inside a git-patch upload: a zip (in the archive) holding ``git_diff.patch``."""
    if upload["member"] is None:
        return None
    inner = source.zip_member(upload["archive"], upload["member"])
    with zipfile.ZipFile(io.BytesIO(inner)) as patch:
        if GIT_PATCH_MEMBER not in patch.namelist():
            return None
        return source.zip_member(patch, GIT_PATCH_MEMBER).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- uploads


def _upload_items(uploads: list[dict[str, Any]], scratch: Path, builder: RunBuilder, started: float,
                  source: Source) -> list[Pending]:
    items: list[Pending] = []
    for index, group in enumerate(_group_files(uploads)):
        upload = group[0]
        if upload["member"] is None:
            builder.unmapped(f"comet: {upload['upload_type'][:60]} upload without its file", len(group))
            continue
        emit = _upload_emit(group, scratch / str(index), builder, source)
        if emit is None:
            continue
        meta = upload["metadata"]
        if meta.get("loggerhub") is None and set(meta) - {"annotations"}:
            builder.unmapped("comet: user metadata of an upload (loggerhub records have none)")
        if upload["epoch"] is not None or meta.get("epoch") is not None:
            builder.unmapped(f"comet: epoch of a {upload['upload_type'][:60]} upload (loggerhub keeps "
                             "epochs on metrics)")
        step = upload["step"]
        ts = upload["ts"] if upload["ts"] is not None else started
        # Ordered after the metrics of the same millisecond and step, as loggerhub logs them.
        items.append(Pending(ts, -1 if step is None else step, (1 << 40) + index, emit,
                             auto_step=step is None, where=upload["where"]))
    return items


def _group_key(upload: dict[str, Any]) -> Any:
    """Uploads of one logged directory share this key; None for a file that stands alone."""
    meta = upload["metadata"]
    if upload["upload_type"] not in ("asset", "model-element"):
        return None
    if meta.get("loggerhub") in ARTIFACT_ROLES:
        return upload["upload_type"], json.dumps(meta, sort_keys=True, default=str)
    if upload["upload_type"] == "model-element":
        return upload["upload_type"], upload["group"]
    return None


def _group_files(uploads: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = []
    for upload in uploads:
        key = _group_key(upload)
        last = groups[-1] if groups else None
        # A file name seen again in the group starts the next logging of that directory.
        if (key is not None and last is not None and _group_key(last[0]) == key
                and upload["name"] not in {u["name"] for u in last}):
            last.append(upload)
        else:
            groups.append([upload])
    return groups


def _upload_emit(group: list[dict[str, Any]], staging: Path, builder: RunBuilder, source: Source) -> Emit | None:
    """How to write one upload; its members are read when it is written, so that a bad one is
    skipped and reported with its line, like any other item."""
    upload = group[0]
    kind = upload["upload_type"]
    meta = upload["metadata"]
    if kind == "visualization":
        return _visual(upload, builder, source)
    if kind == "text-sample":
        key = from_tracker(_text(meta.get("key")) or "text")
        text = upload.get("text", "")
        return lambda b, step, ts: b.text(key, text, step, ts)
    if kind == "confusion-matrix":
        return _confusion(upload)
    if kind == "asset" and meta.get("loggerhub") == "table":
        return _table(upload, source)
    if kind in ("asset", "model-element"):
        return _artifact(group, staging, source)
    builder.unmapped(f"comet: {kind[:60]} upload (no loggerhub record for it)", len(group))
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _visual(upload: dict[str, Any], builder: RunBuilder, source: Source) -> Emit:
    meta = upload["metadata"]
    key = from_tracker(_text(meta.get("key")) or upload["name"] or "image")
    if meta.get("loggerhub") == "figure":
        return lambda b, step, ts: b.figure(key, source.zip_member(upload["archive"], upload["member"]), step, ts)
    ours = meta.get("loggerhub") == "image"
    caption = _text(meta.get("caption"))

    def emit(b: Any, step: int, ts: float) -> None:
        layers = meta.get("annotations") if isinstance(meta.get("annotations"), list) else []
        boxes = [box for layer in layers for item in (layer.get("data") or [])
                 for box in _boxes(item, ours, builder)]
        b.image(key, source.zip_member(upload["archive"], upload["member"]), step, ts, boxes=boxes, caption=caption)

    return emit


def _boxes(item: dict[str, Any], ours: bool, builder: RunBuilder) -> list[Box]:
    """A Comet annotation's ``[x, y, width, height]`` boxes back to corners."""
    if item.get("points"):
        builder.unmapped("comet: polygon annotation (loggerhub keeps boxes)")
    class_id = (item.get("metadata") or {}).get("class_id")
    label = item.get("label")
    if ours and label == ("box" if class_id is None else f"class {class_id}"):
        label = None  # the backend's stand-in label for a box that had none
    return [Box(float(x), float(y), float(x) + float(w), float(y) + float(h), label, item.get("score"),
                class_id) for x, y, w, h in item.get("boxes") or []]


def _confusion(upload: dict[str, Any]) -> Emit:
    content = upload.get("content")
    content = content if isinstance(content, dict) else {}
    matrix = content.get("matrix") or []
    labels = [str(label) for label in content.get("labels") or range(len(matrix))]
    key = from_tracker(_text(upload["metadata"].get("key")) or _text(content.get("title")) or "confusion_matrix")
    return lambda b, step, ts: b.table(key, labels, matrix, step, ts, role=TableRole.CONFUSION_MATRIX)


def _table(upload: dict[str, Any], source: Source) -> Emit:
    """The backend's CSV table; cells come back as the text CSV holds."""
    key = from_tracker(_text(upload["metadata"].get("key")) or upload["name"] or "table")

    def emit(b: Any, step: int, ts: float) -> None:
        text = source.zip_member(upload["archive"], upload["member"]).decode("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        columns, body = (rows[0], rows[1:]) if rows else ([], [])
        b.table(key, columns, body, step, ts)

    return emit


def _artifact(group: list[dict[str, Any]], staging: Path, source: Source) -> Emit:
    """A file, or a directory rebuilt from its uploads, extracted under the run's scratch folder:
    every path is built from names checked to stay below it."""
    upload = group[0]
    meta = upload["metadata"]
    model = upload["upload_type"] == "model-element"
    role = meta.get("loggerhub") if meta.get("loggerhub") in ARTIFACT_ROLES else None
    if role is not None and _text(meta.get("name")):
        tracker_name = meta["name"]
        name = from_tracker(tracker_name)
        # log_model names a file by its base name; log_asset by the whole name.
        own = PurePosixPath(tracker_name).name if model else tracker_name
        single = len(group) == 1 and upload["name"] == own
        # log_model puts a folder's files under the folder's name; log_asset under the artifact's.
        prefix = PurePosixPath(name).name + "/" if model else tracker_name + "/"
    elif model:
        name, single, prefix = upload["group"] or "model", False, ""
    else:
        name, single, prefix = upload["name"] or "asset", True, ""
    target = staging / safe_name(PurePosixPath(str(name)).name, fallback="artifact")
    kind = ARTIFACT_ROLES[role] if role is not None else ArtifactKind.MODEL if model else ArtifactKind.FILE
    checkpoint = role == "checkpoint"

    def emit(b: Any, step: int, ts: float) -> None:
        if single:
            source.extract(upload["archive"], upload["member"], target)
        else:
            for part in group:
                relative = str(part["name"] or "")
                relative = relative[len(prefix):] if prefix and relative.startswith(prefix) else relative
                path = contained(target, contained_member(relative))
                source.extract(part["archive"], part["member"], path)
        b.artifact(target, name, ts, kind=kind, step=step, checkpoint=checkpoint)

    return emit
