"""A real MLflow tracking server for the whole session, and a clean MLflow environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from loggerhub_mlflow.testing import MlflowServer

# Runs must go where each test says, never to a server configured in the developer's shell.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
