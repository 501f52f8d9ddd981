"""TensorBoard-specific behaviour: resume, tag collisions, hparams, options, files, flushing."""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_tensorboard import TensorBoardBackend
from loggerhub_tensorboard._session import parse_options
from loggerhub_tensorboard.reader import as_logged, event_files, read_logdir
from PIL import Image

from loggerhub_hookspecs import (
    ArtifactKind,
    ArtifactRecord,
    Box,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    Phase,
    Rejected,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
    Unsupported,
)

T0 = 1_700_000_000.0
#: When the runs of these tests ended: later than every record they log.
T_END = T0 + 10_000


def make_run(tmp_path: Path, config: dict[str, Any] | None = None, **options: Any) -> RunInfo:
    return RunInfo("run-1", "proj", "name", tmp_path / "run", config or {}, 1_700_000_000.0,
                   tags={"team": "vision"}, options=options)


def start(run: RunInfo) -> tuple[TensorBoardBackend, dict[str, Any]]:
    backend, state = TensorBoardBackend(), dict[str, Any]()
    backend.loggerhub_run_start(run=run, state=state)
    return backend, state


def spy_on_flush(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of tensorboard's real ``EventFileWriter.flush``, which still flushes."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    flushes: list[int] = []
    real_flush = EventFileWriter.flush

    def flush(self: EventFileWriter) -> None:
        flushes.append(1)
        real_flush(self)

    monkeypatch.setattr(EventFileWriter, "flush", flush)
    return flushes


def end(backend: TensorBoardBackend, run: RunInfo, status: Status, ended_at: float = T_END,
        error: RunError | None = None) -> None:
    backend.loggerhub_run_end(run=run, status=status, ended_at=ended_at, error=error)


def points(key: str, steps: range, offset: float = 0.0) -> list[MetricPoint]:
    return [MetricPoint(key, step + offset, step, 1_700_000_000.0 + step) for step in steps]


# --------------------------------------------------------------------------- through loggerhub


def test_resume_appends_a_second_event_file_to_the_same_run(tmp_path: Path) -> None:
    import loggerhub

    options = {"tensorboard": {"logdir": str(tmp_path / "tb" / "{run_id}")}}
    common: dict[str, Any] = dict(dir=tmp_path / "runs", backends=["tensorboard"], options=options,
                                  drain_timeout=120)
    with loggerhub.init(project="p", name="resume", config={"lr": 0.1}, **common) as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        run.log_text("notes", "first part", step=4)
    logdir = tmp_path / "tb" / run.id
    assert run.summary["trackers"]["tensorboard"]["undelivered"] == 0
    with loggerhub.init(project="p", resume=run.dir, **common) as resumed:
        for step in range(5, 10):
            resumed.log_metrics({"loss": 1.0 / (step + 1), "acc": 0.5}, step=step)
        resumed.log_text("notes", "second part", step=9)
        resumed.log_params({"late": 1})
    assert resumed.id == run.id
    report = resumed.summary["trackers"]["tensorboard"]
    assert (report["undelivered"], report["errors"], report["rejected"]) == (0, 0, 0), report

    files = event_files(logdir)
    assert len(files) == 2
    assert files == sorted(files, key=os.path.getctime)
    assert [p.parent for p in (tmp_path / "tb").rglob("*tfevents*")] == [logdir, logdir]
    tb = read_logdir(logdir)
    assert [(s.step, s.value) for s in tb.scalars["loss"]] == [
        (step, as_logged(1.0 / (step + 1))) for step in range(10)]
    assert [t.text for t in tb.texts["notes"]] == ["first part", "second part"]
    # One run, one session start: the resumed delivery does not start a second one.
    assert tb.hparams == {"lr": 0.1}
    assert [t.text for t in tb.texts["_loggerhub_/status"]] == ["FINISHED", "FINISHED"]
    assert len(tb.texts["_loggerhub_/run"]) == 1
    assert "late" in tb.texts["_loggerhub_/params"][-1].text


# --------------------------------------------------------------------------- tags


def test_a_tag_holds_one_kind_of_data(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_metrics(points=points("loss", range(3)))
    with pytest.raises(Rejected, match="'loss'.*already holds scalars"):
        backend.loggerhub_log_text(text=TextRecord("loss", "not a number", 3, 1_700_000_003.0))
    backend.loggerhub_log_table(table=TableRecord("notes", ("a",), ((1,),), 3, 1_700_000_003.0))
    # A batch keeps its good points and reports the others.
    with pytest.raises(Rejected, match=r"'notes'@4 \(the tag holds text\)"):
        backend.loggerhub_log_metrics(points=points("loss", range(4, 6)) + points("notes", range(4, 5)))
    end(backend, run, Status.FINISHED)
    tb = read_logdir(state["logdir"])
    assert [s.step for s in tb.scalars["loss"]] == [0, 1, 2, 4, 5]
    assert "loss" not in tb.texts and "notes" not in tb.scalars


def test_tag_kinds_hold_across_resumes(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_metrics(points=points("loss", range(2)))
    end(backend, run, Status.FINISHED, ended_at=T0 + 1.5)
    resumed = TensorBoardBackend()
    resumed.loggerhub_run_resume(run=run, state=state)
    resumed.loggerhub_log_params(params={"late": True})
    with pytest.raises(Rejected, match="already holds scalars"):
        resumed.loggerhub_log_text(text=TextRecord("loss", "text", 5, 1_700_000_005.0))
    resumed.loggerhub_log_metrics(points=points("loss", range(2, 4)))
    end(resumed, run, Status.FINISHED, ended_at=T0 + 3.5)
    tb = read_logdir(state["logdir"])
    assert [s.step for s in tb.scalars["loss"]] == [0, 1, 2, 3]
    # The resumed delivery's own texts continue from the earlier steps, never go back to 0.
    assert [t.step for t in tb.texts["_loggerhub_/params"]] == [1]
    # The status is stamped with the journal's end time, at the last step so far.
    assert [(t.step, t.wall_time) for t in tb.texts["_loggerhub_/status"]] == [(1, T0 + 1.5), (3, T0 + 3.5)]


def test_keys_that_would_reach_reserved_tags_are_escaped(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_text(text=TextRecord("_loggerhub_/status", "mine", 0, 1_700_000_000.0))
    backend.loggerhub_log_metrics(points=points("_hparams_/session_start_info", range(2)))
    end(backend, run, Status.FAILED)
    tb = read_logdir(state["logdir"])
    assert [t.text for t in tb.texts["__loggerhub_/status"]] == ["mine"]
    assert tb.status == "FAILED"
    assert len(tb.scalars["__hparams_/session_start_info"]) == 2
    assert tb.plugins["_hparams_/session_start_info"] == "hparams"


# --------------------------------------------------------------------------- hparams and status


def test_hparams_values_and_late_params(tmp_path: Path) -> None:
    config = {"int": 3, "big": 2**60, "nan": math.nan, "list": [1, "a"], "none": None, "flag": False,
              "name": "x"}
    run = make_run(tmp_path, config)
    backend, state = start(run)
    backend.loggerhub_log_params(params=config)
    backend.loggerhub_log_params(params={"extra": 1})  # before any data: still in the session start
    backend.loggerhub_log_metrics(points=points("loss", range(2)))
    backend.loggerhub_log_params(params={"late": 2, "int": 4})  # after: Text tab only
    end(backend, run, Status.KILLED)
    tb = read_logdir(state["logdir"])
    assert tb.hparams == {"int": 3.0, "big": str(2**60), "nan": "nan", "list": "[1, 'a']", "none": "None",
                          "flag": False, "name": "x", "extra": 1.0}
    assert tb.hparams_status == "STATUS_FAILURE"  # TensorBoard has no "killed"
    assert tb.status == "KILLED"
    params = [t.text for t in tb.texts["_loggerhub_/params"]]
    assert len(params) == 3 and "| late | 2 |" in params[-1] and "| int | 4 |" in params[-1]


def test_experiment_summary_is_opt_in(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import metadata

    for wanted in (False, True):
        run = make_run(tmp_path / str(wanted), {"lr": 0.1}, hparams_experiment=wanted)
        backend, state = start(run)
        backend.loggerhub_log_metrics(points=points("loss", range(2)) + points("_hparams_/x", range(1)))
        backend.loggerhub_log_text(text=TextRecord("notes", "n", 1, 1_700_000_001.0))
        end(backend, run, Status.FINISHED)
        accumulator = ea.EventAccumulator(state["logdir"])
        accumulator.Reload()
        content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
        assert (metadata.EXPERIMENT_TAG in content) is wanted
        if wanted:
            experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
            assert [m.name.tag for m in experiment.metric_infos] == ["__hparams_/x", "loss"]
            assert [h.name for h in experiment.hparam_infos] == ["lr"]


# --------------------------------------------------------------------------- options


def test_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    default = parse_options(run)
    assert default.logdir == tmp_path / "run" / "tensorboard"
    assert (default.flush_secs, default.hparams_experiment) == (0.0, False)
    assert capsys.readouterr().err == ""

    monkeypatch.chdir(tmp_path)
    options = parse_options(make_run(tmp_path, logdir="tb/{project}/{run_id}", flush_secs=5))
    assert options.logdir == tmp_path / "tb" / "proj" / "run-1"
    assert options.flush_secs == 5.0

    bad = parse_options(make_run(tmp_path, log_dir="x", flush_secs=-1, hparams_experiment="yes"))
    err = capsys.readouterr().err
    assert "ignoring unknown option 'log_dir'" in err
    assert "flush_secs must be a number >= 0, got -1" in err
    assert "hparams_experiment must be true or false" in err
    assert (bad.logdir, bad.flush_secs, bad.hparams_experiment) == (default.logdir, 0.0, False)


def test_resume_uses_the_logdir_from_state(tmp_path: Path) -> None:
    run = make_run(tmp_path, logdir="relative-tb")
    backend, state = TensorBoardBackend(), {"logdir": str(tmp_path / "elsewhere")}
    backend.loggerhub_run_resume(run=run, state=state)
    backend.loggerhub_log_metrics(points=points("loss", range(1)))
    end(backend, run, Status.FINISHED)
    assert state == {"logdir": str(tmp_path / "elsewhere")}
    assert len(read_logdir(tmp_path / "elsewhere").scalars["loss"]) == 1
    # No run info and no second session start on resume; the session starts with the first data.
    tb = read_logdir(tmp_path / "elsewhere")
    assert "_loggerhub_/run" not in tb.texts and tb.hparams_status == "STATUS_SUCCESS"


# --------------------------------------------------------------------------- delivery guarantees


def test_a_returned_hook_is_on_disk(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_metrics(points=points("loss", range(3)))
    # The writer is still open: only what was flushed can be read.
    assert [s.step for s in read_logdir(state["logdir"]).scalars["loss"]] == [0, 1, 2]
    end(backend, run, Status.FINISHED)


def test_flush_secs_stops_hooks_waiting_for_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = spy_on_flush(monkeypatch)
    for flush_secs, hook_flushes in ((0, 3), (60, 0)):
        run = make_run(tmp_path / str(flush_secs), flush_secs=flush_secs)
        backend, state = start(run)
        flushes.clear()
        for step in range(3):
            backend.loggerhub_log_metrics(points=points("loss", range(step, step + 1)))
        assert len(flushes) == hook_flushes
        end(backend, run, Status.FINISHED)
        assert len(read_logdir(state["logdir"]).scalars["loss"]) == 3


def test_event_files_sort_in_creation_order(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    for delivery in range(3):
        backend, state = TensorBoardBackend(), {"logdir": str(tmp_path / "tb")}
        backend.loggerhub_run_resume(run=run, state=state)
        backend.loggerhub_log_metrics(points=points("loss", range(delivery, delivery + 1)))
        end(backend, run, Status.FINISHED, ended_at=T_END + delivery)
    files = event_files(tmp_path / "tb")
    assert len(files) == 3
    stamps = [int(p.name.split(".")[3]) for p in files]
    assert stamps == sorted(set(stamps))


def test_artifacts_and_checkpoints(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "data" / "sub").mkdir(parents=True)
    (source / "data" / "sub" / "b.txt").write_text("b")
    (source / "best.pt").write_bytes(b"weights")
    run = make_run(tmp_path)
    backend, state = start(run)
    directory = ArtifactRecord("sets/data", source / "data", ArtifactKind.DATASET, True, 1, 2, 1.0)
    checkpoint = ArtifactRecord("best.pt", source / "best.pt", ArtifactKind.MODEL, False, 7, 3, 2.0)
    for _ in range(2):  # a retried delivery replaces its earlier copy
        backend.loggerhub_log_artifact(artifact=directory)
        backend.loggerhub_checkpoint_saved(checkpoint=checkpoint)
    end(backend, run, Status.FINISHED)
    logdir = Path(state["logdir"])
    tb = read_logdir(logdir)
    assert tb.files == {"artifacts/sets/data/sub/b.txt", "checkpoints/best.pt"}
    assert (logdir / "checkpoints" / "best.pt").read_bytes() == b"weights"
    assert os.path.samefile(logdir / "checkpoints" / "best.pt", source / "best.pt")  # hard link
    note = tb.texts["_loggerhub_/checkpoints/best.pt"][-1].text
    assert note == "model file, 7 bytes: `checkpoints/best.pt`"
    assert tb.texts["_loggerhub_/artifacts/sets/data"][-1].text.startswith("dataset directory")


def test_odd_keys_reach_tensorboard_verbatim(tmp_path: Path) -> None:
    odd = ["odd key:#%@!", "größe", "a//b", "/lead", "trail/", ".", "..", "back\\slash", "new\nline",
           "<b>html</b>"]
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_metrics(points=[MetricPoint(key, 1.5, 0, 1.0) for key in odd])
    end(backend, run, Status.FINISHED)
    assert set(odd) <= set(read_logdir(state["logdir"]).scalars)


def test_run_info_text(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    backend, state = start(run)
    end(backend, run, Status.FINISHED)
    tb = read_logdir(state["logdir"])
    text = tb.texts["_loggerhub_/run"][0].text
    assert "| run id | run-1 |" in text and "| tag: team | vision |" in text
    assert tb.hparams_status == "STATUS_SUCCESS"


def test_missing_run_directory_files_are_rejected_not_retried(tmp_path: Path) -> None:
    from loggerhub_hookspecs import FigureRecord, ImageRecord

    run = make_run(tmp_path)
    backend, _ = start(run)
    gone = tmp_path / "gone.png"
    with pytest.raises(Rejected, match="media file missing"):
        backend.loggerhub_log_image(image=ImageRecord("img", gone, 4, 4, 0, 1.0))
    with pytest.raises(Rejected, match="media file missing"):
        backend.loggerhub_log_figure(figure=FigureRecord("fig", gone, 4, 4, 0, 1.0))
    with pytest.raises(Rejected, match="is gone"):
        backend.loggerhub_log_artifact(
            artifact=ArtifactRecord("a.txt", tmp_path / "a.txt", ArtifactKind.FILE, False, 1, 0, 1.0))
    end(backend, run, Status.FINISHED)


def test_lifecycle_boundaries_flush_a_buffered_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushes = spy_on_flush(monkeypatch)
    run = make_run(tmp_path, flush_secs=60)
    backend, state = start(run)
    flushes.clear()  # the writer flushes once when it opens its file
    backend.loggerhub_log_metrics(points=points("loss", range(3)))
    # TensorBoard stores no boundary: each is reported as skipped (Unsupported), flushed or not.
    with pytest.raises(Unsupported):
        backend.loggerhub_epoch_start(event=LifecycleEvent(Phase.EPOCH_START, 3, T0 + 3, epoch=1))
    with pytest.raises(Unsupported):
        backend.loggerhub_step_end(event=LifecycleEvent(Phase.STEP_END, 3, T0 + 3, epoch=1))
    assert flushes == []
    with pytest.raises(Unsupported):
        backend.loggerhub_epoch_end(event=LifecycleEvent(Phase.EPOCH_END, 3, T0 + 3, epoch=1))
    assert flushes == [1]
    assert [s.step for s in read_logdir(state["logdir"]).scalars["loss"]] == [0, 1, 2]
    end(backend, run, Status.FINISHED)


# --------------------------------------------------------------------------- end time and failure


def test_the_end_is_stamped_with_the_journal_end_time(tmp_path: Path) -> None:
    """Defect 11: a run delivered late ends when it ended, not when its last record was logged
    nor when it was delivered."""
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_metrics(points=points("loss", range(3)))  # the last at T0 + 2
    end(backend, run, Status.FINISHED, ended_at=T0 + 7.25)
    tb = read_logdir(state["logdir"])
    assert tb.hparams_end_time == T0 + 7.25
    assert (tb.ended_at, tb.texts["_loggerhub_/status"][-1].step) == (T0 + 7.25, 2)


def test_a_failed_run_says_why(tmp_path: Path) -> None:
    """Defect 14: the failure's type, message and traceback reach the Text tab."""
    error = RunError("FloatingPointError", "loss diverged | <nan> at *step* 2",
                     'Traceback (most recent call last):\n  File "train.py", line 9, in <module>\n'
                     "    step(model)\nFloatingPointError: loss diverged")
    run = make_run(tmp_path)
    backend, state = start(run)
    backend.loggerhub_log_metrics(points=points("loss", range(3)))
    end(backend, run, Status.FAILED, error=error)
    tb = read_logdir(state["logdir"])
    assert (tb.status, tb.hparams_status) == ("FAILED", "STATUS_FAILURE")
    assert tb.error is not None
    first, blank, *frames = tb.error.splitlines()
    # Markdown characters of the message are escaped so that TensorBoard shows it literally.
    assert first == r"**FAILED**: FloatingPointError: loss diverged \| &lt;nan&gt; at \*step\* 2"
    assert blank == "" and frames == ["    " + line for line in error.traceback.splitlines()]

    resumed = TensorBoardBackend()  # the run is resumed, and this time it finishes
    resumed.loggerhub_run_resume(run=run, state=dict(state))
    end(resumed, run, Status.FINISHED, ended_at=T_END + 1)
    tb = read_logdir(state["logdir"])
    assert (tb.status, tb.error) == ("FINISHED", None)
    assert len(tb.texts["_loggerhub_/error"]) == 1  # kept as history


# --------------------------------------------------------------------------- redelivery


def test_records_delivered_again_are_not_written_again(tmp_path: Path) -> None:
    """Defect 12: a delivery that dies after the tracker took a record, before the journal offset
    was saved, delivers it again from a new process; TensorBoard shows it once."""
    png = tmp_path / "image.png"
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(png)
    (tmp_path / "weights.bin").write_bytes(b"first")
    image = ImageRecord("samples", png, 16, 16, 4, T0 + 4, boxes=(Box(1, 1, 9, 9, "cat", 0.5, 0),))
    weights = ArtifactRecord("weights.bin", tmp_path / "weights.bin", ArtifactKind.MODEL, False, 5, 4, T0 + 4)
    run = make_run(tmp_path, {"lr": 0.1})
    first, state = start(run)
    first.loggerhub_log_params(params=run.config)
    first.loggerhub_log_metrics(points=points("loss", range(4)))
    first.loggerhub_log_text(text=TextRecord("notes", "one", 3, T0 + 3))
    first.loggerhub_log_image(image=image)
    first.loggerhub_checkpoint_saved(checkpoint=weights)
    first.loggerhub_log_params(params={"late": 1})
    first.loggerhub_log_metrics(points=points("loss", range(4, 6)) + points("acc", range(4, 6)))
    # The process dies here. The next one resumes and gets the last records again, then new ones.
    # A redelivered copy would take this file's place (replaced, as the journal replaces its copies).
    (tmp_path / "newer.bin").write_bytes(b"newer")
    os.replace(tmp_path / "newer.bin", tmp_path / "weights.bin")
    second = TensorBoardBackend()
    second.loggerhub_run_resume(run=run, state=dict(state))
    second.loggerhub_log_image(image=image)
    second.loggerhub_checkpoint_saved(checkpoint=weights)
    second.loggerhub_log_params(params={"late": 1})
    second.loggerhub_log_metrics(points=points("loss", range(4, 6)) + points("acc", range(4, 6)))
    second.loggerhub_log_metrics(points=points("loss", range(6, 8)))
    second.loggerhub_log_text(text=TextRecord("notes", "two", 7, T0 + 7))
    end(second, run, Status.FINISHED)
    # The end too may be delivered again.
    third = TensorBoardBackend()
    third.loggerhub_run_resume(run=run, state=dict(state))
    end(third, run, Status.FINISHED)

    tb = read_logdir(state["logdir"])
    assert [s.step for s in tb.scalars["loss"]] == list(range(8))
    assert [s.step for s in tb.scalars["acc"]] == [4, 5]
    assert [t.text for t in tb.texts["notes"]] == ["one", "two"]
    assert len(tb.images["samples"]) == 1
    assert len(tb.texts["_loggerhub_/annotations/samples"]) == 1
    assert len(tb.texts["_loggerhub_/checkpoints/weights.bin"]) == 1
    assert len(tb.texts["_loggerhub_/params"]) == 2
    assert [t.text for t in tb.texts["_loggerhub_/status"]] == ["FINISHED"]
    assert (Path(state["logdir"]) / "checkpoints" / "weights.bin").read_bytes() == b"first"


def test_a_new_record_after_a_resume_is_written_even_with_an_old_time(tmp_path: Path) -> None:
    """Only the records at the start of a delivery are compared with the logdir: once one is
    new, the rest are new too, whatever their times."""
    run = make_run(tmp_path)
    first, state = start(run)
    first.loggerhub_log_metrics(points=points("loss", range(4)))
    second = TensorBoardBackend()
    second.loggerhub_run_resume(run=run, state=dict(state))
    second.loggerhub_log_metrics(points=points("acc", range(2)))  # new: a tag the logdir lacks
    second.loggerhub_log_metrics(points=points("loss", range(2), offset=10.0))  # a rewind, logged anew
    end(second, run, Status.FINISHED)
    values = [(s.step, s.value) for s in read_logdir(state["logdir"]).scalars["loss"]]
    assert values == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (0, 10.0), (1, 11.0)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batch_retried_after_a_full_disk_is_written_once(small_disk: Path) -> None:
    """A write that fails part-way leaves part of the batch in the event file; the retry, in a
    fresh event file, writes only the rest. (tensorboard's writer thread reports the disk error
    on its thread too: that warning is expected.)"""
    run = make_run(small_disk.parent, logdir=str(small_disk / "tb"))
    backend, state = start(run)
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (56 * 1024))
    batches = [points("loss", range(start, start + 50)) for start in range(0, 1000, 50)]
    delivered = 0
    with pytest.raises(OSError, match="No space left"):
        for batch in batches:
            backend.loggerhub_log_metrics(points=batch)
            delivered += 1
    failed = batches[delivered]
    written = {s.step for s in read_logdir(state["logdir"]).scalars["loss"]} & {p.step for p in failed}
    assert written, "the failed write left none of its batch on disk: nothing to write twice"
    filler.unlink()
    backend.loggerhub_log_metrics(points=failed)  # loggerhub's retry of the same batch
    end(backend, run, Status.FINISHED)
    steps = [s.step for s in read_logdir(state["logdir"]).scalars["loss"]]
    assert steps == list(range(failed[-1].step + 1))
