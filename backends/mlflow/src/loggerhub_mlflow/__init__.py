"""MLflow backend for loggerhub.

Select it with ``loggerhub.init(backends=["mlflow"], options={"mlflow": {...}})``; see README.md
for the options. Importing this module is cheap: ``mlflow`` is imported by the delivery process
only, when the run's session opens (``loggerhub_mlflow._backend``).
"""

from __future__ import annotations

from loggerhub_hookspecs.kit import TrackerPlugin

__all__ = ["MlflowBackend"]
__version__ = "0.1.0"


class MlflowBackend(TrackerPlugin):
    """The loggerhub plugin: one instance delivers one loggerhub run to one MLflow run."""

    session_path = "loggerhub_mlflow._backend:MlflowSession"
    client_distribution = "mlflow"
