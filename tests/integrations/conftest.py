"""Offline Ultralytics, tiny synthetic datasets, and the trackers an end-to-end test can reach.

The environment is set when this file is imported, before any test module can import
ultralytics: it reads ``YOLO_OFFLINE`` and ``YOLO_CONFIG_DIR`` once, at import.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loggerhub.testing.ultralytics import classify_dataset, detect_dataset, offline_environment, task_dataset

SANDBOX = Path(tempfile.mkdtemp(prefix="loggerhub-ultralytics-"))


if "ultralytics" in sys.modules:
    raise RuntimeError("ultralytics was imported before tests/integrations/conftest.py set it offline")
OFFLINE_ENV = offline_environment(SANDBOX)
os.environ.update(OFFLINE_ENV)
# Trackers must store where each test says, never where the developer's shell points.
for _variable in ("MLFLOW_TRACKING_URI", "COMET_API_KEY", "NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT"):
    os.environ.pop(_variable, None)

#: The trackers an end-to-end test logs to, when their backend is installed.
TRACKERS = ("neptune", "comet", "tensorboard", "mlflow")


@pytest.fixture(scope="session", autouse=True)
def _remove_sandbox() -> Iterator[None]:
    yield
    shutil.rmtree(SANDBOX, ignore_errors=True)


# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="session")
def detect_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detection dataset in YOLO format: 8 train and 4 val images of 64 px; returns data.yaml."""
    return detect_dataset(tmp_path_factory.mktemp("detect-data"))


@pytest.fixture(scope="session")
def task_data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``task_data(task)``: the data.yaml of a synthetic segment, pose or obb dataset."""
    return lambda task: task_dataset(tmp_path_factory.mktemp(f"{task}-data"), task)


@pytest.fixture(scope="session")
def classify_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification dataset: <root>/{train,val}/<class>/*.jpg, 4 + 2 images per class."""
    return classify_dataset(tmp_path_factory.mktemp("classify-data"))


def train_args(root: Path, name: str, **extra: Any) -> dict[str, Any]:
    """The tiny, deterministic, CPU-only training every test runs.

    ``nbs`` (the batch size Ultralytics accumulates gradients up to) equals the batch: one optimizer
    step per batch, so on the 8-image datasets every epoch ends 2 optimizer steps after the last.
    With Ultralytics' default (64) such a training takes a single optimizer step in all.
    """
    return {
        "epochs": 2, "imgsz": 64, "batch": 4, "nbs": 4, "workers": 0, "device": "cpu", "amp": False,
        "plots": True, "project": str(root / "ultralytics-runs"), "name": name, "exist_ok": True,
        "verbose": False, "seed": 0, "deterministic": True, **extra,
    }


@pytest.fixture(scope="session")
def train_kwargs() -> Any:
    """``train_kwargs(root, name, **extra)``: the keyword arguments of ``model.train``."""
    return train_args


# --------------------------------------------------------------------------- trackers


#: The client library each tracker backend drives.
_CLIENTS = {"neptune": "neptune", "comet": "comet_ml", "tensorboard": "tensorboard", "mlflow": "mlflow"}


def installed_trackers() -> list[str]:
    """The trackers whose loggerhub backend and client are installed.

    Nothing is imported: a tracker SDK imported here would patch this process (comet_ml does),
    where the trainings under test run.
    """
    import importlib.util

    from loggerhub.plugins import installed_backends

    backends = installed_backends()
    return [name for name in TRACKERS
            if name in backends and importlib.util.find_spec(_CLIENTS[name]) is not None]


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A real ``mlflow server`` on 127.0.0.1 when the mlflow backend is installed, else None."""
    if "mlflow" not in installed_trackers():
        yield None
        return
    from loggerhub_mlflow.testing import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server.uri


@pytest.fixture(scope="session")
def trackers() -> list[str]:
    """The trackers an end-to-end test logs to: those installed here."""
    return installed_trackers()


@pytest.fixture(scope="session")
def tracker_options(mlflow_uri: str | None) -> Any:
    """``tracker_options(name, root)``: options keeping a tracker offline, storing under ``root``."""
    return lambda name, root: _tracker_options(name, Path(root), mlflow_uri)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tracker" in metafunc.fixturenames:
        names = installed_trackers()
        metafunc.parametrize("tracker", names or [pytest.param(None, marks=pytest.mark.skip(
            reason="no tracker backend is installed"))])


def _tracker_options(name: str, root: Path, mlflow_uri: str | None) -> dict[str, Any]:
    if name == "neptune":
        return {"mode": "offline", "data_dir": str(root / "neptune")}
    if name == "comet":
        return {"online": False, "offline_dir": str(root / "comet")}
    if name == "tensorboard":
        return {"logdir": str(root / "tensorboard" / "{project}" / "{run_id}")}
    if name == "mlflow":
        assert mlflow_uri is not None
        return {"tracking_uri": mlflow_uri}
    raise KeyError(name)
