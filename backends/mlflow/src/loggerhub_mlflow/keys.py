"""Canonical loggerhub keys to MLflow names and back, by a reversible escape.

MLflow refuses names that loggerhub accepts:

* metric, param and tag names may hold only ``\\w`` (Unicode letters, digits, ``_``), ``. - /``,
  space and, on POSIX servers only, ``:``; they must stay the same under ``posixpath.normpath``
  (no empty, ``.`` or ``..`` segment, no leading ``/``, not starting with ``..``); at most 250
  characters.
* ``log_image`` keys may hold only ASCII ``[A-Za-z0-9_.\\- /]``, and they end up in a file name.
* artifact paths lose everything after ``#`` or ``?``, and ``%xx`` is URL-decoded on the way to
  the server, so ``a#b.txt`` is silently stored as ``a``.

The rule: every character that the target does not accept, and every character that would
break the path rules, becomes ``__`` plus its code point in lowercase hex: ``__hh`` below
U+0100, ``__uhhhh`` below U+10000, ``__Uhhhhhhhh`` above. ``(`` becomes ``__28``, so
``metrics/mAP50-95(B)`` reads ``metrics/mAP50-95__28B__29`` in MLflow. A literal ``_`` is escaped
(``__5f``) only where it would otherwise start an escape, that is when it is followed by ``_``
and a valid escape body: ``train__loss`` and ``clf__C`` stay as they are. ``:`` is always escaped,
so that names work on Windows servers and in ``log_table`` paths too.

:func:`from_tracker` undoes the escapes, so ``from_tracker(to_tracker(k)) == k`` for every key
and no two keys share an MLflow name. :class:`KeyMap` still checks, per run, that no MLflow name
is claimed by two keys, so that a change of this rule could never merge two series silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

from loggerhub_hookspecs.telemetry import GpuQuantity, SystemKey, gpu_key, parse_system_key

__all__ = [
    "IMAGE_KEY_MAX_LENGTH",
    "NAME_MAX_LENGTH",
    "KeyCollision",
    "KeyMap",
    "UnmappableKey",
    "from_tracker",
    "system_from_tracker",
    "system_scale",
    "system_to_tracker",
    "to_tracker",
]

#: MLflow's limit for metric, param and tag names.
NAME_MAX_LENGTH = 250
#: ``log_image`` stores ``images/<key>+step+<19 digits>+timestamp+<13 digits>+<uuid>+compressed.webp``
#: as one file name; 150 keeps that within the 255 bytes file systems allow.
IMAGE_KEY_MAX_LENGTH = 150

ESCAPE = "__"
_BODY = re.compile(r"U[0-9a-f]{8}|u[0-9a-f]{4}|[0-9a-f]{2}")

_NAME_CHAR = re.compile(r"[\w.\- ]")
_IMAGE_CHAR = re.compile(r"[A-Za-z0-9_.\- ]")
_ARTIFACT_UNSAFE = re.compile(r"[#?%\\:\x00-\x1f\x7f]")

KINDS = ("name", "image", "artifact")


class UnmappableKey(ValueError):
    """A key that has no MLflow form, because it is too long once escaped."""


class KeyCollision(ValueError):
    """Two canonical keys that map to one MLflow name within a run."""


def _allowed(kind: str) -> Callable[[str], bool]:
    if kind == "name":
        return lambda ch: _NAME_CHAR.fullmatch(ch) is not None
    if kind == "image":
        return lambda ch: _IMAGE_CHAR.fullmatch(ch) is not None
    if kind == "artifact":
        return lambda ch: _ARTIFACT_UNSAFE.fullmatch(ch) is None
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"{ESCAPE}{code:02x}"
    if code < 0x10000:
        return f"{ESCAPE}u{code:04x}"
    return f"{ESCAPE}U{code:08x}"


def _forced(key: str) -> list[bool]:
    """Positions escaped to satisfy MLflow's path rules, whatever the character."""
    forced = [False] * len(key)
    kept: list[int] = []  # the slashes that stay separators
    for i, ch in enumerate(key):
        if ch != "/":
            continue
        # An empty segment (leading, trailing or doubled slash) would be normalised away.
        if i == 0 or i == len(key) - 1 or (kept and kept[-1] == i - 1):
            forced[i] = True
        else:
            kept.append(i)
    bounds = [-1, *kept, len(key)]
    for start, end in pairwise(bounds):
        if key[start + 1 : end] in (".", ".."):
            forced[start + 1] = True
    if key.startswith(".."):
        forced[0] = True
    return forced


def to_tracker(key: str, kind: str = "name") -> str:
    """The MLflow form of a canonical key.

    :param kind: ``"name"`` for metric, param and tag names (and the artifact paths built from
        them), ``"image"`` for ``log_image`` keys, ``"artifact"`` for artifact file names.
    :raises UnmappableKey: when the escaped name is longer than MLflow allows.
    """
    if not isinstance(key, str) or not key:
        raise UnmappableKey(f"keys must be non-empty strings, got {key!r}")
    allowed = _allowed(kind)
    forced = _forced(key)
    pieces: list[str] = []
    following = ""  # the start of what is already encoded to the right of the current position
    for i in range(len(key) - 1, -1, -1):
        ch = key[i]
        if forced[i] or not (ch == "/" or allowed(ch)):
            piece = _escape(ch)
        elif ch == "_" and following.startswith("_") and _BODY.match(following, 1):
            piece = _escape(ch)  # it would read as the start of an escape
        else:
            piece = ch
        pieces.append(piece)
        following = (piece + following)[:16]
    tracker = "".join(reversed(pieces))
    limit = {"name": NAME_MAX_LENGTH, "image": IMAGE_KEY_MAX_LENGTH}.get(kind)
    if limit is not None and len(tracker) > limit:
        raise UnmappableKey(
            f"key {_short(key)} is {len(tracker)} characters long as an MLflow {kind} "
            f"({_short(tracker)}); MLflow allows {limit}"
        )
    return tracker


def from_tracker(name: str) -> str:
    """The canonical key for an MLflow name made by :func:`to_tracker` (any kind)."""
    out: list[str] = []
    i = 0
    while i < len(name):
        if name.startswith(ESCAPE, i):
            body = _BODY.match(name, i + len(ESCAPE))
            if body is not None:
                code = int(body.group().lstrip("uU"), 16)
                if code <= 0x10FFFF:
                    out.append(chr(code))
                    i = body.end()
                    continue
        out.append(name[i])
        i += 1
    return "".join(out)


class KeyMap:
    """Maps the keys of one run, remembers them, and refuses a second key for one MLflow name."""

    def __init__(self, encode: Callable[[str, str], str] = to_tracker) -> None:
        self._encode = encode
        self._tracker: dict[tuple[str, str], str] = {}
        self._canonical: dict[tuple[str, str], str] = {}

    def __call__(self, key: str, kind: str = "name") -> str:
        """The MLflow form of ``key``; raises :class:`UnmappableKey` or :class:`KeyCollision`."""
        tracker = self._tracker.get((kind, key))
        if tracker is not None:
            return tracker
        tracker = self._encode(key, kind)
        claimed = self._canonical.setdefault((kind, tracker), key)
        if claimed != key:
            raise KeyCollision(
                f"keys {_short(claimed)} and {_short(key)} both map to the MLflow {kind} "
                f"{_short(tracker)}; the second one is refused"
            )
        self._tracker[(kind, key)] = tracker
        return tracker


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


# --------------------------------------------------------------------------- system metrics

#: loggerhub's host series -> the names MLflow's own system metrics monitor logs
#: (``mlflow.system_metrics.metrics``: cpu_monitor, disk_monitor), so that MLflow's UI charts
#: them in its system metrics section. A series MLflow does not sample keeps its loggerhub name:
#: the process's CPU and memory, disk I/O rates, and the network *rates* (MLflow's
#: ``network_receive_megabytes`` is a total since the monitor started, another quantity).
SYSTEM_NAMES: dict[str, str] = {
    SystemKey.CPU_PERCENT.value: "system/cpu_utilization_percentage",
    SystemKey.MEMORY_USED_MB.value: "system/system_memory_usage_megabytes",
    SystemKey.MEMORY_PERCENT.value: "system/system_memory_usage_percentage",
    SystemKey.DISK_USED_MB.value: "system/disk_usage_megabytes",
    SystemKey.DISK_FREE_MB.value: "system/disk_available_megabytes",
}

#: loggerhub's per-GPU quantities -> the suffix of MLflow's ``system/gpu_<i>_<suffix>`` (gpu_monitor).
#: MLflow has no GPU temperature or total memory series.
GPU_SUFFIXES: dict[GpuQuantity, str] = {
    GpuQuantity.UTILIZATION_PERCENT: "utilization_percentage",
    GpuQuantity.MEMORY_USED_MB: "memory_usage_megabytes",
    GpuQuantity.MEMORY_PERCENT: "memory_usage_percentage",
    GpuQuantity.POWER_W: "power_usage_watts",
}

#: loggerhub's MB are MiB (2**20 bytes, ``loggerhub.telemetry.system``); MLflow's megabytes are
#: 10**6 bytes (its monitors divide by 1e6). A value under an MLflow ``_megabytes`` name is
#: converted, so that it means what MLflow's own series means.
MIB_IN_MEGABYTES = 2**20 / 10**6

_SYSTEM_KEYS = {name: key for key, name in SYSTEM_NAMES.items()}
_GPU_QUANTITIES = {suffix: quantity for quantity, suffix in GPU_SUFFIXES.items()}
_MLFLOW_GPU = re.compile(r"system/gpu_(\d+)_([a-z_]+)")


def system_to_tracker(key: str) -> str:
    """The MLflow name of a system metric: MLflow's own where it has the series, otherwise the
    key itself (escaped by :func:`to_tracker`, like any other name)."""
    name = SYSTEM_NAMES.get(key)
    if name is not None:
        return name
    parsed = parse_system_key(key)
    if parsed is not None and parsed.gpu is not None and parsed.gpu_quantity in GPU_SUFFIXES:
        return f"system/gpu_{parsed.gpu}_{GPU_SUFFIXES[parsed.gpu_quantity]}"
    return to_tracker(key)


def system_scale(name: str) -> float:
    """The factor from loggerhub's unit to MLflow's for the MLflow name of a mapped system metric."""
    mapped = name in _SYSTEM_KEYS or _MLFLOW_GPU.fullmatch(name) is not None
    return MIB_IN_MEGABYTES if mapped and name.endswith("_megabytes") else 1.0


def system_from_tracker(name: str) -> str:
    """The loggerhub key of an MLflow ``system/`` metric: loggerhub's name where MLflow's series
    is one of loggerhub's, otherwise MLflow's name unchanged (``system/disk_usage_percentage``,
    ``system/network_receive_megabytes``, a node's ``system/node_0/...``)."""
    key = _SYSTEM_KEYS.get(name)
    if key is not None:
        return key
    match = _MLFLOW_GPU.fullmatch(name)
    if match is not None and match.group(2) in _GPU_QUANTITIES:
        return gpu_key(int(match.group(1)), _GPU_QUANTITIES[match.group(2)])
    return from_tracker(name)
