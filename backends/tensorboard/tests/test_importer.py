"""``loggerhub import tensorboard``: logdirs written through loggerhub and by a user's own writer,
imported back and compared with what was logged; idempotency; replay; the CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_tensorboard.importer import parse_table
from PIL import Image

import loggerhub
from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader
from loggerhub_hookspecs.importers import source_run_id

CONFIG = {"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 3, "layers": [64, 128], "dropout": None,
          "nesterov": True, "width": 1.0, "code": "007", "big": 2**60}
KEYS = ("train/loss", "_loggerhub_/sneaky", "odd key:#%@!")
STEPS = 30
NONFINITE = {0: 1.0, 1: math.nan, 2: math.inf, 3: -math.inf}
TAGS = {"team": "vision", "baseline": ""}


def value(index: int, step: int) -> float:
    return round(1.0 / (step + 1) + index, 6)  # 7 significant digits: exact through float32


def log_source_runs(tmp: Path) -> tuple[Path, Path, Path]:
    """Two loggerhub runs delivered to TensorBoard under one logdir; (run dir, failed run dir, logdir)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logdir = tmp / "tb"
    options = {"tensorboard": {"logdir": str(logdir / "{run_id}")}}
    files = tmp / "files"
    (files / "dataset" / "sub").mkdir(parents=True)
    (files / "best.pt").write_bytes(os.urandom(1024))
    (files / "dataset" / "a.txt").write_text("a")
    (files / "dataset" / "sub" / "b.txt").write_text("b")
    report = files / "report.md"
    rgb = np.zeros((24, 32, 3), dtype=np.uint8)
    rgb[:, :, 2] = 160
    with loggerhub.init(project="imports", name="tb source", dir=tmp / "runs", backends=["tensorboard"],
                        options=options, config=CONFIG, tags=TAGS, drain_timeout=120) as run:
        for step in range(STEPS):
            run.log_metrics({key: value(i, step) for i, key in enumerate(KEYS)}, step=step, epoch=step // 10)
        for step, number in NONFINITE.items():
            run.log_metrics({"val/nonfinite": number}, step=step)
        run.log_params({"late": 5, "epochs": 4})
        run.log_image("samples/rgb", rgb, step=3, caption="blue")
        run.log_image("samples/gray", np.linspace(0, 1, 16 * 16).reshape(16, 16), step=3)
        run.log_image("samples/boxes", rgb, step=4, boxes=[
            {"box": [1, 2, 10, 12], "label": "cat", "score": 0.9, "class_id": 0},
            loggerhub.Box(5, 5, 20, 20),
        ])
        figure, axes = plt.subplots(figsize=(2, 2))
        axes.plot([0, 1], [1, 0])
        run.log_figure("plots/curve", figure, step=5)
        plt.close(figure)
        run.log_checkpoint(files / "best.pt", step=6)
        run.log_artifact(files / "dataset", kind="dataset")
        report.write_text("# first")
        run.log_artifact(report, name="docs/report.md", step=7)
        run.flush()
        report.write_text("# second")
        run.log_artifact(report, name="docs/report.md", step=8)
        run.log_text("notes", "hello ✓ <b>x</b>", step=7)
        run.log_table("preds", ["id", "label"], [[1, "cat | dog"], [2, None]], step=8)
        run.log_confusion_matrix("val/cm", [[5, 1], [2, 7]], ["cat", "dog"], step=9)
    failed = loggerhub.init(project="imports", name="it failed", dir=tmp / "runs", backends=["tensorboard"],
                            options=options, drain_timeout=120)
    failed.log_metrics({"loss": 2.0}, step=0)
    failed.finish("FAILED")
    return run.dir, failed.dir, logdir


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return log_source_runs(tmp_path_factory.mktemp("tb-source"))


@pytest.fixture(scope="module")
def imported(source: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = tmp_path_factory.mktemp("store")
    return import_runs("tensorboard", str(source[2]), dir=store), store


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [entry.data for entry in JournalReader(run_dir).entries()]


def of_type(entries: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["type"] == kind]


def imported_run(report: Any, name: str) -> Path:
    (run_dir,) = [d for d in report.imported if records(d)[0]["name"] == name]
    return run_dir


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def tree(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- loggerhub -> TensorBoard -> loggerhub


def test_each_run_folder_is_one_run(imported: Any) -> None:
    report, _ = imported
    assert sorted(records(d)[0]["name"] for d in report.imported) == ["it failed", "tb source"]
    assert report.unmapped == {"tensorboard: earlier copy under artifacts/, replaced by a later one of its name": 1}


def test_import_gives_back_what_was_logged(source: tuple[Path, Path, Path], imported: Any) -> None:
    report, _ = imported
    run_dir = imported_run(report, "tb source")
    original, back = records(source[0]), records(run_dir)

    start = back[0]
    assert (start["project"], start["ts"]) == ("imports", original[0]["ts"])
    assert start["tags"] == {**TAGS, "imported_from": "tensorboard", "source_run_id": start["source"]["id"]}
    assert source[0].name in start["source"]["id"]
    # Types that HParams loses (3 vs 3.0, None, lists, a string of digits) come back from the
    # backend's params table.
    assert start["config"] == original[0]["config"]
    assert [e["params"] for e in of_type(back, "params")] == [{"late": 5, "epochs": 4}]

    def metrics(entries: list[dict[str, Any]]) -> list[tuple[float, int, str]]:
        return sorted((e["ts"], e["step"], repr(e["values"])) for e in of_type(entries, "metrics"))

    # Same records: values, steps and the logged wall times (TensorBoard has no epochs).
    assert metrics(back) == metrics(original)
    assert {k for e in of_type(back, "metrics") for k in e["values"]} == {*KEYS, "val/nonfinite"}

    images = {e["key"]: e for e in of_type(back, "image")}
    logged = {e["key"]: e for e in of_type(original, "image") + of_type(original, "figure")}
    assert set(images) == set(logged)
    for key, image in images.items():
        want = logged[key]
        assert (image["step"], image["ts"], image["width"], image["height"]) == (
            want["step"], want["ts"], want["width"], want["height"])
        assert (image["caption"], image["boxes"]) == (want.get("caption"), want.get("boxes", []))
        if key != "samples/boxes":  # held with its boxes drawn in
            assert np.array_equal(pixels(run_dir / image["file"]), pixels(source[0] / want["file"]))
    assert images["samples/boxes"]["boxes"][1] == [5, 5, 20, 20, None, None, None]

    texts = {e["key"]: e for e in of_type(back, "text")}
    assert (texts["notes"]["text"], texts["notes"]["step"]) == ("hello ✓ <b>x</b>", 7)
    # Tables are text in TensorBoard: they come back as the markdown it shows.
    assert parse_table(texts["preds"]["text"]) == (["id", "label"], [["1", "cat | dog"], ["2", "None"]])
    assert parse_table(texts["val/cm"]["text"])[1] == [["cat", "5", "1"], ["dog", "2", "7"]]
    assert not of_type(back, "table")

    def files(entries: list[dict[str, Any]], run: Path) -> dict[str, tuple[Any, ...]]:
        return {e["name"]: (e["type"], e["kind"], e["step"], e["ts"], tree(run / e["file"]))
                for e in entries if e["type"] in ("artifact", "checkpoint")}

    # The logdir holds the last version of docs/report.md only (the earlier one is reported).
    assert files(back, run_dir) == files(original, source[0])
    assert files(back, run_dir)["docs/report.md"][-1] == {"": b"# second"}
    assert of_type(back, "run_end")[0]["status"] == "FINISHED"
    times = [e["ts"] for e in back[1:]]
    assert times == sorted(times)


def test_failed_status(imported: Any) -> None:
    report, _ = imported
    entries = records(imported_run(report, "it failed"))
    assert of_type(entries, "run_end")[0]["status"] == "FAILED"
    assert [e["values"] for e in of_type(entries, "metrics")] == [{"loss": 2.0}]


def test_importing_again_changes_nothing(source: tuple[Path, Path, Path], imported: Any) -> None:
    _, store = imported
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    report = import_runs("tensorboard", str(source[2]), dir=store)
    assert (report.imported, len(report.skipped)) == ([], 2)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_a_run_folder_itself_and_its_copied_files(source: tuple[Path, Path, Path], tmp_path: Path) -> None:
    logdir = source[2] / source[0].name
    # An artifact holding event files is a file of the run, not a run of its own; a file that no
    # note names is counted.
    planted = [logdir / "artifacts" / "dataset" / "events.out.tfevents.0.host", logdir / "artifacts" / "stray.bin"]
    for path in planted:
        path.write_bytes(b"")
    try:
        report = import_runs("tensorboard", str(logdir), dir=tmp_path)
    finally:
        for path in planted:
            path.unlink()
    (run_dir,) = report.imported
    assert records(run_dir)[0]["source"]["id"] == source[0].name
    assert report.unmapped["tensorboard: file in a run folder that no record holds"] == 1


# --------------------------------------------------------------------------- a user's own writer


TORCH_SCRIPT = """
import sys
import numpy as np
from torch.utils.tensorboard import SummaryWriter

logdir = sys.argv[1]
writer = SummaryWriter(logdir + "/exp1")
for step in range(5):
    writer.add_scalar("train/loss", 1.0 / (step + 1), step, walltime=1_700_000_000 + step)
writer.add_scalars("lr", {"pg0": 0.1, "pg1": 0.2}, 0, walltime=1_700_000_000)
image = np.zeros((3, 8, 12), dtype=np.uint8)
image[1] = 200
writer.add_image("samples/img", image, 1, walltime=1_700_000_001.5)
writer.add_text("notes", "hello", 2, walltime=1_700_000_002.5)
writer.add_histogram("weights", np.arange(100.0), 3, walltime=1_700_000_003.5)
writer.add_pr_curve("pr", np.array([1, 0, 1]), np.array([0.9, 0.2, 0.6]), 3, walltime=1_700_000_003.6)
writer.add_hparams({"lr": 0.1, "opt": "sgd"}, {"hp/acc": 0.9}, run_name="hp")
writer.close()
# Training resumed from a checkpoint of step 3: purge_step hides what was logged from there on.
restarted = SummaryWriter(logdir + "/exp1", purge_step=3)
restarted.add_scalar("train/loss", 9.0, 3, walltime=1_700_000_010)
restarted.close()
"""


@pytest.fixture(scope="module")
def user_logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    logdir = tmp_path_factory.mktemp("user") / "runs"
    subprocess.run([sys.executable, "-c", TORCH_SCRIPT, str(logdir)], check=True, capture_output=True, timeout=300)
    (logdir / "exp1" / "notes.txt").write_text("not TensorBoard's")
    (logdir / "README.md").write_text("outside every run")
    return logdir


def test_a_users_summary_writer(user_logdir: Path, tmp_path: Path) -> None:
    report = import_runs("tensorboard", str(user_logdir), dir=tmp_path)
    runs = {records(d)[0]["name"]: records(d) for d in report.imported}
    assert set(runs) == {"exp1", "exp1/lr_pg0", "exp1/lr_pg1", "exp1/hp"}

    exp1 = runs["exp1"]
    start = exp1[0]
    assert (start["project"], start["config"], start["ts"]) == ("tensorboard", {}, 1_700_000_000)
    assert start["tags"] == {"imported_from": "tensorboard", "source_run_id": "exp1"}
    loss = [(e["step"], e["ts"], e["values"]["train/loss"]) for e in of_type(exp1, "metrics")]
    # simple_value scalars are float32 (read back as the shortest decimal that round-trips);
    # the purge at step 3 hides the earlier steps 3 and 4, and says so.
    assert loss == [(0, 1_700_000_000, 1.0), (1, 1_700_000_001, 0.5), (2, 1_700_000_002, 0.33333334),
                    (3, 1_700_000_010, 9.0)]
    (image,) = of_type(exp1, "image")
    assert (image["key"], image["step"], image["ts"], image["width"], image["height"]) == (
        "samples/img", 1, 1_700_000_001.5, 12, 8)
    assert pixels(report.imported[0] / image["file"])[0, 0].tolist() == [0, 200, 0]
    (text,) = of_type(exp1, "text")
    assert (text["key"], text["text"], text["step"]) == ("notes/text_summary", "hello", 2)
    assert of_type(exp1, "run_end")[0]["status"] == "FINISHED"  # a plain writer records none

    assert [e["values"] for e in of_type(runs["exp1/lr_pg1"], "metrics")] == [{"lr": 0.2}]
    hp = runs["exp1/hp"]
    assert hp[0]["config"] == {"lr": 0.1, "opt": "sgd"}
    assert [e["values"] for e in of_type(hp, "metrics")] == [{"hp/acc": 0.9}]
    assert of_type(hp, "run_end")[0]["status"] == "FINISHED"  # HParams session end: success

    assert report.unmapped == {
        "tensorboard: histograms data": 1,
        "tensorboard: pr_curves data": 1,
        "tensorboard: scalars values purged by a restart, as TensorBoard shows": 2,
        "tensorboard: session log (restart marker)": 1,
        "tensorboard: file in a run folder that no record holds": 1,
        "tensorboard: file outside any run folder": 1,
    }


def test_cli_imports_once(user_logdir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "loggerhub.cli", "--dir", str(tmp_path), "import", "tensorboard",
               str(user_logdir / "exp1" / "lr_pg0")]
    first = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert "imported 1 runs, 0 already imported" in first.stdout, first.stdout + first.stderr
    assert "records: metrics 1, run_end 1, run_start 1" in first.stdout
    journal = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    second = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert "imported 0 runs, 1 already imported" in second.stdout
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == journal
    (run_dir,) = (tmp_path / "tensorboard").iterdir()
    assert run_dir.name == source_run_id("tensorboard", "lr_pg0")


def test_bad_location_and_options(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no TensorBoard logdir"):
        import_runs("tensorboard", str(tmp_path / "missing"), dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        import_runs("tensorboard", str(tmp_path), dir=tmp_path / "store")
    with pytest.raises(TypeError, match="unknown tensorboard import options"):
        import_runs("tensorboard", str(tmp_path), dir=tmp_path / "store", options={"run_id": "x"})


@pytest.mark.parametrize("text", ["plain", "x | y", "\\", "a\\|b", "1\n2", "<b>*x*</b> &amp;", "", "__init__",
                                  "[64, 128]", "`code` _e_ \\n", " padded ", "\r\nwindows"])
def test_markdown_cells_read_back_as_the_backend_wrote_them(text: str) -> None:
    from loggerhub_tensorboard._session import markdown_table

    header, rows = parse_table(markdown_table(("name", text), [(text, "x"), ("y", text)]))
    expected = text.replace("\r\n", "\n")
    assert (header, rows) == (["name", expected], [[expected, "x"], ["y", expected]])


def test_entry_point() -> None:
    from loggerhub.importing import importers

    assert importers()["tensorboard"].value == "loggerhub_tensorboard.importer:import_runs"


def test_failed_run_keeps_its_error_and_end_time(tmp_path: Path) -> None:
    logdir = tmp_path / "tb"
    with pytest.raises(ValueError, match="diverged"):
        with loggerhub.init(project="failures", name="crash", dir=tmp_path / "runs", backends=["tensorboard"],
                            options={"tensorboard": {"logdir": str(logdir / "{run_id}")}}, drain_timeout=120) as run:
            run.log_metrics({"loss": 2.0}, step=0)
            # Characters the Text tab's markdown escapes, a line break, and what looks like a head.
            raise ValueError("loss diverged: *nan* | <b>x</b> \\ at step 3\n**FAILED**: second line")
    [logged] = of_type(records(run.dir), "run_end")
    assert logged["status"] == "FAILED" and "ValueError" in logged["error"]["traceback"]
    report = import_runs("tensorboard", str(logdir), dir=tmp_path / "store")
    (run_dir,) = report.imported
    [end] = of_type(records(run_dir), "run_end")
    assert (end["status"], end["ts"], end["error"]) == ("FAILED", logged["ts"], logged["error"])


def test_hparams_session_end_time_is_the_end(tmp_path: Path) -> None:
    """A user's writer that ends its HParams session with an end time: the run ends then."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from tensorboard.plugins.hparams import metadata as hp_metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(tmp_path / "runs" / "exp"))
    scalar = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=0.5)])
    writer.add_event(event_pb2.Event(step=1, wall_time=1_700_000_001, summary=scalar))
    for info in (plugin_data_pb2.HParamsPluginData(session_start_info=plugin_data_pb2.SessionStartInfo()),
                 plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
                     status=api_pb2.Status.STATUS_FAILURE, end_time_secs=1_700_000_100.5))):
        tag = hp_metadata.SESSION_END_INFO_TAG if info.HasField("session_end_info") else \
            hp_metadata.SESSION_START_INFO_TAG
        value = summary_pb2.Summary.Value(tag=tag, tensor=hp_metadata.NULL_TENSOR,
                                          metadata=hp_metadata.create_summary_metadata(info))
        writer.add_event(event_pb2.Event(step=0, wall_time=1_700_000_000, summary=summary_pb2.Summary(value=[value])))
    writer.close()
    report = import_runs("tensorboard", str(tmp_path / "runs"), dir=tmp_path / "store")
    (run_dir,) = report.imported
    [end] = of_type(records(run_dir), "run_end")
    assert (end["status"], end["ts"], end.get("error")) == ("FAILED", 1_700_000_100.5, None)
