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

SANDBOX = Path(tempfile.mkdtemp(prefix="loggerhub-ultralytics-"))


def _offline_environment() -> dict[str, str]:
    config = SANDBOX / "yolo-config"
    fonts = config / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    import matplotlib

    # Ultralytics downloads Arial for its plots even when offline; DejaVu Sans stands in.
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copyfile(dejavu, fonts / name)
    return {
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(config),
        "MPLCONFIGDIR": str(SANDBOX / "matplotlib"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


if "ultralytics" in sys.modules:
    raise RuntimeError("ultralytics was imported before tests/integrations/conftest.py set it offline")
OFFLINE_ENV = _offline_environment()
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

#: Two classes that a detector can tell apart by colour alone.
CLASSES = {0: "red", 1: "blue"}
COLOURS = {0: (220, 40, 40), 1: (40, 40, 220)}


def _picture(rng: Any, size: int, objects: int) -> tuple[Any, list[tuple[int, float, float, float, float]]]:
    import numpy as np

    image = np.full((size, size, 3), 96, dtype=np.uint8)
    boxes = []
    for _ in range(objects):
        cls = int(rng.integers(0, len(CLASSES)))
        width, height = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        x0, y0 = int(rng.integers(0, size - width)), int(rng.integers(0, size - height))
        image[y0:y0 + height, x0:x0 + width] = COLOURS[cls]
        boxes.append((cls, (x0 + width / 2) / size, (y0 + height / 2) / size, width / size, height / size))
    return image, boxes


@pytest.fixture(scope="session")
def detect_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detection dataset in YOLO format: 8 train and 4 val images of 64 px; returns data.yaml."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("detect-data")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index in range(count):
            image, boxes = _picture(rng, 64, 2)
            Image.fromarray(image).save(root / "images" / split / f"{split}{index}.jpg")
            (root / "labels" / split / f"{split}{index}.txt").write_text(
                "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
            )
    names = "".join(f"  {i}: {name}\n" for i, name in CLASSES.items())
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data


@pytest.fixture(scope="session")
def classify_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification dataset: <root>/{train,val}/<class>/*.jpg, 4 + 2 images per class."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("classify-data")
    rng = np.random.default_rng(1)
    for split, count in (("train", 4), ("val", 2)):
        for cls, name in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                image = np.full((64, 64, 3), COLOURS[cls], dtype=np.uint8)
                noise = rng.integers(-20, 20, image.shape)
                Image.fromarray(np.clip(image + noise, 0, 255).astype(np.uint8)).save(folder / f"{index}.jpg")
    return root


def train_args(root: Path, name: str, **extra: Any) -> dict[str, Any]:
    """The tiny, deterministic, CPU-only training every test runs."""
    return {
        "epochs": 2, "imgsz": 64, "batch": 4, "workers": 0, "device": "cpu", "amp": False,
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
