"""loggerhub backend for Neptune (the ``neptune`` 1.x client), offline first.

Importing this module is cheap: the Neptune client is imported by the session module, in the
delivery process, or when ``loggerhub backends`` asks for the client's version. See README.md for
options, layout and limits.
"""

from __future__ import annotations

from loggerhub_hookspecs.kit import TrackerPlugin

__version__ = "0.1.0"
__all__ = ["NeptuneBackend"]


class NeptuneBackend(TrackerPlugin):
    """The ``neptune`` loggerhub plugin: one instance per delivery process."""

    session_path = "loggerhub_neptune._session:NeptuneSession"
    client_distribution = "neptune"
