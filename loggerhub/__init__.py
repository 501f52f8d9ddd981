"""loggerhub: log one training run to every experiment tracker through one API.

``import loggerhub`` is kept light: it imports no tracker SDK, no numpy and no pydantic. The names
below load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from loggerhub.run import LoggerhubWarning, Run, RunFinishedError, init
    from loggerhub_hookspecs import ArtifactKind, Box, Phase, Status

_LAZY = {
    "init": "loggerhub.run",
    "Run": "loggerhub.run",
    "LoggerhubWarning": "loggerhub.run",
    "RunFinishedError": "loggerhub.run",
    "Box": "loggerhub_hookspecs",
    "Status": "loggerhub_hookspecs",
    "ArtifactKind": "loggerhub_hookspecs",
    "Phase": "loggerhub_hookspecs",
}

__all__ = ["ArtifactKind", "Box", "LoggerhubWarning", "Phase", "Run", "RunFinishedError", "Status", "__version__",
           "init"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loggerhub' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
