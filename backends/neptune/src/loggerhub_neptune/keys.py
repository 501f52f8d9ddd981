"""The reversible mapping between loggerhub's canonical keys and Neptune field paths.

Neptune 1.x splits a field path on ``/`` and silently drops empty segments (``a//b``, ``/a`` and
``a/`` would all land on another field), and its root namespaces ``sys``, ``source_code`` and
``monitoring`` belong to the client. This backend also owns ``parameters``, ``models``,
``artifacts`` and ``loggerhub``. Every other character, unicode included, is kept as it is.

Two rules, both bijective, so no two canonical keys ever share a path:

1. A segment made only of tildes (the empty segment included) gets one more tilde:
   ``a//b`` -> ``a/~/b``, ``a/~/b`` -> ``a/~~/b``. Other segments are unchanged.
2. At the root only: a first segment that is a reserved name preceded by zero or more
   underscores gets one more underscore: ``sys/x`` -> ``_sys/x``, ``_sys/x`` -> ``__sys/x``.

Rule 1 alone (:func:`to_segment_path`) maps keys inside a namespace (parameters live under
``parameters/``); :func:`to_tracker` applies both for fields at the root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loggerhub_hookspecs.telemetry import GpuQuantity, SystemKey, gpu_key, parse_system_key

#: Root namespaces a canonical key may not land in as it is.
RESERVED_ROOTS = frozenset(
    {"sys", "source_code", "monitoring", "parameters", "models", "artifacts", "loggerhub"}
)

_TILDES = re.compile(r"~*")
_ESCAPED_TILDES = re.compile(r"~+")
_RESERVED = re.compile(r"(_*)(" + "|".join(sorted(RESERVED_ROOTS)) + ")")
_ESCAPED_RESERVED = re.compile(r"_(_*)(" + "|".join(sorted(RESERVED_ROOTS)) + ")")


def to_segment_path(key: str) -> str:
    """``key`` as a path Neptune keeps segment for segment, for use inside a namespace."""
    if not key:
        raise ValueError("a key must be a non-empty string")
    return "/".join(s + "~" if _TILDES.fullmatch(s) else s for s in key.split("/"))


def from_segment_path(path: str) -> str:
    """Inverse of :func:`to_segment_path`."""
    if not path:
        raise ValueError("a Neptune path must be a non-empty string")
    segments = path.split("/")
    for segment in segments:
        if not segment:
            raise ValueError(f"{path!r} has an empty segment, which to_segment_path never writes")
    return "/".join(s[:-1] if _ESCAPED_TILDES.fullmatch(s) else s for s in segments)


def to_tracker(key: str) -> str:
    """The Neptune field path, at the run's root, for canonical ``key``."""
    path = to_segment_path(key)
    first, sep, rest = path.partition("/")
    if _RESERVED.fullmatch(first):
        first = "_" + first
    return first + sep + rest


def from_tracker(path: str) -> str:
    """The canonical key of a root field path written by :func:`to_tracker`."""
    first, sep, rest = path.partition("/")
    if _ESCAPED_RESERVED.fullmatch(first):
        first = first[1:]
    elif _RESERVED.fullmatch(first):
        raise ValueError(f"{path!r} is in a namespace loggerhub or Neptune owns, not a logged key")
    return from_segment_path(first + sep + rest)


class KeyMap:
    """Remembers which canonical key produced each Neptune path, and refuses a second one.

    The mapping above is injective, so this never fires for valid input; it is the guard that keeps
    that promise checked at run time rather than assumed.
    """

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    def path(self, key: str, namespace: str | None = None) -> str:
        """The full Neptune path of ``key``: at the root, or inside ``namespace``."""
        path = to_tracker(key) if namespace is None else f"{namespace}/{to_segment_path(key)}"
        owner = self._owner.setdefault(path, key)
        if owner != key:
            raise KeyCollision(f"keys {owner!r} and {key!r} both map to the Neptune field {path!r}")
        return path


class KeyCollision(ValueError):
    """Two canonical keys map to the same Neptune path."""



# -- system metrics ----------------------------------------------------------------------------
#
# Neptune's own hardware monitor (neptune/common/hardware, HardwareMetricReportingJob) writes one
# float series per resource under the run's monitoring namespace: ``cpu`` (%), ``memory`` (GB in
# use, total minus available), and per GPU ``gpu`` (%), ``gpu_memory`` (GB used) and
# ``gpu_power`` (W). A resource with one gauge is named by the resource alone; with several (more
# than one GPU) each gauge gets the card index: ``gpu_0``, ``gpu_memory_1``. loggerhub's series
# that Neptune does not sample keep their own names beside them (``process_cpu_percent``,
# ``gpu_0_temperature_c``).

#: MB per GB in Neptune's memory series (neptune.common.hardware.constants: 2**30 bytes per GB).
MB_PER_GB = 1024.0

_NATIVE_HOST = {SystemKey.CPU_PERCENT: ("cpu", 1.0, "%"), SystemKey.MEMORY_USED_MB: ("memory", 1 / MB_PER_GB, "GB")}
_NATIVE_GPU = {GpuQuantity.UTILIZATION_PERCENT: ("gpu", 1.0, "%"),
               GpuQuantity.MEMORY_USED_MB: ("gpu_memory", 1 / MB_PER_GB, "GB"),
               GpuQuantity.POWER_W: ("gpu_power", 1.0, "W")}
_NATIVE_GPU_NAME = re.compile(r"(gpu|gpu_memory|gpu_power)(?:_(\d+))?")
_OWN_GPU_NAME = re.compile(r"gpu_(\d+)_([a-z_]+)")
_UNITS = (("_percent", "%"), ("_mb_s", "MB/s"), ("_mb", "MB"), ("_temperature_c", "°C"), ("_power_w", "W"))


@dataclass(frozen=True)
class MonitoringSeries:
    """Where a loggerhub system series goes in the monitoring namespace: the series ``name``,
    the ``factor`` from loggerhub's unit to the ``unit`` Neptune shows."""

    name: str
    factor: float
    unit: str | None


def monitoring_series(key: str, gpu_count: int) -> MonitoringSeries | None:
    """The series a loggerhub system key becomes, or ``None`` for a key this version does not
    know. ``gpu_count`` is the number of GPUs the run sees: with one, Neptune names its GPU
    series without an index."""
    parsed = parse_system_key(key)
    if parsed is None:
        return None
    if parsed.host is not None:
        if parsed.host in _NATIVE_HOST:
            return MonitoringSeries(*_NATIVE_HOST[parsed.host])
        name = parsed.host.value.removeprefix("system/")
    else:
        assert parsed.gpu is not None and parsed.gpu_quantity is not None
        if parsed.gpu_quantity in _NATIVE_GPU:
            native, factor, native_unit = _NATIVE_GPU[parsed.gpu_quantity]
            single = gpu_count == 1 and parsed.gpu == 0
            return MonitoringSeries(native if single else f"{native}_{parsed.gpu}", factor, native_unit)
        name = f"gpu_{parsed.gpu}_{parsed.gpu_quantity.value}"
    unit = next((u for suffix, u in _UNITS if name.endswith(suffix)), None)
    return MonitoringSeries(name, 1.0, unit)


def system_key(name: str) -> tuple[str, float] | None:
    """The loggerhub system key of a series in a monitoring namespace (Neptune's own or one this
    backend wrote) and the factor back to loggerhub's unit; ``None`` for another field."""
    for host, (native, factor, _) in _NATIVE_HOST.items():
        if name == native:
            return host.value, 1 / factor
    match = _NATIVE_GPU_NAME.fullmatch(name)
    if match:
        for quantity, (native, factor, _) in _NATIVE_GPU.items():
            if match.group(1) == native:
                return gpu_key(int(match.group(2) or 0), quantity), 1 / factor
    match = _OWN_GPU_NAME.fullmatch(name)
    key = f"system/gpu/{match.group(1)}/{match.group(2)}" if match else f"system/{name}"
    return (key, 1.0) if parse_system_key(key) is not None else None
