"""The embedded ``local`` backend: the run directory's journal is its store.

It needs no server and no extra package. It has no delivery worker, because every record is in
the journal the moment it is flushed; ``loggerhub runs``, ``show`` and ``plot`` read it there.
"""

from __future__ import annotations

from loggerhub_hookspecs import hookimpl


class LocalBackend:
    @hookimpl
    def loggerhub_client_version(self) -> str:
        from loggerhub import __version__

        return __version__
