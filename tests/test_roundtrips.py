"""Imports replayed into another tracker: one backend's importer, another backend's delivery.

They live here, not in a backend's own tests, so that a backend's suite passes with only that
backend installed; each test needs both of its backends. The sources are made by each backend's
own test helpers (its ``tests/test_importer.py``), loaded by path.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loggerhub.importing import import_runs

ROOT = Path(__file__).resolve().parent.parent

def backend_tests(name: str, *needs: str) -> ModuleType:
    """``backends/<name>/tests/test_importer.py`` as a module, once both backends import."""
    for module in (f"loggerhub_{name}", *needs):
        pytest.importorskip(module)
    key = f"_roundtrip_{name}_tests"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "backends" / name / "tests" / "test_importer.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("loggerhub_mlflow")
    from loggerhub_mlflow.testing import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


# --------------------------------------------------------------------------- Comet -> TensorBoard


@pytest.fixture(scope="module")
def comet_t() -> ModuleType:
    return backend_tests("comet", "loggerhub_tensorboard")


@pytest.fixture(scope="module")
def comet_source(comet_t: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return comet_t.log_source_run(tmp_path_factory.mktemp("comet-source"))


def test_comet_to_tensorboard(comet_t: ModuleType, comet_source: tuple[Path, Path], tmp_path: Path) -> None:
    from loggerhub_comet.keys import from_tracker as comet_from_tracker
    from loggerhub_comet.offline import read_member as comet_read_member
    from loggerhub_comet.offline import read_offline_dir as comet_read_offline_dir
    from loggerhub_tensorboard import keys as tb_keys
    from loggerhub_tensorboard.importer import parse_table
    from loggerhub_tensorboard.reader import as_logged, event_files, read_logdir

    report = import_runs("comet", str(comet_source[1]), dir=tmp_path, to=["tensorboard"])
    (run_dir,) = report.imported
    logdir = run_dir / "tensorboard"  # the backend's default logdir
    tb = read_logdir(logdir)
    (experiment,) = comet_read_offline_dir(comet_source[1]).values()

    assert tb.status == experiment["others"]["status"] == "FINISHED"
    (run_table,) = tb.texts["_loggerhub_/run"]
    rows = dict(tuple(row) for row in parse_table(run_table.text)[1])
    assert rows["name"] == experiment["others"]["Name"]
    assert {k[len("tag: "):]: v for k, v in rows.items() if k.startswith("tag: ")} == {
        **comet_t.TAGS, "imported_from": "comet", "source_run_id": experiment["key"]}

    params = {comet_from_tracker(k): v for k, v in experiment["params"].items()}
    params["long"] = comet_t.LATE_PARAMS["long"]  # Comet's parameter is cut; its asset holds the rest
    assert set(tb.hparams) == set(params)
    for key, expected in params.items():
        got = tb.hparams[key]
        if isinstance(expected, bool) or not isinstance(expected, (int, float)):
            assert got == (expected if isinstance(expected, (bool, str)) else str(expected)), key
        else:
            assert got == float(expected), key

    expected_series = {comet_from_tracker(name): series for name, series in experiment["metrics"].items()
                       if name != "process duration"}
    assert set(tb.scalars) == {tb_keys.to_tracker(k) for k in expected_series}
    for key, series in expected_series.items():
        got = sorted((p.step, p.wall_time, repr(p.value)) for p in tb.scalars[tb_keys.to_tracker(key)])
        want = sorted((p["step"], p["timestamp"] / 1000, repr(as_logged(p["value"]))) for p in series)
        assert got == want, key

    uploads = {u["metadata"].get("key"): u for u in experiment["uploads"] if u["upload_type"] == "visualization"}
    assert set(tb.images) == set(uploads)
    for key, upload in uploads.items():
        (image,) = tb.images[key]
        assert image.step == upload["step"]
        comet_png = comet_read_member(upload["archive"], upload["member"])
        with Image.open(io.BytesIO(comet_png)) as a, Image.open(io.BytesIO(image.png)) as b:
            assert a.size == b.size == (image.width, image.height)
            if key != "samples/boxes":  # TensorBoard holds that one with its boxes drawn in
                assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    (note,) = tb.texts["_loggerhub_/annotations/samples/boxes"]
    layer = uploads["samples/boxes"]["metadata"]["annotations"][0]["data"]
    assert [[b["x0"], b["y0"], b["x1"] - b["x0"], b["y1"] - b["y0"]] for b in json.loads(note.text)["boxes"]] == [
        item["boxes"][0] for item in layer]

    texts = [u for u in experiment["uploads"] if u["upload_type"] == "text-sample"]
    assert [(t.step, t.text) for t in tb.texts["notes"]] == [(u["step"], u["text"]) for u in texts]
    (cm,) = tb.texts["val/cm"]
    assert parse_table(cm.text) == (["true \\ predicted", "cat", "dog"], [["cat", "5", "1"], ["dog", "2", "7"]])
    (preds,) = tb.texts["preds"]
    assert parse_table(preds.text) == (["id", "label"], [["1", "cat"], ["2", "dog"]])

    files = {f: (logdir / f).read_bytes() for f in tb.files}
    assets = {u["name"]: comet_read_member(u["archive"], u["member"]) for u in experiment["uploads"]
              if u["upload_type"] in ("asset", "model-element") and u["metadata"].get("loggerhub") != "param"}
    assert files == {
        "checkpoints/best.pt": assets["best.pt"],
        "artifacts/model/weights.bin": assets["model/weights.bin"],
        "artifacts/model/config.json": assets["model/config.json"],
        "artifacts/dataset/a.txt": assets["dataset/a.txt"],
        "artifacts/dataset/sub/b.txt": assets["dataset/sub/b.txt"],
        "artifacts/docs/report.md": assets["docs/report.md"],
    }

    # Replaying again (the same import with --to) adds nothing to TensorBoard.
    before = {p.name: p.read_bytes() for p in event_files(logdir)}
    again = import_runs("comet", str(comet_source[1]), dir=tmp_path, to=["tensorboard"])
    assert again.imported == [] and again.skipped == [run_dir]
    assert {p.name: p.read_bytes() for p in event_files(logdir)} == before


# --------------------------------------------------------------------------- MLflow -> Neptune (offline)


@pytest.fixture(scope="module")
def mlflow_t() -> ModuleType:
    return backend_tests("mlflow", "loggerhub_neptune")


@pytest.fixture(scope="module")
def mlflow_source(mlflow_t: ModuleType, mlflow_server: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The loggerhub run, and its MLflow run id."""
    run_dir = mlflow_t.log_source_run(tmp_path_factory.mktemp("mlflow-source"), mlflow_server.uri)
    state = json.loads((run_dir / "consumers" / "mlflow.json").read_text(encoding="utf-8"))["state"]
    return run_dir, state["run_id"]


def test_mlflow_to_neptune(mlflow_t: ModuleType, mlflow_source: tuple[Path, str], mlflow_server: Any,
                           tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from loggerhub_mlflow.keys import from_tracker as mlflow_from_tracker
    from loggerhub_neptune import offline
    from loggerhub_neptune._session import _param_value
    from loggerhub_neptune.keys import to_segment_path
    from loggerhub_neptune.keys import to_tracker as neptune_path
    from mlflow.tracking import MlflowClient

    data_dir = tmp_path / ".neptune"
    monkeypatch.setenv("NEPTUNE_MODE", "offline")
    monkeypatch.setenv("NEPTUNE_DATA_DIRECTORY", str(data_dir))
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    report = import_runs("mlflow", mlflow_server.uri, dir=tmp_path / "store", options={"run_id": mlflow_source[1]},
                         to=["neptune"])
    (run_dir,) = report.imported
    fields = offline.merge_parts(offline.read_run(data_dir, run_dir.name))
    client = MlflowClient(mlflow_server.uri)
    mlflow_run = client.get_run(mlflow_source[1])
    stored = mlflow_t.mlflow_files(client, mlflow_source[1], tmp_path / "mlflow")
    run_document = json.loads(stored["loggerhub/run.json"])
    params_document = json.loads(stored["loggerhub/params.json"])

    assert fields["sys/name"]["value"] == mlflow_run.info.run_name
    assert fields["loggerhub/status"]["value"] == mlflow_run.info.status == "FINISHED"
    tags = {**run_document["tags"], "imported_from": "mlflow", "source_run_id": mlflow_source[1]}
    assert set(fields["sys/tags"]["values"]) == {f"{k}:{v}" if v else k for k, v in tags.items()}

    params = {path.removeprefix("parameters/"): f["value"] for path, f in fields.items()
              if path.startswith("parameters/")}
    assert params == {to_segment_path(k): _param_value(v) for k, v in params_document["params"].items()}

    for name in mlflow_run.data.metrics:
        key = mlflow_from_tracker(name)
        history = client.get_metric_history(mlflow_source[1], name)
        finite = sorted((m.step, m.timestamp, m.value) for m in history if abs(m.value) < sys.float_info.max
                        and not math.isnan(m.value))
        series = fields.get(neptune_path(key), {"values": []})["values"]
        assert sorted((v["step"], mlflow_t.millis(v["ts"]), v["value"]) for v in series) == finite, key
        other = [m for m in history if (m.step, m.timestamp, m.value) not in set(finite)]
        if other:
            companion = fields[f"loggerhub/nonfinite/{to_segment_path(key)}"]["values"]
            assert sorted((v["step"], mlflow_t.millis(v["ts"]), v["value"]) for v in companion) == sorted(
                (m.step, m.timestamp, "nan" if math.isnan(m.value) else "inf" if m.value > 0 else "-inf")
                for m in other)

    images = {path.removeprefix("images/"): data for path, data in stored.items()
              if path.startswith("images/") and path.endswith(".png")}
    notes = [json.loads(data) for path, data in stored.items() if path.startswith("image_annotations/")]
    for key in ("samples/rgb", "samples/größe", "samples/boxes"):
        (value,) = fields[neptune_path(key)]["values"]
        (png,) = [data for name, data in images.items() if name.startswith(mlflow_t.image_file_prefix(key))]
        assert value["step"] in (3, 4)
        if key != "samples/boxes":  # MLflow drew the boxes in and so does Neptune: not the same mlflow_t.pixels
            assert np.array_equal(mlflow_t.pixels(value["data"]), mlflow_t.pixels(png))
    (note,) = [n for n in notes if n["key"] == "samples/boxes"]
    boxes = [json.loads(v["value"]) for v in fields["loggerhub/boxes/samples/boxes"]["values"]]
    assert [{k: b[k] for k in ("x0", "y0", "x1", "y1", "label", "score", "class_id")} for b in boxes] == note["boxes"]
    assert fields["loggerhub/figures"]["values"] == ["plots/curve"]
    (figure_png,) = [data for path, data in stored.items() if path.startswith("figures/")]
    assert fields["plots/curve"]["values"][0]["data"] == figure_png

    (text,) = [data.decode() for path, data in stored.items() if path.startswith("text/")]
    assert [v["value"] for v in fields["notes"]["values"]] == [text]
    for key in ("preds", "val/cm"):
        (table,) = [json.loads(data) for path, data in stored.items() if path.startswith(f"tables/{key}+")]
        csv_rows = list(csv.reader(io.StringIO(Path(fields[key]["path"]).read_text(encoding="utf-8"))))
        if key == "val/cm":  # the row labels MLflow holds in front are back in the role, which Neptune drops
            table = {"columns": table["columns"][1:], "data": [row[1:] for row in table["data"]]}
        assert csv_rows == [table["columns"], *[["" if c is None else str(c) for c in r] for r in table["data"]]]

    def neptune_files(path: str) -> dict[str, bytes]:
        field = fields[path]
        if field["type"] == "file":
            return {"": Path(field["path"]).read_bytes()}
        return {name: Path(local).read_bytes() for name, local in offline.file_set_files(field).items()}

    def mlflow_tree(prefix: str) -> dict[str, bytes]:
        if prefix in stored:
            return {"": stored[prefix]}
        return {mlflow_from_tracker(p[len(prefix) + 1:]): d for p, d in stored.items() if p.startswith(prefix + "/")}

    assert neptune_files("models/best.pt") == mlflow_tree("models/best.pt")
    assert neptune_files("models/model") == mlflow_tree("models/model")
    assert neptune_files("artifacts/dataset") == mlflow_tree("datasets/dataset")
    assert neptune_files("artifacts/re#port.md") == mlflow_tree("re__23port.md")

    # The same import with --to again adds no container and no value to Neptune.
    containers = offline.find_containers(data_dir)
    again = import_runs("mlflow", mlflow_server.uri, dir=tmp_path / "store", options={"run_id": mlflow_source[1]},
                        to=["neptune"])
    assert again.skipped == [run_dir]
    assert offline.find_containers(data_dir) == containers
    assert offline.merge_parts(offline.read_run(data_dir, run_dir.name)) == fields


# --------------------------------------------------------------------------- Neptune (offline) -> MLflow


@pytest.fixture(scope="module")
def neptune_t() -> ModuleType:
    return backend_tests("neptune", "loggerhub_mlflow")


@pytest.fixture(scope="module")
def neptune_logged(neptune_t: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return neptune_t.log_loggerhub_run(tmp_path_factory.mktemp("logged"))


def test_neptune_to_mlflow(neptune_t: ModuleType, neptune_logged: dict[str, Any], mlflow_server: Any,
                           tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from loggerhub_mlflow import keys as mlflow_keys
    from loggerhub_mlflow.testing import read_back
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    report = import_runs("neptune", str(neptune_logged["data_dir"]), dir=tmp_path, to=["mlflow"],
                         allow_read=neptune_logged["allow"])
    run_dir = neptune_t.only_run(report)
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("migrate")
    [found] = client.search_runs([experiment.experiment_id])
    mlflow_id = found.info.run_id
    view = read_back(mlflow_server.uri, mlflow_id)
    start = neptune_t.entries(run_dir)[0]

    assert found.info.run_name == "resumed" and view.status == "FAILED"
    assert {k: found.data.tags[mlflow_keys.to_tracker(k)] for k in start["tags"]} == start["tags"]
    assert found.data.tags["loggerhub.run_id"] == run_dir.name
    assert view.params == {**{mlflow_keys.to_tracker(k): str(v) for k, v in start["config"].items()},
                           **{k: v for k, v in view.params.items() if k.startswith("loggerhub")}}

    expected: dict[str, list[tuple[int, float]]] = {}
    for m in neptune_t.of_type(run_dir, "metrics"):
        for key, value in m["values"].items():
            stored = math.copysign(1.7976931348623157e308, value) if math.isinf(value) else value
            expected.setdefault(mlflow_keys.to_tracker(key), []).append((m["step"], stored))
    assert set(view.metrics) == set(expected)
    for key, series in expected.items():
        assert neptune_t.same(sorted(view.metrics[key], key=lambda p: p[0]), sorted(series, key=lambda p: p[0])), key
    history = client.get_metric_history(mlflow_id, "train/loss")
    stamps = {(m.step, m.timestamp) for m in history}
    assert stamps == {(m["step"], round(m["ts"] * 1000))
                      for m in neptune_t.of_type(run_dir, "metrics") if "train/loss" in m["values"]}

    images: dict[str, int] = {}
    for image in neptune_t.of_type(run_dir, "image"):
        images[image["key"]] = images.get(image["key"], 0) + 1
    assert view.images == images == {"samples/rgb": 1, "samples/gray": 1, "samples/boxes": 1}
    assert view.boxes == {"samples/boxes": 2, "samples/rgb": 0}  # a caption gets an annotation file too
    assert view.figures == {"plots/curve": 1, "plots/later": 1}
    texts: dict[str, list[str]] = {}
    for text in sorted(neptune_t.of_type(run_dir, "text"), key=lambda t: (t["step"], t["ts"])):
        texts.setdefault(text["key"], []).append(text["text"])
    assert view.texts == texts
    assert list(view.tables) == ["val/confusion_matrix"]

    download = Path(client.download_artifacts(mlflow_id, "", str(tmp_path / "download")))
    original = neptune_logged["run_dir"]
    [checkpoint] = neptune_t.of_type(original, "checkpoint")
    assert (download / "models" / "best.pt").read_bytes() == (original / checkpoint["file"]).read_bytes()
    [dataset] = neptune_t.of_type(original, "artifact")
    assert neptune_t.tree(download / "dataset") == neptune_t.tree(original / dataset["file"])

    # Replaying again, importing again: nothing new in MLflow.
    before = (view.metrics, view.artifacts, view.params)
    again = import_runs("neptune", str(neptune_logged["data_dir"]), dir=tmp_path, to=["mlflow"],
                        allow_read=neptune_logged["allow"])
    assert again.skipped == [run_dir] and not again.imported
    from loggerhub.importing import replay

    replay([run_dir], ["mlflow"])
    assert len(client.search_runs([experiment.experiment_id])) == 1
    after = read_back(mlflow_server.uri, mlflow_id)
    assert neptune_t.same((after.metrics, sorted(after.artifacts), after.params),
                          (before[0], sorted(before[1]), before[2]))


# --------------------------------------------------------------------------- TensorBoard -> Comet


@pytest.fixture(scope="module")
def tensorboard_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tb_t = backend_tests("tensorboard", "loggerhub_comet")
    return tb_t.log_source_runs(tmp_path_factory.mktemp("tb-source"))


def test_tensorboard_to_comet_twice_adds_nothing(tensorboard_source: tuple[Path, Path, Path],
                                                 tmp_path: Path) -> None:
    from loggerhub_comet.offline import read_offline_dir

    logdir = tensorboard_source[2] / tensorboard_source[1].name
    report = import_runs("tensorboard", str(logdir), dir=tmp_path, to=["comet"])
    (run_dir,) = report.imported
    archives = run_dir / "comet"  # the Comet backend's default offline folder
    (experiment,) = read_offline_dir(archives).values()
    assert experiment["metrics"]["loss"][0]["value"] == 2.0
    assert experiment["others"]["status"] == "FAILED"
    before = sorted(archives.iterdir())
    again = import_runs("tensorboard", str(logdir), dir=tmp_path, to=["comet"])
    assert again.skipped == [run_dir]
    assert sorted(archives.iterdir()) == before
