"""The Neptune importer, on data the real Neptune client and loggerhub's Neptune backend wrote.

* a plain offline run, written the way Ultralytics' old Neptune callback wrote its runs;
* a loggerhub run delivered to Neptune offline in two parts (a resume), imported back and held
  against its own journal, record by record;
* Parquet exports in neptune-exporter's schema: one written by hand, and one derived from the
  offline run above as the exporter would have written it after ``neptune sync``;
* idempotency, the CLI, and the trip Neptune offline -> loggerhub -> MLflow (a real server).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_neptune import importer, offline
from loggerhub_neptune.keys import to_tracker
from PIL import Image

from loggerhub import journal as j
from loggerhub.importing import import_runs
from loggerhub_hookspecs.importers import Source, source_run_id

LONG_TEXT = "".join(f"line {i}: {'x' * 40}\n" for i in range(40))  # > 1000 characters
CONFIG = {"optimizer": {"name": "sgd", "lr": 0.1}, "layers": [64, 128], "dropout": None,
          "seed": 2**40, "eps": math.inf, "note": "plain text", "api_key": "not-a-real-key"}
TAGS = {"team": "vision", "baseline": ""}
#: The columns and types of neptune-exporter's ``model.SCHEMA`` (see docs/migrating-off-neptune.md).
SCHEMA_FIELDS = [
    ("project_id", "string"), ("run_id", "string"), ("attribute_path", "string"),
    ("attribute_type", "string"), ("step", "decimal"), ("timestamp", "timestamp"),
    ("int_value", "int64"), ("float_value", "float64"), ("string_value", "string"),
    ("bool_value", "bool"), ("datetime_value", "timestamp"), ("string_set_value", "list"),
    ("file_value", "file"), ("histogram_value", "histogram"),
]


# ---------------------------------------------------------------------------------------------
# helpers


def entries(run_dir: Path) -> list[dict[str, Any]]:
    return [e.data for e in j.JournalReader(run_dir).entries()]


def of_type(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in entries(run_dir) if e["type"] == kind]


def store_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def same(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def only_run(report: Any) -> Path:
    [run_dir] = report.imported + report.skipped
    return Path(run_dir)


# ---------------------------------------------------------------------------------------------
# sources written by the real clients


def write_plain_run(root: Path) -> dict[str, Any]:
    """An offline run as Ultralytics' Neptune callback wrote it (ultralytics/utils/callbacks/neptune.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import neptune
    from neptune.types import File

    files = root / "yolo"
    files.mkdir(parents=True)
    mosaic = np.zeros((16, 24, 3), dtype=np.uint8)
    mosaic[:, :12] = (250, 10, 10)
    Image.fromarray(mosaic).save(files / "train_batch0.png")
    (files / "best.pt").write_bytes(os.urandom(1024))
    (files / "gone.pt").write_bytes(b"deleted before the import")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEPTUNE_DATA_DIRECTORY", str(root / ".neptune"))
        run = neptune.init_run(mode="offline", name="yolo-exp", tags=["YOLOv8", "stage:final"],
                               capture_stdout=False, capture_stderr=False, capture_traceback=False,
                               capture_hardware_metrics=False, source_files=[], git_ref=False)
        run["Configuration/Hyperparameters"] = {"lr0": 0.01, "epochs": 3, "name": "exp", "amp": True, "cache": ""}
        run["Configuration/Model"] = {"model/parameters": 3157200, "model/GFLOPs": 8.9}
        run["Configuration/started"] = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
        for epoch in range(3):
            run["train/box_loss"].append(value=1.0 / (epoch + 1), step=epoch + 1)
            run["metrics/mAP50(B)"].append(value=0.1 * epoch, step=epoch + 1)
            run["lr/pg0"].append(value=0.01, step=epoch + 1)
        run["Mosaic/train_batch0"].upload(File(str(files / "train_batch0.png")))
        figure = plt.figure(figsize=(2, 1))
        plt.plot([0, 1], [1, 0])
        run["Plots/results"].upload(figure)
        plt.close(figure)
        run["Results/samples"].append(File.as_image(mosaic), step=1, name="first batch")
        run["Results/samples"].append(File.as_image(mosaic[::-1]), step=2)
        run["weights/exp/best.pt"].upload(File(str(files / "best.pt")))
        run["weights/exp/gone.pt"].upload(File(str(files / "gone.pt")))
        run["notes"].append("no step given")
        run["notes"].append("nor here")
        run["half"].append(1.0, step=0.5)
        run.stop()
    (files / "gone.pt").unlink()
    [container] = offline.find_containers(root)
    # The client keeps File(path) uploads as their paths: outside the .neptune folder.
    return {"container": container, "mosaic": mosaic, "best": (files / "best.pt").read_bytes(), "files": files}


def log_loggerhub_run(root: Path) -> dict[str, Any]:
    """A loggerhub run delivered to Neptune offline, in two parts: it was resumed once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import loggerhub

    files = root / "files"
    (files / "dataset" / "sub").mkdir(parents=True)
    (files / "best.pt").write_bytes(os.urandom(2048))
    (files / "dataset" / "a.txt").write_text("a")
    (files / "dataset" / "sub" / "b.txt").write_text("b")
    options = {"neptune": {"mode": "offline", "data_dir": str(root / "neptune")}}
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[:, :, 0] = 200

    def curve(name: str) -> Any:
        figure, axes = plt.subplots(figsize=(3, 2))
        axes.plot([0, 1, 2], [0, 1, 4])
        axes.set_title(name)
        return figure

    with loggerhub.init(project="migrate", name="resumed", dir=root / "runs", backends=["neptune"],
                        options=options, config=CONFIG, tags=TAGS, drain_timeout=120) as run:
        run.log_event("train_start", step=0)
        for step in range(20):
            run.log_metrics({"train/loss": 1.0 / (step + 1), "metrics/mAP50-95(B)": step / 20,
                             "sys/odd": float(step), "a//b": -step}, step=step, epoch=step // 10)
        for step, value in ((20, 1.0), (21, math.nan), (22, math.inf), (23, -math.inf), (24, 2.0)):
            run.log_metrics({"val/loss": value}, step=step)
        run.log_image("samples/rgb", rgb, step=1, caption="red")
        run.log_image("samples/gray", np.linspace(0, 1, 32 * 32).reshape(32, 32), step=1)
        run.log_image("samples/boxes", rgb, step=2, boxes=[
            {"box": [2, 2, 20, 20], "label": "cat", "score": 0.9, "class_id": 0},
            loggerhub.Box(10, 5, 40, 30, label="dog", score=0.5, class_id=1)])
        figure = curve("first")
        run.log_figure("plots/curve", figure, step=2)
        plt.close(figure)
        run.log_text("notes", "hello, tracker ✓", step=3)
        run.log_text("log", LONG_TEXT, step=4)
        run.log_params({"lr_final": 0.01})
        run.log_confusion_matrix("val/confusion_matrix", [[5, 1], [2, 7]], ["cat", "dog"], step=5)
        run.log_checkpoint(files / "best.pt", step=5)
    with loggerhub.init(resume=run.dir, backends=["neptune"], options=options, drain_timeout=120) as again:
        for step in range(20, 30):
            again.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        figure = curve("later")
        again.log_figure("plots/later", figure, step=25)
        plt.close(figure)
        again.log_artifact(files / "dataset", kind="dataset")
        again.log_text("notes", "after the resume", step=25)
        again.finish("FAILED")
    assert again.summary["trackers"]["neptune"]["undelivered"] == 0
    assert again.summary["trackers"]["neptune"]["rejected"] == 0
    # The backend uploads the journal's copies, from the run directory: outside the data dir.
    return {"run_dir": run.dir, "run_id": run.id, "data_dir": root / "neptune", "allow": [root / "runs"]}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_plain_run(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return log_loggerhub_run(tmp_path_factory.mktemp("logged"))


# ---------------------------------------------------------------------------------------------
# a plain Neptune run


def test_plain_offline_run(plain: dict[str, Any], tmp_path: Path) -> None:
    report = import_runs("neptune", str(plain["container"]), dir=tmp_path, allow_read=[plain["files"]])
    run_dir = only_run(report)
    container_id = offline.container_id(plain["container"])
    assert run_dir == tmp_path / "neptune" / source_run_id("neptune", container_id)  # no project offline
    assert report.problems == [f"read outside the source (allowed by --allow-read {plain['files']}): 3 files"]
    start = entries(run_dir)[0]
    assert start["type"] == "run_start" and start["name"] == "yolo-exp"
    assert start["tags"] == {"YOLOv8": "", "stage": "final", "imported_from": "neptune",
                             "source_run_id": container_id}
    assert start["config"] == {
        "Configuration/Hyperparameters/lr0": 0.01, "Configuration/Hyperparameters/epochs": 3,
        "Configuration/Hyperparameters/name": "exp", "Configuration/Hyperparameters/amp": True,
        "Configuration/Hyperparameters/cache": "", "Configuration/Model/model/parameters": 3157200,
        "Configuration/Model/model/GFLOPs": 8.9, "Configuration/started": "2024-01-02T03:04:05+00:00",
        "source_code/entrypoint": start["config"]["source_code/entrypoint"],
    }
    fields = offline.read_container(plain["container"])["fields"]
    points = sorted((k, m["step"], v, m["ts"]) for m in of_type(run_dir, "metrics") for k, v in m["values"].items())
    expected = sorted((path, v["step"], v["value"], v["ts"])
                      for path in ("train/box_loss", "metrics/mAP50(B)", "lr/pg0") for v in fields[path]["values"])
    assert points == expected and len(points) == 9

    images = {(i["key"], i["step"]): i for i in of_type(run_dir, "image")}
    assert sorted(images) == [("Mosaic/train_batch0", 0), ("Plots/results", 0), ("Results/samples", 1),
                              ("Results/samples", 2)]
    assert (pixels(run_dir / images[("Mosaic/train_batch0", 0)]["file"]) == plain["mosaic"]).all()
    assert (pixels(run_dir / images[("Results/samples", 2)]["file"]) == plain["mosaic"][::-1]).all()
    assert images[("Results/samples", 1)]["caption"] == "first batch"
    rendered = fields["Plots/results"]["path"]  # the figure as the client rendered it
    assert (pixels(run_dir / images[("Plots/results", 0)]["file"]) == pixels(rendered)).all()

    [artifact] = of_type(run_dir, "artifact")
    assert (artifact["name"], artifact["kind"]) == ("weights/exp/best.pt", "file")
    assert (run_dir / artifact["file"]).read_bytes() == plain["best"]
    texts = [(t["key"], t["step"], t["text"]) for t in of_type(run_dir, "text")]
    assert texts == [("notes", 0, "no step given"), ("notes", 1, "nor here")]
    assert of_type(run_dir, "run_end")[0]["status"] == "FINISHED"
    stamps = [e["ts"] for e in entries(run_dir)]
    assert stamps == sorted(stamps)
    assert dict(report.unmapped) == {
        "file missing on disk: weights/exp/gone.pt": 1,
        "file set with no files on disk: source_code/files": 1,
        "non-integer step in half": 1,
    }


def test_failed_run_and_folder_of_runs(plain: dict[str, Any], tmp_path: Path) -> None:
    import neptune

    data = tmp_path / "project"
    shutil.copytree(plain["container"].parent.parent, data / ".neptune")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEPTUNE_DATA_DIRECTORY", str(data / ".neptune"))
        with pytest.raises(RuntimeError), neptune.init_run(
                mode="offline", name="boom", capture_stdout=False, capture_stderr=False,
                capture_hardware_metrics=False, source_files=[], git_ref=False) as run:
            run["x"].append(1.0)
            raise RuntimeError("boom")
    for location in (data, data / ".neptune", data / ".neptune" / "offline", tmp_path):
        report = import_runs("neptune", str(location), dir=tmp_path / "store" / location.name,
                             allow_read=[plain["files"]])
        assert len(report.imported) == 2, location
    names = {entries(r)[0]["name"]: entries(r)[-1]["status"] for r in report.imported}
    assert names == {"yolo-exp": "FINISHED", "boom": "FAILED"}
    boom = next(r for r in report.imported if entries(r)[0]["name"] == "boom")
    # The client's traceback capture: a string series under monitoring/, imported as text.
    assert any(t["key"].endswith("/traceback") for t in of_type(boom, "text"))


def test_nothing_to_import(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no Neptune offline runs"):
        import_runs("neptune", str(tmp_path), dir=tmp_path / "store")


# ---------------------------------------------------------------------------------------------
# a run loggerhub wrote to Neptune, imported back


def original_and_imported(logged: dict[str, Any], store: Path) -> tuple[Path, Path]:
    report = import_runs("neptune", str(logged["data_dir"]), dir=store, allow_read=logged["allow"])
    imported = only_run(report)
    assert imported == store / "migrate" / source_run_id("neptune", logged["run_id"])
    return logged["run_dir"], imported


def test_loggerhub_run_comes_back_as_logged(logged: dict[str, Any], tmp_path: Path) -> None:
    assert len(offline.read_run(logged["data_dir"], logged["run_id"])) == 2  # two parts, one run
    original, imported = original_and_imported(logged, tmp_path)
    first, back = entries(original)[0], entries(imported)[0]
    assert back["name"] == first["name"] == "resumed"
    assert back["tags"] == {**first["tags"], "imported_from": "neptune", "source_run_id": logged["run_id"]}
    params = dict(first["config"])
    for record in of_type(original, "params"):
        params.update(record["params"])
    assert same(back["config"], params)
    assert back["config"]["api_key"] == "***REDACTED***" and back["config"]["seed"] == 2**40

    def metrics(run_dir: Path) -> list[Any]:
        return sorted(json.dumps([m["ts"], m["step"], m["values"]], sort_keys=True)
                      for m in of_type(run_dir, "metrics"))

    assert metrics(imported) == metrics(original)  # records, keys, steps, values (NaN, inf) and times
    assert {m["epoch"] for m in of_type(imported, "metrics")} == {None}  # Neptune keeps no epoch

    def images(run_dir: Path) -> list[Any]:
        return sorted((i["key"], i["step"], i["ts"], i["caption"], i["width"], i["height"], i["boxes"])
                      for i in of_type(run_dir, "image"))

    assert images(imported) == images(original)
    for before, after in zip(sorted(of_type(original, "image"), key=lambda i: i["key"]),
                             sorted(of_type(imported, "image"), key=lambda i: i["key"]), strict=True):
        drawn = not (pixels(original / before["file"]) == pixels(imported / after["file"])).all()
        assert drawn == bool(before["boxes"]), before["key"]  # the backend drew the boxes in

    def figures(run_dir: Path) -> list[Any]:
        return sorted((f["key"], f["step"], f["ts"], (run_dir / f["file"]).read_bytes())
                      for f in of_type(run_dir, "figure"))

    assert figures(imported) == figures(original) and len(figures(original)) == 2

    def texts(run_dir: Path) -> list[Any]:
        return sorted((t["key"], t["step"], t["ts"], t["text"]) for t in of_type(run_dir, "text"))

    assert texts(imported) == texts(original)
    assert any(t[3] == LONG_TEXT for t in texts(imported))

    [table] = of_type(imported, "table")
    [logged_table] = of_type(original, "table")
    assert (table["key"], table["columns"], table["rows"]) == (
        logged_table["key"], logged_table["columns"], logged_table["rows"])
    assert (table["role"], table["step"]) == ("table", 0)  # README: the role and step are not kept

    def files(run_dir: Path) -> list[Any]:
        return sorted((a["type"], a["name"], a["is_dir"], sorted(tree(run_dir / a["file"]).items()) if a["is_dir"]
                       else (run_dir / a["file"]).read_bytes())
                      for a in of_type(run_dir, "artifact") + of_type(run_dir, "checkpoint"))

    assert files(imported) == files(original)
    kinds = {a["name"]: a["kind"] for a in of_type(imported, "artifact") + of_type(imported, "checkpoint")}
    assert kinds == {"best.pt": "model", "dataset": "file"}  # a dataset's kind is not kept

    assert of_type(imported, "run_end")[0]["status"] == of_type(original, "run_end")[-1]["status"] == "FAILED"
    assert of_type(original, "event") and not of_type(imported, "event")  # Neptune gets no events
    stamps = [e["ts"] for e in entries(imported)]
    assert stamps == sorted(stamps)


def test_importing_twice_changes_nothing(logged: dict[str, Any], plain: dict[str, Any], tmp_path: Path) -> None:
    for location in (logged["data_dir"], plain["container"]):
        allow = [*logged["allow"], plain["files"]]
        first = import_runs("neptune", str(location), dir=tmp_path, allow_read=allow)
        before = store_bytes(tmp_path)
        again = import_runs("neptune", str(location), dir=tmp_path, allow_read=allow)
        assert (len(first.imported), len(again.imported), again.skipped) == (1, 0, first.imported)
        assert store_bytes(tmp_path) == before
        assert not again.counts and not again.unmapped


def test_an_interrupted_import_leaves_nothing_and_is_done_again(logged: dict[str, Any], tmp_path: Path) -> None:
    # A killed import leaves only its staging folder, which no listing shows; the next import
    # removes it (its process is gone) and writes the run whole.
    complete = entries(only_run(import_runs("neptune", str(logged["data_dir"]), dir=tmp_path / "first",
                                            allow_read=logged["allow"])))
    staging = tmp_path / "store" / ".staging" / "0123abcd"
    (staging / "run" / "journal").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (staging / "owner.json").write_text(json.dumps({"pid": int(dead)}))
    listed = subprocess.run([sys.executable, "-m", "loggerhub.cli", "--dir", str(tmp_path / "store"), "runs"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert "0123abcd" not in listed.stdout
    again = import_runs("neptune", str(logged["data_dir"]), dir=tmp_path / "store", allow_read=logged["allow"])
    run_dir = only_run(again)
    assert [(e["type"], e["seq"]) for e in entries(run_dir)] == [(e["type"], e["seq"]) for e in complete]
    assert not staging.exists() and not any((tmp_path / "store" / ".staging").iterdir())


def test_cli(plain: dict[str, Any], tmp_path: Path) -> None:
    command = [sys.executable, "-m", "loggerhub.cli", "--dir", str(tmp_path / "store"), "import", "neptune",
               str(plain["container"].parent), "--allow-read", str(plain["files"])]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    assert "imported 1 runs, 0 already imported" in first.stdout
    assert "non-integer step in half: 1" in first.stdout
    assert f"read outside the source (allowed by --allow-read {plain['files']}): 3 files" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert "imported 0 runs, 1 already imported (unchanged)" in again.stdout
    [run_dir] = (tmp_path / "store" / "neptune").iterdir()
    show = subprocess.run([sys.executable, "-m", "loggerhub.cli", "show", str(run_dir)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert show.returncode == 0, show.stderr
    assert "yolo-exp" in show.stdout and "train/box_loss" in show.stdout


def test_imported_runs_are_listed(plain: dict[str, Any], tmp_path: Path) -> None:
    import_runs("neptune", str(plain["container"]), dir=tmp_path)
    listed = subprocess.run([sys.executable, "-m", "loggerhub.cli", "--dir", str(tmp_path), "runs"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr


# ---------------------------------------------------------------------------------------------
# Parquet exports


def arrow_schema() -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(), "decimal": pa.decimal128(18, 6), "timestamp": pa.timestamp("ms", tz="UTC"),
        "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "list": pa.list_(pa.string()),
        "file": pa.struct([("path", pa.string())]),
        "histogram": pa.struct([("type", pa.string()), ("edges", pa.list_(pa.float64())),
                                ("values", pa.list_(pa.float64()))]),
    }
    return pa.schema([(name, types[kind]) for name, kind in SCHEMA_FIELDS])


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path)


def utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


def test_parquet_export_of_a_plain_run(tmp_path: Path) -> None:
    data, files = tmp_path / "exports" / "data", tmp_path / "exports" / "files"
    project, run_id, t0 = "ws/yolo", "YOLO-7", 1_700_000_000.0
    image = np.full((8, 8, 3), 90, dtype=np.uint8)
    (files / "ws_yolo" / "YOLO-7" / "Results" / "samples").mkdir(parents=True)
    (files / "ws_yolo" / "YOLO-7" / "Results" / "samples" / "1.000000.png").write_bytes(png(image))
    (files / "ws_yolo" / "YOLO-7" / "weights" / "set" / "sub").mkdir(parents=True)
    (files / "ws_yolo" / "YOLO-7" / "weights" / "best.pt").write_bytes(b"best")
    (files / "ws_yolo" / "YOLO-7" / "weights" / "set" / "sub" / "x.txt").write_text("x")
    base = {"project_id": project, "run_id": run_id}

    def row(path: str, kind: str, **values: Any) -> dict[str, Any]:
        return {**base, "attribute_path": path, "attribute_type": kind, **values}

    first = [
        row("sys/id", "string", string_value=run_id), row("sys/name", "string", string_value="detector"),
        row("sys/tags", "string_set", string_set_value=["YOLOv8", "team:vision"]),
        row("sys/failed", "bool", bool_value=True), row("sys/owner", "string", string_value="me"),
        row("sys/creation_time", "datetime", datetime_value=utc(t0 - 10)),
        row("sys/modification_time", "datetime", datetime_value=utc(t0 + 100)),
        row("Configuration/Hyperparameters/lr0", "float", float_value=0.01),
        row("Configuration/Hyperparameters/epochs", "int", int_value=3),
        row("Configuration/Hyperparameters/amp", "bool", bool_value=False),
        row("Configuration/classes", "string_set", string_set_value=["cat", "dog"]),
        row("Configuration/when", "datetime", datetime_value=utc(t0)),
    ] + [row("train/box_loss", "float_series", step=Decimal(s), timestamp=utc(t0 + s), float_value=1 / (s + 1))
         for s in range(3)]
    second = [
        row("train/box_loss", "float_series", step=Decimal("3.5"), timestamp=utc(t0 + 4), float_value=0.1),
        row("notes", "string_series", step=Decimal(1), timestamp=utc(t0 + 1), string_value="hi"),
        row("Results/samples", "file_series", step=Decimal(1), timestamp=utc(t0 + 2),
            file_value={"path": "ws_yolo/YOLO-7/Results/samples/1.000000.png"}),
        row("weights/best.pt", "file", file_value={"path": "ws_yolo/YOLO-7/weights/best.pt"}),
        row("weights/set", "file_set", file_value={"path": "ws_yolo/YOLO-7/weights/set"}),
        row("weights/missing.pt", "file", file_value={"path": "ws_yolo/YOLO-7/weights/missing.pt"}),
        row("grads", "histogram_series", step=Decimal(0), timestamp=utc(t0),
            histogram_value={"type": "COUNTING", "edges": [0.0, 1.0], "values": [3.0]}),
    ]
    write_parquet(data / "ws_yolo" / "YOLO-7_part_0.parquet", first)
    write_parquet(data / "ws_yolo" / "YOLO-7_part_1.parquet", second)

    report = import_runs("neptune", str(data), dir=tmp_path / "store")
    run_dir = only_run(report)
    assert run_dir == tmp_path / "store" / "ws-yolo" / source_run_id("neptune", "ws/yolo/YOLO-7")
    start = entries(run_dir)[0]
    assert (start["name"], start["ts"]) == ("detector", t0 - 10)
    assert start["tags"] == {"YOLOv8": "", "team": "vision", "imported_from": "neptune",
                             "source_run_id": "ws/yolo/YOLO-7"}
    assert start["config"] == {
        "Configuration/Hyperparameters/lr0": 0.01, "Configuration/Hyperparameters/epochs": 3,
        "Configuration/Hyperparameters/amp": False, "Configuration/classes": ["cat", "dog"],
        "Configuration/when": utc(t0).isoformat()}
    assert [(m["step"], m["ts"], m["values"]) for m in of_type(run_dir, "metrics")] == [
        (s, t0 + s, {"train/box_loss": 1 / (s + 1)}) for s in range(3)]
    assert [(t["key"], t["step"], t["ts"], t["text"]) for t in of_type(run_dir, "text")] == [("notes", 1, t0 + 1, "hi")]
    [img] = of_type(run_dir, "image")
    assert (img["key"], img["step"], img["ts"]) == ("Results/samples", 1, t0 + 2)
    assert (pixels(run_dir / img["file"]) == image).all()
    artifacts = {a["name"]: a for a in of_type(run_dir, "artifact")}
    assert sorted(artifacts) == ["weights/best.pt", "weights/set"]
    assert (run_dir / artifacts["weights/best.pt"]["file"]).read_bytes() == b"best"
    assert tree(run_dir / artifacts["weights/set"]["file"]) == {"sub/x.txt": b"x"}
    assert artifacts["weights/best.pt"]["ts"] == t0 + 100  # files have no time: the run's last
    end = of_type(run_dir, "run_end")[0]
    assert (end["status"], end["ts"]) == ("FAILED", t0 + 100)
    assert dict(report.unmapped) == {
        "Neptune system field sys/owner": 1,
        "non-integer step in train/box_loss": 1,
        "Neptune histogram_series field (loggerhub has no such record)": 1,
        "file missing on disk: weights/missing.pt": 1,
    }
    again = import_runs("neptune", str(data / "ws_yolo" / "YOLO-7_part_0.parquet"), dir=tmp_path / "store")
    assert again.skipped == [run_dir] and not again.imported


def export_like_neptune_exporter(parts: list[dict[str, Any]], project: str, root: Path) -> Path:
    """What neptune-exporter would write for these offline containers once synced: one server
    run per container (``neptune sync`` does not merge parts), steps numbered by the server."""
    data, files = root / "data", root / "files"
    for number, part in enumerate(parts, start=1):
        run_id = f"MIG-{number}"
        rows: list[dict[str, Any]] = [{"attribute_path": "sys/id", "attribute_type": "string",
                                       "string_value": run_id}]
        for path, item in part["fields"].items():
            kind, row = item["type"], {"attribute_path": path, "attribute_type": item["type"]}
            stored = Path(project, run_id, path)
            if kind in ("string", "int", "float", "bool"):
                rows.append({**row, f"{kind}_value": item["value"]})
            elif kind == "string_set":
                rows.append({**row, "string_set_value": item["values"]})
            elif kind in ("float_series", "string_series"):
                column = "float_value" if kind == "float_series" else "string_value"
                for index, value in enumerate(item["values"]):
                    step = index if value["step"] is None else value["step"]
                    rows.append({**row, "step": Decimal(step), "timestamp": utc(value["ts"]), column: value["value"]})
            elif kind == "image_series":
                for value in item["values"]:
                    target = stored / f"{value['step']}.000000.png"
                    (files / target).parent.mkdir(parents=True, exist_ok=True)
                    (files / target).write_bytes(value["data"])
                    rows.append({**row, "attribute_type": "file_series", "step": Decimal(value["step"]),
                                 "timestamp": utc(value["ts"]), "file_value": {"path": str(target)}})
            elif kind == "file":
                (files / stored).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(item["path"], files / stored)
                rows.append({**row, "file_value": {"path": str(stored)}})
            elif kind == "file_set":
                for name, source in offline.file_set_files(item).items():
                    (files / stored / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, files / stored / name)
                rows.append({**row, "file_value": {"path": str(stored)}})
        write_parquet(data / "migrate" / f"{run_id}_part_0.parquet",
                      [{"project_id": project, "run_id": run_id, **r} for r in rows])
    return data


def test_parquet_export_of_a_loggerhub_run(logged: dict[str, Any], tmp_path: Path) -> None:
    parts = offline.read_run(logged["data_dir"], logged["run_id"])
    data = export_like_neptune_exporter(parts, "ws/migrate", tmp_path / "exports")
    from_offline = only_run(import_runs("neptune", str(logged["data_dir"]), dir=tmp_path / "a",
                                        allow_read=logged["allow"]))
    from_parquet = only_run(import_runs("neptune", str(data), dir=tmp_path / "b"))
    # The same loggerhub run: the same imported run, whichever way it came.
    assert from_parquet.relative_to(tmp_path / "b") == from_offline.relative_to(tmp_path / "a")
    a, b = entries(from_offline)[0], entries(from_parquet)[0]
    assert (a["name"], a["tags"]) == (b["name"], b["tags"]) and same(a["config"], b["config"])

    def points(run_dir: Path) -> list[Any]:  # the export keeps milliseconds
        return sorted(json.dumps([k, m["step"], v, math.floor(m["ts"] * 1000)]) for m in of_type(run_dir, "metrics")
                      for k, v in m["values"].items())

    assert points(from_parquet) == points(from_offline)

    def media(run_dir: Path, kind: str) -> list[Any]:
        return sorted((i["key"], i["step"], i.get("boxes"), pixels(run_dir / i["file"]).tobytes())
                      for i in of_type(run_dir, kind))

    assert media(from_parquet, "image") == media(from_offline, "image")
    # The exporter keeps a file series' files, not the names (captions) Neptune had for them.
    assert {i["caption"] for i in of_type(from_parquet, "image")} == {None}
    assert {i["caption"] for i in of_type(from_offline, "image")} == {None, "red"}
    assert media(from_parquet, "figure") == media(from_offline, "figure")
    assert sorted((t["key"], t["step"], t["text"]) for t in of_type(from_parquet, "text")) == sorted(
        (t["key"], t["step"], t["text"]) for t in of_type(from_offline, "text"))
    for kind in ("artifact", "checkpoint", "table"):
        assert len(of_type(from_parquet, kind)) == len(of_type(from_offline, kind)) == 1, kind
    assert of_type(from_parquet, "run_end")[0]["status"] == "FAILED"


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['pyarrow'] = None; from loggerhub_neptune import importer\n"
            "from loggerhub_hookspecs.importers import Source\n"
            "try:\n    importer.import_runs.read(Source(sys.argv[1], None), None, {})\n"
            "except ImportError as e:\n    print(e)")
    write_parquet(tmp_path / "x.parquet", [])
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert "pip install 'loggerhub-neptune[parquet]'" in out.stdout, out.stderr


# ---------------------------------------------------------------------------------------------
# Neptune offline -> loggerhub -> MLflow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from loggerhub_mlflow.testing import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


def test_source_ids() -> None:
    """sys/custom_run_id first; sys/id is qualified by its project, being unique only there."""
    def plan(fields: dict[str, Any], project: str | None = None) -> Any:
        part = importer.Part(id="container", fields=fields, project=project)
        return importer._Mapper([part], fields, {}, Source("container", None)).plan()

    atom = lambda v: {"type": "string", "value": v}  # noqa: E731
    assert plan({"sys/custom_run_id": atom("c"), "sys/id": atom("D-1")}).source_id == "c"
    assert plan({"sys/id": atom("D-1")}, "ws/p").source_id == "ws/p/D-1"
    assert plan({}).source_id == "container"
    assert plan({"loggerhub/run_id": atom("lh-1"), "sys/id": atom("D-1")}).source_id == "lh-1"
    assert to_tracker("sys/odd") == "_sys/odd"  # the reserved-root escape the round trip undoes


def test_failed_run_keeps_its_error_and_end_time(tmp_path: Path) -> None:
    """The run ends at ``loggerhub/ended_at`` (the journal's end), not at the client's last
    operation, which a delivery running behind the training loop makes later."""
    import loggerhub

    data_dir = tmp_path / "neptune"
    with pytest.raises(ValueError, match="diverged"):
        with loggerhub.init(project="failures", name="crash", dir=tmp_path / "runs", backends=["neptune"],
                            options={"neptune": {"mode": "offline", "data_dir": str(data_dir)}},
                            drain_timeout=120) as run:
            run.log_metrics({"loss": 2.0}, step=0)
            raise ValueError("loss diverged: nan at step 3\nsecond line")
    [logged] = [e.data for e in j.JournalReader(run.dir).entries() if e.data["type"] == "run_end"]
    assert logged["status"] == "FAILED" and "ValueError" in logged["error"]["traceback"]
    report = import_runs("neptune", str(data_dir), dir=tmp_path / "store")
    [end] = of_type(only_run(report), "run_end")
    assert (end["status"], end["error"]) == ("FAILED", logged["error"])
    assert end["ts"] == pytest.approx(logged["ts"], abs=0.001)  # the client keeps whole milliseconds


def test_find_containers_skips_a_metadata_json_that_is_not_an_object(tmp_path: Path) -> None:
    root = tmp_path / ".neptune" / "offline"
    for name, metadata in (("run__c1__1__k", {"createdAt": "2024-01-02"}), ("run__c2__1__k", ["not", "an", "object"]),
                           ("run__c3__1__k", {"createdAt": 5})):
        (root / name).mkdir(parents=True)
        (root / name / "metadata.json").write_text(json.dumps(metadata))
    # createdAt compared as text, whatever its JSON type.
    assert [offline.container_id(c) for c in offline.find_containers(tmp_path)] == ["c1", "c3"]
