"""Canonical loggerhub keys and W&B keys: one reversible rule.

W&B keeps any string as a history, summary or config key, with ``/`` grouping panels into
sections. Keys that begin with ``_`` are W&B's own (``_step``, ``_timestamp``, ``_runtime``,
``_wandb``) and ``loggerhub/`` is this backend's namespace. A user key that would land in either,
or that begins with the escape character ``~``, gets one more leading ``~``.
"""

from __future__ import annotations

from loggerhub_hookspecs.telemetry import NativeNames

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
_NAMES = NativeNames(_HOST, _GPU, gpu_prefix="gpu.", own_prefix=OWN_STATS_PREFIX)

#: The stats item a loggerhub system key becomes and the factor to wandb's unit (None: unknown).
stats_name = _NAMES.native
#: The loggerhub system key of a stats item (wandb's own or this backend's) and the factor back to
#: loggerhub's unit (None: an item loggerhub has no name for).
system_key = _NAMES.key
