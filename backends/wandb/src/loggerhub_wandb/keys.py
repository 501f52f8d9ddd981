"""Canonical loggerhub keys and W&B keys: one reversible rule.

W&B keeps any string as a history, summary or config key, with ``/`` grouping panels into
sections. Keys that begin with ``_`` are W&B's own (``_step``, ``_timestamp``, ``_runtime``,
``_wandb``) and ``loggerhub/`` is this backend's namespace. A user key that would land in either,
or that begins with the escape character ``~``, gets one more leading ``~``.
"""

from __future__ import annotations

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
