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
