"""``loggerhub import mlflow``: runs on a real ``mlflow server``, written through loggerhub and by
plain ``mlflow`` calls, imported back and compared; replayed into Neptune (offline); the CLI."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_mlflow.testing import MlflowServer
from mlflow.tracking import MlflowClient
from PIL import Image

import loggerhub
from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader
from loggerhub_hookspecs.importers import source_run_id

CONFIG = {"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 3, "layers": [64, 128], "dropout": None,
          "nesterov": True, "long": "y" * 7000}
LATE_PARAMS = {"late": 5, "epochs": 4}
KEYS = ("train/loss", "metrics/mAP50-95(B)", "odd key:#%@!", "clf__C")
STEPS = 30
NONFINITE = {0: 1.0, 1: math.nan, 2: math.inf, 3: -math.inf}
TAGS = {"team": "vision", "baseline": "", "odd:tag": "x#y"}


def value(index: int, step: int) -> float:
    return round(1.0 / (step + 1) + index, 6)


def log_source_run(tmp: Path, uri: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = tmp / "files"
    (files / "dataset" / "sub").mkdir(parents=True)
    (files / "model").mkdir()
    (files / "best.pt").write_bytes(os.urandom(1024))
    (files / "dataset" / "a.txt").write_text("a")
    (files / "dataset" / "sub" / "b#c.txt").write_text("b")
    (files / "model" / "weights.bin").write_bytes(b"\x01\x02" * 100)
    (files / "report.md").write_text("# report")
    rgb = np.zeros((24, 32, 3), dtype=np.uint8)
    rgb[:, :, 2] = 160
    with loggerhub.init(project="imports", name="mlflow source", dir=tmp / "runs", backends=["mlflow"],
                        options={"mlflow": {"tracking_uri": uri, "experiment": "import-source"}},
                        config=CONFIG, tags=TAGS, drain_timeout=120) as run:
        for step in range(STEPS):
            run.log_metrics({key: value(i, step) for i, key in enumerate(KEYS)}, step=step)
        for step, number in NONFINITE.items():
            run.log_metrics({"val/nonfinite": number}, step=step)
        run.log_params(LATE_PARAMS)
        run.log_image("samples/rgb", rgb, step=3, caption="blue")
        run.log_image("samples/größe", np.linspace(0, 1, 16 * 16).reshape(16, 16), step=3)
        run.log_image("samples/boxes", rgb, step=4, boxes=[
            {"box": [1, 2, 10, 12], "label": "cat", "score": 0.9, "class_id": 0},
            loggerhub.Box(5, 5, 20, 20),
        ])
        figure, axes = plt.subplots(figsize=(2, 2))
        axes.plot([0, 1], [1, 0])
        run.log_figure("plots/curve", figure, step=5)
        plt.close(figure)
        run.log_checkpoint(files / "best.pt", step=6)
        run.log_artifact(files / "model", kind="model")
        run.log_artifact(files / "dataset", kind="dataset")
        run.log_artifact(files / "report.md", name="re#port.md")
        run.log_text("notes", "hello ✓", step=7)
        run.log_table("preds", ["id", "label"], [[1, "cat"], [2, None]], step=8)
        run.log_confusion_matrix("val/cm", [[5, 1], [2, 7]], ["cat", "dog"], step=9)
    return run.dir


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> tuple[Path, str]:
    """The loggerhub run, and its MLflow run id."""
    run_dir = log_source_run(tmp_path_factory.mktemp("mlflow-source"), mlflow_server.uri)
    state = json.loads((run_dir / "consumers" / "mlflow.json").read_text(encoding="utf-8"))["state"]
    return run_dir, state["run_id"]


@pytest.fixture(scope="module")
def imported(source: tuple[Path, str], mlflow_server: MlflowServer,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    store = tmp_path_factory.mktemp("store")
    return import_runs("mlflow", mlflow_server.uri, dir=store, options={"run_id": source[1]}), store


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [entry.data for entry in JournalReader(run_dir).entries()]


def of_type(entries: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["type"] == kind]


def millis(seconds: float) -> int:
    return int(round(seconds * 1000))


def pixels(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
        return np.asarray(image.convert("RGB"))


def tree(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def mlflow_files(client: MlflowClient, run_id: str, tmp: Path) -> dict[str, bytes]:
    root = Path(client.download_artifacts(run_id, "", str(tmp)))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- loggerhub -> MLflow -> loggerhub


def test_import_gives_back_what_was_logged(source: tuple[Path, str], imported: tuple[Any, Path]) -> None:
    report, _ = imported
    (run_dir,) = report.imported
    original, back = records(source[0]), records(run_dir)
    start = back[0]
    assert (start["name"], start["project"], start["ts"]) == ("mlflow source", "imports", original[0]["ts"])
    assert start["tags"] == {**TAGS, "imported_from": "mlflow", "source_run_id": source[1]}
    # params.json: typed, whole (MLflow cuts "long" to 6000) and latest (MLflow keeps epochs=3).
    assert start["config"] == {**original[0]["config"], **LATE_PARAMS}

    def metrics(entries: list[dict[str, Any]]) -> set[tuple[str, int, int, str]]:
        return {(key, e["step"], millis(e["ts"]), repr(v)) for e in of_type(entries, "metrics")
                for key, v in e["values"].items()}

    # Every point with its step and logged time (to the millisecond MLflow keeps); +/-inf are back.
    assert metrics(back) == metrics(original)

    images = {e["key"]: e for e in of_type(back, "image")}
    logged = {e["key"]: e for e in of_type(original, "image")}
    assert set(images) == set(logged) == {"samples/rgb", "samples/größe", "samples/boxes"}
    for key, image in images.items():
        want = logged[key]
        assert (image["step"], millis(image["ts"]), image["caption"], image["boxes"]) == (
            want["step"], millis(want["ts"]), want["caption"], want["boxes"])
        if key != "samples/boxes":  # MLflow holds that one with the boxes drawn in
            assert np.array_equal(pixels(run_dir / image["file"]), pixels(source[0] / want["file"]))
    (figure,) = of_type(back, "figure")
    (want_figure,) = of_type(original, "figure")
    assert (figure["key"], figure["step"]) == ("plots/curve", 5)
    assert (run_dir / figure["file"]).read_bytes() == (source[0] / want_figure["file"]).read_bytes()

    assert [(e["key"], e["text"], e["step"]) for e in of_type(back, "text")] == [("notes", "hello ✓", 7)]
    tables = {e["key"]: (e["columns"], e["rows"], e["role"], e["step"]) for e in of_type(back, "table")}
    assert tables == {e["key"]: (e["columns"], e["rows"], e["role"], e["step"]) for e in of_type(original, "table")}

    # MLflow keeps no step or kind of record for a file: checkpoints come back as model artifacts,
    # at the highest step, with their names and contents.
    artifacts = {e["name"]: (e["type"], e["kind"], e["step"], tree(run_dir / e["file"]))
                 for e in of_type(back, "artifact") + of_type(back, "checkpoint")}
    expected = {e["name"]: ("artifact", e["kind"], STEPS - 1, tree(source[0] / e["file"]))
                for e in of_type(original, "artifact") + of_type(original, "checkpoint")}
    assert artifacts == expected
    assert of_type(back, "run_end")[0]["status"] == "FINISHED"
    times = [e["ts"] for e in back[1:]]
    assert times == sorted(times)
    assert report.unmapped == {}


def test_importing_again_changes_nothing(source: tuple[Path, str], imported: tuple[Any, Path],
                                         mlflow_server: MlflowServer) -> None:
    _, store = imported
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    report = import_runs("mlflow", mlflow_server.uri, dir=store, options={"experiment": "import-source"})
    assert (report.imported, len(report.skipped)) == ([], 1)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- MLflow -> Neptune (offline)


def image_file_prefix(key: str) -> str:
    """The start of a log_image file name for ``key`` (as the backend escapes image keys)."""
    from loggerhub_mlflow.keys import to_tracker

    return to_tracker(key, "image").replace("/", "~") + "+step+"


# --------------------------------------------------------------------------- plain mlflow


PLAIN_SCRIPT = """
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np

mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("plain-exp")


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


with mlflow.start_run(run_name="plain run") as run:
    mlflow.log_params({"lr": 0.01, "optimizer": "adam"})
    mlflow.set_tags({"owner": "ana"})
    for step in range(5):
        mlflow.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step, timestamp=1_700_000_000_000 + step)
    mlflow.log_metric("best", float("inf"), step=0, timestamp=1_700_000_000_000)
    mlflow.log_text("some notes", "notes.txt")
    mlflow.log_dict({"a": 1}, "config/cfg.json")
    mlflow.log_table({"x": [1, 2], "y": ["a", "b"]}, artifact_file="eval/table.json")
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0] = 250
    mlflow.log_image(image, key="sample", step=2, timestamp=1_700_000_000_002)
    figure = plt.figure(figsize=(1, 1))
    mlflow.log_figure(figure, "plots/fig.png")
    mlflow.pyfunc.log_model(name="echo", python_model=Echo(), pip_requirements=[])
    print("RUN_ID", run.info.run_id)
with mlflow.start_run(run_name="crashed") as run:
    mlflow.log_metric("loss", 2.0, step=0)
    mlflow.end_run(status="FAILED")
with mlflow.start_run(run_name="deleted") as run:
    mlflow.log_metric("loss", 3.0, step=0)
mlflow.delete_run(run.info.run_id)
"""


@pytest.fixture(scope="module")
def plain(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    result = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, mlflow_server.uri], check=True,
                            capture_output=True, text=True, timeout=300,
                            cwd=tmp_path_factory.mktemp("plain"))
    (run_id,) = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("RUN_ID ")]
    return run_id


def test_a_plain_mlflow_experiment(plain: str, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    report = import_runs("mlflow", mlflow_server.uri, dir=tmp_path, options={"experiment": "plain-exp"})
    runs = {records(d)[0]["name"]: (d, records(d)) for d in report.imported}
    assert set(runs) == {"plain run", "crashed"}
    run_dir, entries = runs["plain run"]
    start = entries[0]
    assert start["project"] == "plain-exp"
    assert start["source"]["id"] == plain
    assert start["config"] == {"lr": "0.01", "optimizer": "adam"}  # MLflow keeps params as text
    assert start["tags"]["owner"] == "ana"
    assert start["tags"]["mlflow.source.type"] == "LOCAL"
    assert "mlflow.runName" not in start["tags"]
    points = sorted((e["step"], e["ts"], k, v) for e in of_type(entries, "metrics") for k, v in e["values"].items())
    assert points == sorted([(s, 1_700_000_000 + s / 1000, "loss", 1.0 / (s + 1)) for s in range(5)]
                            + [(s, 1_700_000_000 + s / 1000, "acc", s / 10) for s in range(5)]
                            + [(0, 1_700_000_000, "best", math.inf)])
    assert [(e["key"], e["text"]) for e in of_type(entries, "text")] == [("notes.txt", "some notes")]
    (table,) = of_type(entries, "table")
    assert (table["key"], table["columns"], table["rows"]) == ("eval/table.json", ["x", "y"], [[1, "a"], [2, "b"]])
    (image,) = of_type(entries, "image")
    assert (image["key"], image["step"], image["ts"]) == ("sample", 2, 1_700_000_000.002)
    assert pixels(run_dir / image["file"])[0, 0].tolist() == [250, 0, 0]
    artifacts = {e["name"]: (e["kind"], e["step"], sorted(tree(run_dir / e["file"])))
                 for e in of_type(entries, "artifact")}
    assert artifacts["config"] == ("file", 4, ["cfg.json"])
    assert artifacts["plots"] == ("file", 4, ["fig.png"])
    # MLflow 3's logged model of the run, with MLflow's own files.
    assert artifacts["echo"][0] == "model" and "MLmodel" in artifacts["echo"][2]
    assert set(artifacts) == {"config", "plots", "echo"}
    assert of_type(entries, "run_end")[0]["status"] == "FINISHED"
    _, crashed = runs["crashed"]
    assert of_type(crashed, "run_end")[0]["status"] == "FAILED"
    assert report.unmapped == {"mlflow: deleted run of the experiment (restore it to import it)": 1}


def test_cli_with_tracking_uri(plain: str, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "loggerhub.cli", "--dir", str(tmp_path), "import", "mlflow",
               "--tracking-uri", mlflow_server.uri, "--run-id", plain]
    first = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert "imported 1 runs, 0 already imported" in first.stdout, first.stdout + first.stderr
    second = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert "imported 0 runs, 1 already imported" in second.stdout
    assert [p.name for p in (tmp_path / "plain-exp").iterdir()] == [source_run_id("mlflow", plain)]


def test_a_local_store_folder(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    with loggerhub.init(project="local", name="offline", dir=tmp_path / "runs", backends=["mlflow"],
                        options={"mlflow": {"tracking_uri": str(store)}}, drain_timeout=120) as run:
        run.log_metrics({"loss": 0.5}, step=3)
    report = import_runs("mlflow", str(store), dir=tmp_path / "store", options={"experiment": "local"})
    (run_dir,) = report.imported
    entries = records(run_dir)
    assert entries[0]["name"] == "offline"
    assert [(e["step"], e["values"]) for e in of_type(entries, "metrics")] == [(3, {"loss": 0.5})]


def test_bad_requests(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        import_runs("mlflow", mlflow_server.uri, dir=tmp_path)
    with pytest.raises(LookupError, match="no MLflow experiment"):
        import_runs("mlflow", mlflow_server.uri, dir=tmp_path, options={"experiment": "does-not-exist"})
    with pytest.raises(TypeError, match="unknown mlflow import options"):
        import_runs("mlflow", mlflow_server.uri, dir=tmp_path, options={"run_id": "x", "tags": "y"})


def test_entry_point() -> None:
    from loggerhub.importing import importers

    assert importers()["mlflow"].value == "loggerhub_mlflow.importer:import_runs"


def test_failed_run_keeps_its_error_and_end_time(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="diverged"):
        with loggerhub.init(project="failures", name="crash", dir=tmp_path / "runs", backends=["mlflow"],
                            options={"mlflow": {"tracking_uri": mlflow_server.uri, "experiment": "failures"}},
                            tags={"team": "vision"}, drain_timeout=120) as run:
            run.log_metrics({"loss": 2.0}, step=0)
            raise ValueError("loss diverged: nan at step 3\nsecond line")
    [logged] = of_type(records(run.dir), "run_end")
    assert logged["status"] == "FAILED" and "ValueError" in logged["error"]["traceback"]
    state = json.loads((run.dir / "consumers" / "mlflow.json").read_text(encoding="utf-8"))["state"]
    report = import_runs("mlflow", mlflow_server.uri, dir=tmp_path / "store", options={"run_id": state["run_id"]})
    (run_dir,) = report.imported
    entries = records(run_dir)
    [end] = of_type(entries, "run_end")
    assert (end["status"], end["error"]) == ("FAILED", logged["error"])
    assert end["ts"] == millis(logged["ts"]) / 1000  # MLflow keeps milliseconds
    assert not [tag for tag in entries[0]["tags"] if "error" in tag]  # the cause, not tags
