"""``loggerhub import comet``: archives written by the real comet_ml (through loggerhub, and by
plain SDK calls) imported back, compared with what was logged, and replayed into TensorBoard."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_comet.keys import from_tracker
from loggerhub_comet.offline import read_member, read_offline_dir
from PIL import Image

import loggerhub
from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader

CONFIG = {"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 3, "layers": [64, 128], "dropout": None,
          "nesterov": True}
LATE_PARAMS = {"late": 5, "long": "x" * 1500}
KEYS = ("train/loss", "curr_step", "~/home", "odd key:#%@!")
STEPS = 30
NONFINITE = {0: 1.0, 1: math.nan, 2: math.inf, 3: -math.inf}
TAGS = {"team": "vision", "baseline": ""}


def value(index: int, step: int) -> float:
    return round(1.0 / (step + 1) + index, 6)


def log_source_run(tmp: Path) -> tuple[Path, Path]:
    """A loggerhub run delivered to a Comet offline archive; returns (run dir, archive folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offline = tmp / "comet-offline"
    files = tmp / "files"
    (files / "dataset" / "sub").mkdir(parents=True)
    (files / "model").mkdir()
    (files / "best.pt").write_bytes(os.urandom(1024))
    (files / "dataset" / "a.txt").write_text("a")
    (files / "dataset" / "sub" / "b.txt").write_text("b")
    (files / "model" / "weights.bin").write_bytes(b"\x01\x02" * 100)
    (files / "model" / "config.json").write_text("{}")
    (files / "report.md").write_text("# report")
    rgb = np.zeros((24, 32, 3), dtype=np.uint8)
    rgb[:, :, 2] = 160
    with loggerhub.init(project="imports", name="comet source", dir=tmp / "runs", backends=["comet"],
                        options={"comet": {"online": False, "offline_dir": str(offline)}},
                        config=CONFIG, tags=TAGS, drain_timeout=120) as run:
        for step in range(STEPS):
            run.log_metrics({key: value(i, step) for i, key in enumerate(KEYS)}, step=step, epoch=step // 10)
        for step, number in NONFINITE.items():
            run.log_metrics({"val/nonfinite": number}, step=step)
        run.log_params(LATE_PARAMS)
        run.log_image("samples/rgb", rgb, step=3, caption="blue")
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
        run.log_artifact(files / "report.md", name="docs/report.md")
        run.log_text("notes", "hello ✓", step=7)
        run.log_table("preds", ["id", "label"], [[1, "cat"], [2, "dog"]], step=8)
        run.log_confusion_matrix("val/cm", [[5, 1], [2, 7]], ["cat", "dog"], step=9)
    return run.dir, offline


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return log_source_run(tmp_path_factory.mktemp("comet-source"))


@pytest.fixture(scope="module")
def imported(source: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = tmp_path_factory.mktemp("store")
    report = import_runs("comet", str(source[1]), dir=store)
    return report, store


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [entry.data for entry in JournalReader(run_dir).entries()]


def of_type(entries: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["type"] == kind]


def points(entries: list[dict[str, Any]]) -> set[tuple[str, int, str, Any]]:
    # repr() makes NaN comparable.
    return {(key, e["step"], repr(v), e.get("epoch")) for e in of_type(entries, "metrics")
            for key, v in e["values"].items()}


def pixels(run_dir: Path, entry: dict[str, Any]) -> np.ndarray:
    with Image.open(run_dir / entry["file"]) as image:
        return np.asarray(image.convert("RGB"))


def tree(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- loggerhub -> Comet -> loggerhub


def test_import_gives_back_what_was_logged(source: tuple[Path, Path], imported: Any) -> None:
    report, _ = imported
    original_dir = source[0]
    (run_dir,) = report.imported
    original, back = records(original_dir), records(run_dir)

    start, original_start = back[0], original[0]
    assert start["name"] == "comet source"
    assert start["project"] == "imports"
    assert start["tags"] == {**TAGS, "imported_from": "comet", "source_run_id": start["source"]["id"]}
    # Comet holds config and later params as one set of parameters, with their JSON types; the
    # long value comes back whole from its asset.
    assert start["config"] == {**original_start["config"], **LATE_PARAMS}
    assert points(back) == points(original)
    assert {k for e in of_type(back, "metrics") for k in e["values"]} == {*KEYS, "val/nonfinite"}

    images = {e["key"]: e for e in of_type(back, "image")}
    originals = {e["key"]: e for e in of_type(original, "image")}
    assert set(images) == set(originals) == {"samples/rgb", "samples/boxes"}
    for key, image in images.items():
        assert (image["step"], image["caption"], image["boxes"]) == (
            originals[key]["step"], originals[key]["caption"], originals[key]["boxes"])
        assert np.array_equal(pixels(run_dir, image), pixels(original_dir, originals[key]))
    assert images["samples/boxes"]["boxes"][1] == [5.0, 5.0, 20.0, 20.0, None, None, None]
    (figure,) = of_type(back, "figure")
    (original_figure,) = of_type(original, "figure")
    assert (figure["key"], figure["step"]) == ("plots/curve", 5)
    assert (run_dir / figure["file"]).read_bytes() == (original_dir / original_figure["file"]).read_bytes()

    assert [(e["key"], e["text"], e["step"]) for e in of_type(back, "text")] == [("notes", "hello ✓", 7)]
    tables = {e["key"]: e for e in of_type(back, "table")}
    assert tables["val/cm"]["role"] == "confusion_matrix"
    assert (tables["val/cm"]["columns"], tables["val/cm"]["rows"]) == (["cat", "dog"], [[5, 1], [2, 7]])
    # A CSV table: the cells come back as the text they were stored as.
    assert (tables["preds"]["columns"], tables["preds"]["rows"]) == (["id", "label"], [["1", "cat"], ["2", "dog"]])

    def files(entries: list[dict[str, Any]], run: Path) -> dict[tuple[str, str, str, int], dict[str, bytes]]:
        return {(e["type"], e["name"], e["kind"], e["step"]): tree(run / e["file"])
                for e in entries if e["type"] in ("artifact", "checkpoint")}

    assert files(back, run_dir) == files(original, original_dir)
    assert len(files(back, run_dir)) == 4
    (end,) = of_type(back, "run_end")
    assert end["status"] == "FINISHED"


def test_comet_bookkeeping_is_reported_not_imported(imported: Any) -> None:
    report, _ = imported
    assert report.unmapped == {"comet: SDK metric 'process duration'": 1,
                               "comet: SDK parameter 'curr_epoch'": 1,
                               "comet: SDK parameter 'curr_step'": 1}
    assert "not mapped" in report.summary()


def test_timestamps_are_the_archives(source: tuple[Path, Path], imported: Any) -> None:
    report, _ = imported
    (experiment,) = read_offline_dir(source[1]).values()
    (run_dir,) = report.imported
    stamps = {(from_tracker(name), p["step"]): p["timestamp"] / 1000
              for name, series in experiment["metrics"].items() for p in series}
    entries = records(run_dir)
    for entry in of_type(entries, "metrics"):
        for key in entry["values"]:
            if key != "val/nonfinite":
                assert entry["ts"] == stamps[(key, entry["step"])]
    times = [e["ts"] for e in entries[1:-1]]
    assert times == sorted(times)
    # The end is the journal's (the backend stamps it as stop_time); the start is the delivery's,
    # unless the delivery started after the run had ended.
    meta = experiment["experiment"]
    assert entries[-1]["type"] == "run_end" and entries[-1]["ts"] == meta["stop_time"] / 1000
    assert entries[0]["ts"] == min(meta["start_time"], meta["stop_time"]) / 1000


def test_importing_again_changes_nothing(source: tuple[Path, Path], imported: Any) -> None:
    _, store = imported
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    report = import_runs("comet", str(source[1]), dir=store)
    assert (report.imported, len(report.skipped)) == ([], 1)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_one_archive_is_imported_like_its_folder(source: tuple[Path, Path], tmp_path: Path) -> None:
    (archive,) = source[1].glob("*.zip")
    report = import_runs("comet", str(archive), dir=tmp_path)
    (run_dir,) = report.imported
    assert points(records(run_dir)) == points(records(source[0]))


# --------------------------------------------------------------------------- Comet -> TensorBoard


# --------------------------------------------------------------------------- other archives


PLAIN_SCRIPT = """
import os, sys
os.environ["COMET_ERROR_TRACKING_ENABLE"] = "0"
import numpy as np
import comet_ml

out, weights = sys.argv[1], sys.argv[2]
experiment = comet_ml.OfflineExperiment(project_name="plain-proj", offline_directory=out)
experiment.set_name("plain run")
experiment.add_tags(["baseline", "owner:ana"])
experiment.log_parameters({"lr": 0.01, "batch": 32, "opt": "adam"})
for step in range(5):
    experiment.log_metric("loss", 1.0 / (step + 1), step=step, epoch=step // 2)
image = np.zeros((16, 24, 3), dtype=np.uint8)
image[..., 1] = 180
experiment.log_image(image, name="val/sample", step=2, annotations=[
    {"name": "Predictions", "data": [{"boxes": [[1, 2, 5, 6]], "label": "car", "score": 0.75}]}])
experiment.log_text("a note", step=3)
experiment.log_asset(weights, file_name="weights.bin", step=4)
experiment.log_model("mymodel", weights)
experiment.log_confusion_matrix(matrix=[[3, 1], [0, 4]], labels=["a", "b"], title="cm", step=4)
experiment.log_histogram_3d(np.arange(50.0), name="hist", step=4)
experiment.log_other("dataset_version", "v2")
experiment.end()
"""


def test_plain_comet_archive(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01" * 50)
    offline = tmp_path / "archives"
    subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(offline), str(weights)], check=True,
                   capture_output=True, cwd=tmp_path, timeout=300)
    report = import_runs("comet", str(offline), dir=tmp_path / "store")
    (run_dir,) = report.imported
    entries = records(run_dir)
    start = entries[0]
    assert (start["name"], start["project"]) == ("plain run", "plain-proj")
    # The SDK also logs the command line as parameters (source "cli"): Comet shows them as such.
    assert start["config"] == {"lr": 0.01, "batch": 32, "opt": "adam", "run_arg_0": str(offline),
                               "run_arg_1": str(weights)}
    assert {k: start["tags"][k] for k in ("baseline", "owner")} == {"baseline": "", "owner": "ana"}
    assert points(entries) == {("loss", s, repr(1.0 / (s + 1)), s // 2) for s in range(5)}
    (image,) = of_type(entries, "image")
    assert (image["key"], image["step"], image["boxes"]) == ("val/sample", 2, [[1.0, 2.0, 6.0, 8.0, "car", 0.75, None]])
    (upload,) = [u for u in next(iter(read_offline_dir(offline).values()))["uploads"]
                 if u["upload_type"] == "visualization"]
    with Image.open(io.BytesIO(read_member(upload["archive"], upload["member"]))) as stored:
        assert np.array_equal(pixels(run_dir, image), np.asarray(stored.convert("RGB")))
    assert [(e["key"], e["text"], e["step"]) for e in of_type(entries, "text")] == [("text", "a note", 3)]
    (table,) = of_type(entries, "table")
    assert (table["key"], table["role"], table["columns"], table["rows"]) == (
        "cm", "confusion_matrix", ["a", "b"], [[3, 1], [0, 4]])
    artifacts = {e["name"]: (e["kind"], tree(run_dir / e["file"])) for e in of_type(entries, "artifact")}
    assert artifacts == {"weights.bin": ("file", {"": weights.read_bytes()}),
                         "mymodel": ("model", {"weights.bin": weights.read_bytes()})}
    assert of_type(entries, "run_end")[0]["status"] == "FINISHED"
    unmapped = report.unmapped
    for reason in ("comet: Other-tab value 'dataset_version'", "comet: SDK metric 'process duration'",
                   "comet: SDK parameter 'curr_step'", "comet: histogram3d upload (no loggerhub record for it)",
                   "comet: epoch of a text-sample upload (loggerhub keeps epochs on metrics)"):
        assert unmapped[reason] >= 1, (reason, unmapped)


def test_resumed_run_archives_become_one_run(tmp_path: Path) -> None:
    opts = {"online": False, "offline_dir": str(tmp_path / "comet")}
    run = loggerhub.init(project="resume", name="two parts", dir=tmp_path / "runs", backends=["comet"],
                         options={"comet": opts}, config={"lr": 0.1}, drain_timeout=60)
    run.log_metrics({"loss": 1.0}, step=0)
    run.finish()
    again = loggerhub.init(resume=run.dir, backends=["comet"], options={"comet": opts}, drain_timeout=60)
    again.log_metrics({"loss": 0.5}, step=1)
    again.finish("FAILED")
    assert len(list((tmp_path / "comet").glob("*.zip"))) == 2
    report = import_runs("comet", opts["offline_dir"], dir=tmp_path / "store")
    (run_dir,) = report.imported
    entries = records(run_dir)
    assert points(entries) == {("loss", 0, "1.0", None), ("loss", 1, "0.5", None)}
    assert of_type(entries, "run_end")[0]["status"] == "FAILED"


def test_empty_placeholder_archive_is_skipped_and_reported(source: tuple[Path, Path], tmp_path: Path) -> None:
    folder = tmp_path / "archives"
    folder.mkdir()
    for archive in source[1].glob("*.zip"):
        (folder / archive.name).write_bytes(archive.read_bytes())
    with zipfile.ZipFile(folder / "deadbeef-placeholder.zip", "w"):
        pass
    report = import_runs("comet", str(folder), dir=tmp_path / "store")
    assert len(report.imported) == 1
    assert report.unmapped[
        "comet: archive without experiment.json (placeholder of a killed process), skipped"] == 1


def test_bad_location_and_options(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_runs("comet", str(tmp_path / "missing"), dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no Comet offline archive"):
        import_runs("comet", str(tmp_path), dir=tmp_path / "store")
    with pytest.raises(TypeError, match="unknown comet import options"):
        import_runs("comet", str(tmp_path), dir=tmp_path / "store", options={"run_id": "x"})


def test_entry_point() -> None:
    from loggerhub.importing import importers

    assert importers()["comet"].value == "loggerhub_comet.importer:import_runs"


def failed_run(tmp: Path, backends: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """A run that dies of an exception; returns its journaled run_end."""
    with pytest.raises(ValueError, match="diverged"):
        with loggerhub.init(project="failures", name="crash", dir=tmp / "runs", backends=backends,
                            options=options, config={"lr": 10.0}, drain_timeout=120) as run:
            raise ValueError("loss diverged: nan at step 3\nsecond line")
    [end] = of_type(records(run.dir), "run_end")
    return end


def test_failed_run_keeps_its_error_and_end_time(tmp_path: Path) -> None:
    offline = tmp_path / "comet"
    logged = failed_run(tmp_path, ["comet"], {"comet": {"online": False, "offline_dir": str(offline)}})
    assert logged["status"] == "FAILED" and "ValueError" in logged["error"]["traceback"]
    report = import_runs("comet", str(offline), dir=tmp_path / "store")
    (run_dir,) = report.imported
    [end] = of_type(records(run_dir), "run_end")
    assert (end["status"], end["error"]) == ("FAILED", logged["error"])
    assert end["ts"] == pytest.approx(logged["ts"], abs=0.0005)  # stop_time is in milliseconds
    # The error's own Other-tab values and traceback upload are the run's end, not data.
    assert not of_type(records(run_dir), "artifact")
    assert not [reason for reason in report.unmapped if "error" in reason or "traceback" in reason]


def test_plain_archive_error_comes_from_customer_error_message(tmp_path: Path) -> None:
    """An archive that has no error_type Other-tab value (a plain Comet run, or one written
    before the backend logged it) falls back on experiment.json's customer_error_message."""
    offline = tmp_path / "comet"
    logged = failed_run(tmp_path, ["comet"], {"comet": {"online": False, "offline_dir": str(offline)}})
    [archive] = offline.glob("*.zip")
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(stripped / archive.name, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "messages.json":
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if b'"error_type"' not in line and b'"error_message"' not in line)
            target.writestr(info, data)
    report = import_runs("comet", str(stripped), dir=tmp_path / "store")
    (run_dir,) = report.imported
    [end] = of_type(records(run_dir), "run_end")
    assert end["error"] == {"type": "ValueError", "message": logged["error"]["message"], "traceback": ""}


def test_the_error_of_an_earlier_end_is_not_the_runs(tmp_path: Path) -> None:
    """A run that failed, was resumed and then finished: its end has no error, and the traceback
    of the first end is reported."""
    opts = {"comet": {"online": False, "offline_dir": str(tmp_path / "comet")}}
    failed_run(tmp_path, ["comet"], opts)
    (run_dir,) = (tmp_path / "runs" / "failures").iterdir()
    again = loggerhub.init(resume=run_dir, backends=["comet"], options=opts, drain_timeout=120)
    again.log_metrics({"loss": 0.5}, step=1)
    again.finish()
    report = import_runs("comet", opts["comet"]["offline_dir"], dir=tmp_path / "store")
    (imported,) = report.imported
    [end] = of_type(records(imported), "run_end")
    assert end["status"] == "FINISHED" and "error" not in end
    assert report.unmapped["comet: traceback of an earlier end of the run"] == 1
