"""loggerhub backend for Comet (comet_ml): online experiments, or offline archives to upload later.

Importing this module is light: comet_ml is imported with the session module, in the delivery
process (or by ``loggerhub backends``), never in the training process.
"""

from __future__ import annotations

from loggerhub_hookspecs.kit import TrackerPlugin

__all__ = ["CometBackend"]
__version__ = "0.1.0"


class CometBackend(TrackerPlugin):
    """The ``comet`` loggerhub plugin: one Comet experiment per loggerhub run."""

    session_path = "loggerhub_comet._session:CometSession"

    def client_version(self) -> str | None:
        from loggerhub_comet._session import import_comet

        return str(import_comet().__version__)
