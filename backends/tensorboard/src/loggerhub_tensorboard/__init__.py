"""loggerhub's TensorBoard backend: writes event files with tensorboard's own writer.

Light on purpose: ``tensorboard`` is imported when a delivery worker opens the run's session
(``loggerhub_tensorboard._session``), not here.
"""

from __future__ import annotations

from loggerhub_hookspecs.kit import TrackerPlugin

__all__ = ["TensorBoardBackend"]
__version__ = "0.1.0"


class TensorBoardBackend(TrackerPlugin):
    """The ``tensorboard`` backend. One instance delivers one run."""

    session_path = "loggerhub_tensorboard._session:TensorBoardSession"
    client_distribution = "tensorboard"
