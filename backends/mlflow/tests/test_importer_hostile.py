"""``loggerhub import mlflow`` on a crafted local store (issue 15): a store written by the real
MLflow client whose runs keep their artifacts outside it. ``MlflowClient`` reads such artifacts
straight from this machine's disk, so the importer must not, unless the user allows the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader

SECRET = b"the content of a file outside the store"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a local store folder, the folder outside it where its experiment keeps artifacts)."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow-store")
    folder, outside = tmp / "store", tmp / "outside"
    folder.mkdir()
    outside.mkdir()
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("crafted", artifact_location=outside.as_uri())
    run = client.create_run(experiment, run_name="elsewhere")
    client.log_param(run.info.run_id, "lr", "0.1")
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    secret = tmp / "secret.txt"
    secret.write_bytes(SECRET)
    client.log_artifact(run.info.run_id, str(secret))
    table = tmp / "table.json"
    table.write_text(json.dumps(["not", "a", "table"]))
    client.log_artifact(run.info.run_id, str(table))
    client.set_tag(run.info.run_id, "mlflow.loggedArtifacts", json.dumps([{"path": "table.json", "type": "table"}]))
    client.set_terminated(run.info.run_id)
    return folder, outside


def holds(folder: Path, data: bytes) -> bool:
    return any(data in p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_artifacts_outside_the_store_are_not_read(store: tuple[Path, Path], tmp_path: Path) -> None:
    folder, outside = store
    report = import_runs("mlflow", str(folder), dir=tmp_path / "store", options={"experiment": "crafted"})
    (run_dir,) = report.imported  # params and metrics still come
    entries = [e.data for e in JournalReader(run_dir).entries()]
    assert entries[0]["config"] == {"lr": "0.1"}
    assert [e["values"] for e in entries if e["type"] == "metrics"] == [{"loss": 0.5}]
    assert not holds(tmp_path / "store", SECRET)
    assert any("its artifacts are not read: " in line and "outside the folder being imported" in line
               for line in report.problems), report.problems

    allowed = import_runs("mlflow", str(folder), dir=tmp_path / "allowed", options={"experiment": "crafted"},
                          allow_read=[outside])
    assert holds(tmp_path / "allowed", SECRET)
    assert allowed.problems[0].startswith(f"read outside the source (allowed by --allow-read {outside}): ")
    # The table file that is no table: skipped and reported, the rest imported.
    assert any(line.startswith("skipped: table.json: ") for line in allowed.problems), allowed.problems
