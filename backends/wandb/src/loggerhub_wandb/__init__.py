"""loggerhub's Weights & Biases backend, built on the plugin kit.

Light on purpose: ``wandb`` is imported when a delivery worker opens the run, not here.
"""

from __future__ import annotations

from loggerhub_hookspecs.kit import TrackerPlugin

__all__ = ["WandbBackend"]
__version__ = "0.1.0"


class WandbBackend(TrackerPlugin):
    """The ``wandb`` backend. One instance delivers one run."""

    session_path = "loggerhub_wandb._session:WandbSession"

    def client_version(self) -> str | None:
        import wandb

        return str(wandb.__version__)
