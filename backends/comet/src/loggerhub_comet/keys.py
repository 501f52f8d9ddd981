"""The reversible mapping between loggerhub's canonical keys and Comet names.

Comet accepts any string as a metric, parameter, image or asset name, so almost every key is
used unchanged. Three things force an escape:

* The SDK writes its own bookkeeping under ``curr_step`` and ``curr_epoch`` (parameters) and
  ``process duration`` (a metric); a user key with one of those names would be mixed with them.
* Image names that start with ``~`` are expanded to the home directory by the SDK.
* The escape character itself must stay unambiguous.

Rule: a key that is reserved, or starts with ``!`` or ``~``, gets one ``!`` prepended; every other
key is used as it is. ``from_tracker`` strips one leading ``!``. The mapping is injective, so two
canonical keys never share a Comet name.

Length is the one thing no reversible rule can fix: the SDK truncates metric and parameter names
longer than :data:`MAX_NAME_LENGTH` characters, which could silently merge two keys. Such keys are
refused with :class:`NameTooLong` instead (the backend turns it into ``Rejected``).
"""

from __future__ import annotations

ESCAPE = "!"
#: Names the Comet SDK writes itself; user keys with these names are escaped.
RESERVED = frozenset({"curr_step", "curr_epoch", "process duration"})
#: comet_ml truncates longer metric and parameter names (``MAXIMAL_KEY_LENGTH``).
MAX_NAME_LENGTH = 100


class NameTooLong(ValueError):
    """A key whose Comet name the SDK would truncate."""


def to_tracker(key: str) -> str:
    """The Comet name for a canonical key."""
    if key in RESERVED or key.startswith((ESCAPE, "~")):
        return ESCAPE + key
    return key


def from_tracker(name: str) -> str:
    """The canonical key for a Comet name written by :func:`to_tracker`."""
    return name[len(ESCAPE):] if name.startswith(ESCAPE) else name


def metric_name(key: str) -> str:
    """The Comet name for a metric or parameter key, or :class:`NameTooLong`."""
    name = to_tracker(key)
    if len(name) > MAX_NAME_LENGTH:
        raise NameTooLong(
            f"key {key[:40]!r}... is {len(name)} characters long as a Comet name; comet_ml truncates "
            f"metric and parameter names to {MAX_NAME_LENGTH}, which could merge it with another key"
        )
    return name
