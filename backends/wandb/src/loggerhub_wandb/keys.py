"""Canonical loggerhub keys and W&B keys: one reversible rule.

W&B keeps any string as a history, summary or config key, with ``/`` grouping panels into
sections. Keys that begin with ``_`` are W&B's own (``_step``, ``_timestamp``, ``_runtime``,
``_wandb``) and ``loggerhub/`` is this backend's namespace. A user key that would land in either,
or that begins with the escape character ``~``, gets one more leading ``~``.
"""

from __future__ import annotations

from loggerhub_hookspecs.telemetry import parse_system_key

ESCAPE = "~"
NAMESPACE = "loggerhub/"

#: The user's step, the x-axis of every chart this backend defines.
STEP = NAMESPACE + "step"
#: The epoch of a metric row, when the logger knew it.
EPOCH = NAMESPACE + "epoch"
#: Marks a history row that holds a figure (W&B shows figures as images).
FIGURE = NAMESPACE + "figure"


def to_tracker(key: str) -> str:
    """The W&B key for a canonical key."""
    if key.startswith(("_", ESCAPE, NAMESPACE)):
        return ESCAPE + key
    return key


def from_tracker(key: str) -> str | None:
    """The canonical key of a W&B key, or None for W&B's and this backend's own keys."""
    if key.startswith(ESCAPE):
        return key[1:]
    if key.startswith(("_", NAMESPACE)):
        return None
    return key


def reserved(name: str) -> str:
    """A key in this backend's own namespace."""
    return NAMESPACE + name


# -- system metrics ----------------------------------------------------------------------------
#
# wandb's own system monitor writes a stats record per sample into the .wandb file, which the
# W&B App shows in its System section (https://docs.wandb.ai/ref/python/experiments/system-metrics):
# ``memory_percent``, ``proc.memory.rssMB`` (the process's resident memory), and per GPU
# ``gpu.<i>.gpu`` (%), ``gpu.<i>.memoryAllocated`` (% of its memory), ``gpu.<i>.memoryAllocatedBytes``,
# ``gpu.<i>.temp`` (°C) and ``gpu.<i>.powerWatts``. loggerhub's series wandb samples differently
# (system-wide CPU, rates where wandb keeps running totals) go beside them as ``loggerhub.<name>``.

BYTES_PER_MB = 2.0**20
OWN_STATS_PREFIX = "loggerhub."

_HOST = {"system/memory_percent": ("memory_percent", 1.0), "system/process_memory_mb": ("proc.memory.rssMB", 1.0)}
_GPU = {"utilization_percent": ("gpu", 1.0), "memory_percent": ("memoryAllocated", 1.0),
        "memory_used_mb": ("memoryAllocatedBytes", BYTES_PER_MB), "temperature_c": ("temp", 1.0),
        "power_w": ("powerWatts", 1.0)}
_HOST_BACK = {name: (key, 1 / factor) for key, (name, factor) in _HOST.items()}
_GPU_BACK = {name: (quantity, 1 / factor) for quantity, (name, factor) in _GPU.items()}


def stats_name(key: str) -> tuple[str, float] | None:
    """The stats item a loggerhub system key becomes and the factor to wandb's unit, or ``None``
    for a key this version does not know."""
    parsed = parse_system_key(key)
    if parsed is None:
        return None
    if key in _HOST:
        return _HOST[key]
    if parsed.gpu is not None and parsed.gpu_quantity is not None and parsed.gpu_quantity.value in _GPU:
        name, factor = _GPU[parsed.gpu_quantity.value]
        return f"gpu.{parsed.gpu}.{name}", factor
    return OWN_STATS_PREFIX + key.removeprefix("system/").replace("/", "."), 1.0


def system_key(name: str) -> tuple[str, float] | None:
    """The loggerhub system key of a stats item (wandb's own or this backend's) and the factor
    back to loggerhub's unit; ``None`` for an item loggerhub has no name for."""
    if name in _HOST_BACK:
        return _HOST_BACK[name]
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "gpu" and parts[1].isdigit() and parts[2] in _GPU_BACK:
        quantity, factor = _GPU_BACK[parts[2]]
        return f"system/gpu/{int(parts[1])}/{quantity}", factor
    if name.startswith(OWN_STATS_PREFIX):
        key = "system/" + name[len(OWN_STATS_PREFIX):].replace(".", "/")
        if parse_system_key(key) is not None:
            return key, 1.0
    return None
