"""``loggerhub import wandb``: runs this backend wrote come back field by field; re-importing writes
nothing; hostile input is skipped and reported; history exports import as metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_wandb import datastore, reader
from loggerhub_wandb.testing import journal_view

import loggerhub
from loggerhub.importing import import_runs


def _log(tmp_path: Path, status: str = "FINISHED") -> Any:
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights" * 100)
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "x.txt").write_text("x")
    run = loggerhub.init(project="imp", name="source", dir=tmp_path / "runs", backends=["wandb"],
                         options={"wandb": {"mode": "offline", "dir": str(tmp_path / "wb")}},
                         config={"lr": 0.1, "layers": [8, 16], "opt": {"name": "adam"}, "none": None},
                         tags={"team": "vision", "flag": ""}, drain_timeout=120)
    for step in (0, 1, 2, 5, 3):  # 3 after 5: an out-of-order step
        run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step, epoch=step // 2)
    run.log_metrics({"odd": math.nan}, step=4)
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    image[:, :, 1] = 120
    run.log_image("samples/img", image, step=2, caption="a caption",
                  boxes=[loggerhub.Box(1, 2, 10, 12, label="cat", score=0.75, class_id=3),
                         loggerhub.Box(4, 4, 20, 15, label="dog")])
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "plot.png")
    run.log_figure("plots/png", tmp_path / "plot.png", step=2)
    run.log_text("notes", "line one\nline two ✓", step=2)
    run.log_table("tables/t", ["name", "n"], [["a", 1], ["b", 2]], step=3)
    run.log_confusion_matrix("val/cm", [[3, 1], [0, 4]], ["cat", "dog"], step=3)
    run.log_checkpoint(checkpoint, step=3)
    run.log_artifact(tmp_path / "data", kind="dataset")
    run.finish(status)
    return run


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    tmp_path = tmp_path_factory.mktemp("wandb-import")
    return _log(tmp_path), tmp_path


def test_round_trip_field_by_field(source: tuple[Any, Path], tmp_path: Path) -> None:
    run, root = source
    report = import_runs("wandb", str(root / "wb" / "wandb"), dir=tmp_path / "store", allow_read=[run.dir])
    assert len(report.imported) == 1, report.summary()
    original, imported = journal_view(run.dir), journal_view(report.imported[0])
    for field in ("metrics", "figures", "texts", "tables", "checkpoints", "artifacts", "status", "error"):
        assert imported[field] == original[field], field
    # A box without a class id comes back with the one W&B needed (per label, after the given ids).
    ((*image, boxes, caption),) = original["images"]
    assert imported["images"] == [(*image, (boxes[0], dataclasses.replace(boxes[1], class_id=4)), caption)]
    assert imported["params"] == original["params"]
    # The out-of-order step 3 (logged after 5) is kept.
    assert [m[:3] for m in imported["metrics"] if m[:2] == ("loss", 3)] == [("loss", 3, repr(0.25))]


def test_reimport_writes_nothing(source: tuple[Any, Path], tmp_path: Path) -> None:
    run, root = source
    first = import_runs("wandb", str(root / "wb"), dir=tmp_path, allow_read=[run.dir])
    again = import_runs("wandb", str(root / "wb"), dir=tmp_path, allow_read=[run.dir])
    assert len(first.imported) == 1 and not again.imported and again.skipped == first.imported


def test_artifacts_outside_the_source_need_allow_read(source: tuple[Any, Path], tmp_path: Path) -> None:
    # The manifest names loggerhub's copies in the run directory, outside the wandb folder.
    _run, root = source
    report = import_runs("wandb", str(root / "wb"), dir=tmp_path)
    imported = journal_view(report.imported[0])
    assert imported["checkpoints"] == [] and imported["artifacts"] == []
    assert report.summary().count("OutsideSource") == 2, report.summary()


def _copy_run(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy" / "wandb"
    shutil.copytree(root / "wb" / "wandb", target, symlinks=True)
    return target


def test_corrupt_records_are_skipped_and_reported(source: tuple[Any, Path], tmp_path: Path) -> None:
    run, root = source
    wandb_dir = _copy_run(root, tmp_path)
    (folder,) = reader.run_dirs(wandb_dir)
    path = reader.wandb_file(folder)
    assert path is not None
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = b"\xff" * 8  # inside some record: its checksum no longer matches
    path.write_bytes(bytes(data))
    scan = datastore.read_records(path)
    assert scan.problems and len(scan.records) > 10
    report = import_runs("wandb", str(wandb_dir), dir=tmp_path / "store", allow_read=[run.dir])
    assert len(report.imported) == 1
    assert "records skipped" in report.summary()


def test_media_paths_cannot_leave_the_run(source: tuple[Any, Path], tmp_path: Path) -> None:
    run, root = source
    wandb_dir = _copy_run(root, tmp_path)
    (folder,) = reader.run_dirs(wandb_dir)
    secret = tmp_path / "secret.png"
    shutil.copyfile(next((folder / "files" / "media" / "images").rglob("*.png")), secret)
    # Point every image at a file outside the run (as hostile input would), keeping the framing valid.
    boxes_files = list((folder / "files" / "media").rglob("*.json"))
    for image in list((folder / "files" / "media" / "images").rglob("*.png")):
        image.unlink()
        image.symlink_to(secret)
    report = import_runs("wandb", str(wandb_dir), dir=tmp_path / "store", allow_read=[run.dir])
    imported = journal_view(report.imported[0])
    assert imported["images"] == [] and imported["figures"] == []
    assert report.summary().count("OutsideSource") == 2, report.summary()
    assert boxes_files  # the rest of the run still came in
    assert imported["texts"] and imported["metrics"]


def test_not_a_wandb_file(tmp_path: Path) -> None:
    folder = tmp_path / "wandb" / "offline-run-20260101_000000-abc"
    folder.mkdir(parents=True)
    (folder / "run-abc.wandb").write_bytes(b"not a wandb file at all")
    with pytest.raises(datastore.NotAWandbFile):
        datastore.read_records(folder / "run-abc.wandb")
    report = import_runs("wandb", str(tmp_path), dir=tmp_path / "store")
    assert not report.imported and "not a readable W&B run" in report.summary()


def test_history_export_csv_and_parquet(tmp_path: Path) -> None:
    rows = [{"_step": step, "_timestamp": 1_700_000_000 + step, "_runtime": step, "loss": 1 / (step + 1),
             "label": "x"} for step in range(4)]
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("_step,_timestamp,_runtime,loss,label\n"
                        + "".join(f"{r['_step']},{r['_timestamp']},{r['_runtime']},{r['loss']},x\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet_path = tmp_path / "history.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet_path)
    for path in (csv_path, parquet_path):
        report = import_runs("wandb", str(path), dir=tmp_path / "store")
        view = journal_view(report.imported[0])
        assert view["metrics"] == {("loss", s, repr(1 / (s + 1)), float(1_700_000_000 + s), None) for s in range(4)}
        assert "cells that are not numbers" in report.summary()


def test_box_json_is_wandbs(source: tuple[Any, Path]) -> None:
    run, root = source
    (folder,) = reader.run_dirs(root / "wb" / "wandb")
    (box_file,) = (folder / "files" / "media" / "metadata" / "boxes2D").rglob("*.json")
    data = json.loads(box_file.read_text())
    assert data["class_labels"] == {"3": "cat", "4": "dog"}
    assert [b["class_id"] for b in data["box_data"]] == [3, 4]
