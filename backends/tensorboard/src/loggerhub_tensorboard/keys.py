"""The mapping between loggerhub's canonical keys and TensorBoard tags.

TensorBoard keeps any string as a tag, verbatim (checked with both of its loaders: ``:#%@!``,
spaces, ``//``, leading or trailing ``/``, ``.``, ``..``, backslashes, newlines, non-ASCII, HTML).
So a canonical key is its own tag, with one exception: the tags that begin with ``_hparams_/``
(TensorBoard's HParams plugin) or ``_loggerhub_/`` (this backend's own records) are reserved. A
key that would land there, or on a key already escaped that way, gets one more leading ``_``:

* ``train/loss`` -> ``train/loss``
* ``_hparams_/x`` -> ``__hparams_/x``; ``__hparams_/x`` -> ``___hparams_/x``

The rule is a bijection between canonical keys and non-reserved tags, so two keys never share a
tag. ``from_tracker`` returns None for a reserved tag, which no logged key produces.
"""

from __future__ import annotations

import re

#: The prefix of every tag this backend writes for itself.
LOGGERHUB_PREFIX = "_loggerhub_/"
#: The prefix of the HParams plugin's tags.
HPARAMS_PREFIX = "_hparams_/"

_ESCAPABLE = re.compile(r"^(_+)(?:hparams_|loggerhub_)/")


def to_tracker(key: str) -> str:
    """The TensorBoard tag for a canonical key."""
    return "_" + key if _ESCAPABLE.match(key) else key


def from_tracker(tag: str) -> str | None:
    """The canonical key for a tag, or None for a reserved tag that no key maps to."""
    match = _ESCAPABLE.match(tag)
    if match is None:
        return tag
    if len(match.group(1)) == 1:
        return None
    return tag[1:]


def is_reserved(tag: str) -> bool:
    """True for tags that TensorBoard's HParams plugin or this backend write for themselves."""
    return from_tracker(tag) is None


def reserved(name: str) -> str:
    """This backend's own tag ``_loggerhub_/<name>``."""
    return LOGGERHUB_PREFIX + name
