"""Round trips across trackers through W&B, compared field by field.

* W&B -> MLflow: a run delivered to W&B offline is imported from its ``.wandb`` files and replayed
  into a real ``mlflow server``; the imported journal equals the original one, and MLflow holds it.
* Neptune offline -> W&B: a run delivered to Neptune offline is imported, replayed into W&B
  offline, and imported again from the ``.wandb`` files: both imports hold the same records.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("loggerhub_wandb")
pytest.importorskip("loggerhub_mlflow")
pytest.importorskip("loggerhub_neptune")

from loggerhub_mlflow.testing import MlflowServer, read_back  # noqa: E402
from loggerhub_wandb import reader  # noqa: E402
from loggerhub_wandb.testing import SANDBOX_VARIABLES, journal_view, sandbox_environment  # noqa: E402

import loggerhub  # noqa: E402
from loggerhub.delivery import ConsumerStatus  # noqa: E402
from loggerhub.importing import import_runs  # noqa: E402

FIELDS = ("metrics", "figures", "texts", "tables", "checkpoints", "artifacts", "status", "error")


@pytest.fixture(autouse=True)
def quiet_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (*SANDBOX_VARIABLES, "MLFLOW_TRACKING_URI", "NEPTUNE_API_TOKEN", "NEPTUNE_MODE"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in sandbox_environment(tmp_path / "wandb-home").items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


def _log(tmp_path: Path, backend: str, options: dict[str, Any]) -> Any:
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(os.urandom(512))
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    image[:, :, 2] = 200
    with loggerhub.init(project="trip", name=f"to-{backend}", dir=tmp_path / "runs", backends=[backend],
                        options={backend: options}, config={"lr": 0.01, "optimizer": {"name": "sgd"}, "seed": 7},
                        drain_timeout=180) as run:
        for step in range(20):
            run.log_metrics({"train/loss": round(1 / (step + 1), 6), "lr": 0.01}, step=step, epoch=step // 10)
        run.log_metrics({"val/map": 0.5}, step=19)
        run.log_image("val/boxes", image, step=10, boxes=[
            loggerhub.Box(1, 1, 12, 10, label="cat", score=0.9, class_id=0),
            loggerhub.Box(5, 3, 20, 14, label="dog", score=0.4, class_id=1)])
        run.log_text("notes", "round trip ✓", step=19)
        run.log_confusion_matrix("val/cm", [[4, 1], [2, 6]], ["cat", "dog"], step=19)
        run.log_checkpoint(checkpoint, step=19)
    return run


def test_wandb_to_mlflow(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    wandb_dir = tmp_path / "wb"
    run = _log(tmp_path, "wandb", {"mode": "offline", "dir": str(wandb_dir)})
    report = import_runs("wandb", str(wandb_dir), dir=tmp_path / "store", allow_read=[run.dir], to=["mlflow"],
                         to_options={"mlflow": {"tracking_uri": mlflow_server.uri}})
    (imported,) = report.imported
    original, back = journal_view(run.dir), journal_view(imported)
    for field in (*FIELDS, "images", "params"):
        assert back[field] == original[field], field

    state = ConsumerStatus.load(imported / "consumers" / "mlflow.json").state or {}
    view = read_back(mlflow_server.uri, state["run_id"])
    assert view.status == "FINISHED"
    assert view.params["lr"] == "0.01" and view.params["optimizer/name"] == "sgd"
    for key in ("train/loss", "lr", "val/map"):
        logged = sorted((m[1], float(m[2])) for m in original["metrics"] if m[0] == key)
        assert sorted(view.metrics[key]) == logged, key
    assert view.images == {"val/boxes": 1} and view.boxes == {"val/boxes": 2}
    assert view.texts == {"notes": ["round trip ✓"]}
    assert "val/cm" in view.tables
    assert any(name.endswith("best.pt") for name in view.artifacts), view.artifacts


def test_neptune_offline_to_wandb(tmp_path: Path) -> None:
    neptune_dir = tmp_path / "neptune"
    run = _log(tmp_path, "neptune", {"mode": "offline", "data_dir": str(neptune_dir)})
    wandb_dir = tmp_path / "wb"
    first = import_runs("neptune", str(neptune_dir), dir=tmp_path / "store", allow_read=[run.dir], to=["wandb"],
                        to_options={"wandb": {"mode": "offline", "dir": str(wandb_dir)}})
    (from_neptune,) = first.imported
    assert ConsumerStatus.load(from_neptune / "consumers" / "wandb.json").finished

    # What W&B holds, read from its .wandb files, is what the Neptune import holds ...
    (folder,) = reader.run_dirs(wandb_dir / "wandb")
    held = reader.read_run(folder)
    assert not held.problems and held.exit_code == 0
    expected = journal_view(from_neptune)
    rows = {(key, row.values["loggerhub/step"], round(row.values["_timestamp"], 6)): float(value)
            for row in held.history for key, value in row.values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            and not key.startswith(("_", "loggerhub/"))}
    assert len(rows) == len(expected["metrics"])
    for key, step, value, ts, _epoch in expected["metrics"]:
        stored = rows[(key, step, ts)]
        assert repr(stored) == value or (math.isnan(stored) and value == "nan"), (key, step)

    # ... and importing it back from W&B gives the same records, field by field.
    second = import_runs("wandb", str(wandb_dir), dir=tmp_path / "store2", allow_read=[from_neptune])
    (from_wandb,) = second.imported
    back = journal_view(from_wandb)
    for field in FIELDS:
        assert back[field] == expected[field], field
    assert back["params"] == expected["params"]
    assert back["images"] == expected["images"]
