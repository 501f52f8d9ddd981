"""Read Comet offline archives (the ``.zip`` files ``OfflineExperiment`` writes) into plain dicts.

Layout written by comet_ml 3.58 (checked by running it):

* ``experiment.json``: ``offline_id`` (the experiment key), ``project_name``, ``workspace``,
  ``start_time`` / ``stop_time`` (ms), ``tags``, ``resume_strategy`` (``create``: a new
  experiment; ``get``: append to an existing one; ``get_or_create``: either, at upload time).
* ``messages.json``: one JSON object per line, ``{"type": ..., "payload": ...}``. Types used here:
  ``metric_msg`` (``payload.metric``: ``metricName``, ``metricValue``, ``step``, ``epoch``; NaN
  and infinities are the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), ``parameter_msg``
  (``payload.param``, or ``payload.params`` for list values: ``paramName``, ``paramValue``,
  ``source``), ``log_other`` (``key``, ``value``) and ``file_upload`` (``upload_type``,
  ``file_path`` = the archive member, ``additional_params`` with ``fileName`` or ``figName``,
  ``step``, ``epoch``, and ``metadata``).
  The run's environment, as comet_ml's environment logging writes it: ``standard_output``
  (``output``, ``stderr``, ``local_timestamp``: the Output tab), ``system_details`` (``command``,
  ``env``, ``hostname``, ``os``, ``processor``, ``python_exe``, ``python_version``, ...),
  ``system_info`` (``system_info.key`` / ``value``), ``installed_packages`` (``name==version``
  lines), ``git_metadata`` (``parent`` = the commit, ``branch``, ``origin``, ...) and a
  ``git-patch`` file upload (a zip holding the diff).
* One member per uploaded file, under a temporary name.

A resumed experiment is several archives with one ``offline_id``; :func:`read_offline_dir` merges
them in start-time order, the way ``comet upload`` applies them to one experiment.

Nothing here imports comet_ml, so loggerhub's importer can use it without the SDK.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: Parameters the SDK logs for its own step and epoch counters.
SYSTEM_PARAMS = frozenset({"curr_step", "curr_epoch"})
#: Uploads whose member is small text that is worth inlining.
_INLINE_TEXT = {"text-sample"}
_INLINE_JSON = {"confusion-matrix"}


def metric_value(raw: Any) -> float:
    """A metric value as the archive stores it, back to a float (NaN and infinities included)."""
    if isinstance(raw, str):
        return _SPECIAL_FLOATS[raw] if raw in _SPECIAL_FLOATS else float(raw)
    return float(raw)


def iter_messages(archive: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    """The archive's messages in the order they were written."""
    with archive.open("messages.json") as raw:
        for line in raw:
            if line.strip():
                yield json.loads(line)


def read_offline_zip(path: str | Path) -> dict[str, Any]:
    """One offline archive as plain dicts.

    Returns ``{"path", "key", "experiment", "params", "system_params", "metrics", "others",
    "tags", "uploads", "unknown"}``:

    * ``params``: name to value as logged (last value wins); ``system_params`` holds the SDK's
      own ``curr_step`` / ``curr_epoch`` and any other auto-logged parameter.
    * ``metrics``: name to a list of ``{"step", "epoch", "value", "timestamp"}`` in logged order.
    * ``others``: the Other tab, name to value (last wins); it holds ``Name`` when one was set.
    * ``uploads``: one dict per file, ``{"upload_type", "name", "step", "epoch", "metadata",
      "member", "size", "type"}``; text samples carry ``text``, confusion matrices ``content``.
    * ``output``: ``{"stderr", "output", "timestamp"}`` per ``standard_output`` message.
    * ``system_details`` (the last one; ``{}`` without), ``system_info`` (key to value),
      ``packages`` (the last ``installed_packages`` list), ``git`` (the last ``git_metadata``, or None).
    * ``unknown``: message types this reader does not interpret, with their counts.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        experiment = json.loads(archive.read("experiment.json"))
        members = {info.filename: info.file_size for info in archive.infolist()}
        result: dict[str, Any] = {
            "path": str(path),
            "key": experiment.get("offline_id"),
            "experiment": experiment,
            "params": {},
            "system_params": {},
            "metrics": {},
            "others": {},
            "tags": list(experiment.get("tags") or []),
            "uploads": [],
            "output": [],
            "system_details": {},
            "system_info": {},
            "packages": [],
            "git": None,
            "unknown": {},
        }
        for message in iter_messages(archive):
            _apply(result, message, archive, members)
    for upload in result["uploads"]:
        upload["archive"] = str(path)
    return result


def _apply(result: dict[str, Any], message: dict[str, Any], archive: zipfile.ZipFile,
           members: dict[str, int]) -> None:
    kind = message.get("type")
    payload = message.get("payload") or {}
    if kind == "metric_msg" and payload.get("metric"):
        metric = payload["metric"]
        result["metrics"].setdefault(metric["metricName"], []).append({
            "step": metric.get("step"),
            "epoch": metric.get("epoch"),
            "value": metric_value(metric["metricValue"]),
            "timestamp": payload.get("local_timestamp"),
        })
    elif kind == "parameter_msg":
        param = payload.get("param") or payload.get("params") or {}
        name = param.get("paramName")
        system = name in SYSTEM_PARAMS or param.get("source") == "auto-logged"
        result["system_params" if system else "params"][name] = param.get("paramValue")
    elif kind == "log_other":
        result["others"][payload.get("key")] = payload.get("value")
    elif kind == "file_upload":
        result["uploads"].append(_upload(payload, archive, members))
    elif kind == "standard_output":
        result["output"].append({"stderr": bool(payload.get("stderr")), "output": payload.get("output") or "",
                                 "timestamp": payload.get("local_timestamp")})
    elif kind == "system_details":
        result["system_details"] = {k: v for k, v in payload.items() if k != "message_id"}
    elif kind == "system_info":
        info = payload.get("system_info") or {}
        result["system_info"][info.get("key")] = info.get("value")
    elif kind == "installed_packages":
        result["packages"] = list(payload.get("installed_packages") or [])
    elif kind == "git_metadata":
        result["git"] = payload.get("git_metadata")
    else:
        result["unknown"][kind] = result["unknown"].get(kind, 0) + 1


def _upload(payload: dict[str, Any], archive: zipfile.ZipFile, members: dict[str, int]) -> dict[str, Any]:
    extra = payload.get("additional_params") or {}
    member = payload.get("file_path")
    upload_type = payload.get("upload_type")
    upload: dict[str, Any] = {
        "upload_type": upload_type,
        "name": extra.get("figName") or extra.get("fileName"),
        "type": extra.get("type"),
        "group": extra.get("groupingName"),
        "step": extra.get("step"),
        "epoch": extra.get("epoch"),
        "metadata": payload.get("metadata") or {},
        "member": member if member in members else None,
        "size": members.get(member) if member else None,
    }
    if member is not None and member in members:
        if upload_type in _INLINE_TEXT:
            upload["text"] = archive.read(member).decode("utf-8")
        elif upload_type in _INLINE_JSON:
            upload["content"] = json.loads(archive.read(member))
    return upload


def read_member(path: str | Path, member: str) -> bytes:
    """The bytes of one uploaded file (``upload["member"]``) of an archive."""
    with zipfile.ZipFile(path) as archive:
        return archive.read(member)


def read_offline_dir(directory: str | Path, skipped: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every experiment in a directory of offline archives, merged per experiment key.

    Archives are applied in start-time order (a ``create`` archive first). The merged dict has
    the keys of :func:`read_offline_zip`, with ``parts`` (the archives, in order) in place of
    ``path`` and the first archive's ``experiment``.

    An archive without ``experiment.json`` is the empty placeholder the SDK leaves when its
    process died before ``end()``; its path goes to ``skipped`` when a list is given.
    """
    parts = []
    for archive in sorted(Path(directory).glob("*.zip")):
        try:
            parts.append(read_offline_zip(archive))
        except (KeyError, zipfile.BadZipFile):
            if skipped is not None:
                skipped.append(str(archive))
    parts.sort(key=lambda p: (p["experiment"].get("resume_strategy") != "create",
                              p["experiment"].get("start_time") or 0))
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        target = merged.get(part["key"])
        if target is None:
            target = merged[part["key"]] = {
                "key": part["key"], "experiment": part["experiment"], "parts": [],
                "params": {}, "system_params": {}, "metrics": {}, "others": {}, "tags": [],
                "uploads": [], "output": [], "system_details": {}, "system_info": {}, "packages": [],
                "git": None, "unknown": {},
            }
        target["parts"].append(part["path"])
        for field in ("params", "system_params", "others", "system_details", "system_info"):
            target[field].update(part[field])
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
