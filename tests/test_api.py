"""The Python API against the real journal: statuses, steps, params, images, round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import loggerhub
from loggerhub import codec
from loggerhub import journal as j
from loggerhub.run import LoggerhubWarning


def entries(run) -> list[j.Entry]:
    return list(j.JournalReader(run.dir).entries())


def of_type(run, kind: str) -> list[dict]:
    return [e.data for e in entries(run) if e.type == kind]


# --------------------------------------------------------------------------- statuses


def test_with_block_finishes(runs_dir: Path) -> None:
    with loggerhub.init(project="p", name="ok", dir=runs_dir) as run:
        run.log_metrics({"x": 1}, step=0)
    assert of_type(run, codec.RUN_END)[0]["status"] == "FINISHED"
    assert json.loads((run.dir / "run.json").read_text())["status"] == "FINISHED"


def test_exception_fails_the_run_and_propagates(runs_dir: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        with loggerhub.init(project="p", dir=runs_dir) as run:
            run.log_metrics({"x": 1}, step=0)
            1 / 0  # noqa: B018
    assert of_type(run, codec.RUN_END)[0]["status"] == "FAILED"


def test_keyboard_interrupt_kills_the_run(runs_dir: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with loggerhub.init(project="p", dir=runs_dir) as run:
            raise KeyboardInterrupt
    assert of_type(run, codec.RUN_END)[0]["status"] == "KILLED"


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_explicit_finish(runs_dir: Path, status: str) -> None:
    run = loggerhub.init(project="p", dir=runs_dir)
    run.finish(status=status)
    run.finish(status="FINISHED")  # a second finish changes nothing
    assert [d["status"] for d in of_type(run, codec.RUN_END)] == [status]


def test_resume_continues_the_same_journal(runs_dir: Path) -> None:
    with loggerhub.init(project="p", name="long", dir=runs_dir) as first:
        first.log_metrics({"loss": 1.0}, step=5)
    with loggerhub.init(project="p", dir=runs_dir, resume=first.id) as second:
        second.log_metrics({"loss": 0.5})  # auto step continues after the highest step
    assert second.dir == first.dir
    types = [e.type for e in entries(second)]
    assert types == ["run_start", "metrics", "run_end", "run_resume", "metrics", "run_end"]
    assert [d["step"] for d in of_type(second, codec.METRICS)] == [5, 6]
    assert [e.seq for e in entries(second)] == list(range(6))


# --------------------------------------------------------------------------- journal round trip


def test_every_record_reads_back_identical(runs_dir: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = tmp_path / "best.pt"
    weights.write_bytes(b"\x00weights\xff")
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.txt").write_text("x")
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])

    with loggerhub.init(project="p", dir=runs_dir, config={"a": {"b": 1}}) as run:
        run.log_params({"opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "name": "x", "none": None})
        run.log_metrics({"loss": 0.25, "nan": math.nan, "inf": -math.inf, "i": np.int64(3)}, step=7, epoch=1)
        run.log_image("img", image, step=7, caption="c", boxes=[
            {"box": [5, 3, 1, 0], "label": "cat", "score": 0.5, "class_id": 2}])
        run.log_figure("fig", figure, step=8)
        run.log_artifact(weights, kind="model")
        run.log_artifact(folder, name="datasets/d", kind="dataset")
        run.log_checkpoint(weights, name="ckpt/last.pt")
        run.log_text("notes", "héllo\nworld")
        run.log_table("t", ["a", "b"], [[1, "x"], [2, None]])
        run.log_confusion_matrix("cm", np.array([[1, 2], [3, 4]]), ["cat", "dog"])
        run.log_event("epoch_end", epoch=1)
    plt.close(figure)

    got = {e.type: e for e in entries(run)}
    assert got["run_start"].data["config"] == {"a/b": 1}
    assert got["params"].data["params"] == {"opt/lr": 0.1, "opt/betas": [0.9, 0.99], "name": "x", "none": None}

    points = codec.decode(got["metrics"], run.dir)
    by_key = {p.key: p for p in points}
    assert by_key["loss"].value == 0.25 and by_key["loss"].step == 7 and by_key["loss"].epoch == 1
    assert math.isnan(by_key["nan"].value) and by_key["inf"].value == -math.inf
    assert by_key["i"].value == 3.0

    img = codec.decode(got["image"], run.dir)
    assert (img.width, img.height, img.step, img.caption) == (6, 4, 7, "c")
    assert np.array_equal(np.array(Image.open(img.path)), image)
    assert img.boxes == (loggerhub.Box(1.0, 0.0, 5.0, 3.0, "cat", 0.5, 2),)  # corners ordered

    fig = codec.decode(got["figure"], run.dir)
    assert fig.png_bytes().startswith(b"\x89PNG") and fig.step == 8
    assert fig.load_figure() is not None

    arts = [codec.decode(e, run.dir) for e in entries(run) if e.type == codec.ARTIFACT]
    assert arts[0].name == "best.pt" and arts[0].path.read_bytes() == b"\x00weights\xff"
    assert arts[0].kind is loggerhub.ArtifactKind.MODEL and not arts[0].is_dir
    assert arts[1].name == "datasets/d" and arts[1].is_dir and (arts[1].path / "sub" / "x.txt").read_text() == "x"
    checkpoint = codec.decode(got["checkpoint"], run.dir)
    assert checkpoint.name == "ckpt/last.pt" and checkpoint.kind is loggerhub.ArtifactKind.MODEL

    assert codec.decode(got["text"], run.dir).text == "héllo\nworld"
    tables = [codec.decode(e, run.dir) for e in entries(run) if e.type == codec.TABLE]
    assert tables[0].rows == ((1, "x"), (2, None)) and tables[0].columns == ("a", "b")
    assert tables[1].role.value == "confusion_matrix" and tables[1].rows == ((1, 2), (3, 4))
    event = codec.decode(got["event"], run.dir)
    assert event.phase is loggerhub.Phase.EPOCH_END and event.epoch == 1 and event.step == 8


def test_artifacts_are_copied_when_logged(runs_dir: Path, tmp_path: Path) -> None:
    """The trainer overwrites last.pt in place every epoch; each logged version must survive,
    even under the same name, until every tracker has it."""
    weights = tmp_path / "last.pt"
    with loggerhub.init(project="p", dir=runs_dir) as run:
        weights.write_bytes(b"epoch-1")
        run.log_checkpoint(weights)
        run.flush()
        weights.write_bytes(b"epoch-2")
        run.log_checkpoint(weights)
    copies = [codec.decode(e, run.dir) for e in entries(run) if e.type == codec.CHECKPOINT]
    assert [c.name for c in copies] == ["last.pt", "last.pt"]
    assert [c.path.read_bytes() for c in copies] == [b"epoch-1", b"epoch-2"]


# --------------------------------------------------------------------------- steps


def test_step_rules(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_metrics({"a": 1})  # auto: 0
        run.log_metrics({"a": 1})  # auto: 1
        run.log_metrics({"a": 1}, step=10)
        run.log_metrics({"a": 1})  # auto continues after the highest step: 11
        run.log_metrics({"a": 1}, step=np.int32(3))  # explicit may go back; numpy ints accepted
        run.log_metrics({"a": 1}, step=4.0)  # integral floats accepted
        run.log_text("t", "text takes the current step without advancing it")
        run.log_metrics({"a": 1})
    assert [d["step"] for d in of_type(run, codec.METRICS)] == [0, 1, 10, 11, 3, 4, 12]
    assert of_type(run, codec.TEXT)[0]["step"] == 11


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, 2**63, None.__class__])
def test_bad_steps_are_rejected_not_raised(runs_dir: Path, bad) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        with pytest.warns(LoggerhubWarning, match="step"):
            run.log_metrics({"a": 1.0}, step=bad)
        run.log_metrics({"a": 2.0}, step=0)
    assert [d["values"] for d in of_type(run, codec.METRICS)] == [{"a": 2.0}]
    assert of_type(run, codec.REJECTED)[0]["api"] == "log_metrics"


def test_strict_mode_raises(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir, strict=True) as run:
        with pytest.raises(ValueError, match="step must be"):
            run.log_metrics({"a": 1.0}, step=-3)
        with pytest.raises(ValueError, match="metric values must be numbers"):
            run.log_metrics({"a": "high"}, step=0)


# --------------------------------------------------------------------------- params


def test_params_are_flattened_and_secrets_redacted(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    with loggerhub.init(project="p", dir=runs_dir, config={"api_key": "k-123"}) as run:
        run.log_params({
            "db": {"password": "hunter22", "host": "h", "nested": {"deep": {"x": 1}}},
            "url": "https://user:tok-0123456789@example.invalid/x",
            "path": Path("/tmp/x"),
            "np": np.float32(0.5),
            "obj": object,
            "empty": {},
        })
    raw = b"".join(p.read_bytes() for p in (run.dir / "journal").iterdir())
    assert b"hunter22" not in raw and b"tok-0123456789" not in raw and b"k-123" not in raw
    params = of_type(run, codec.PARAMS)[0]["params"]
    assert params["db/password"] == "***REDACTED***"
    assert params["db/host"] == "h" and params["db/nested/deep/x"] == 1
    assert params["url"] == "https://user:***REDACTED***@example.invalid/x"
    assert params["path"] == "/tmp/x" and params["np"] == 0.5
    # ParamValue has no mappings: an empty group keeps its key, written "{}".
    assert params["obj"] == "<class 'object'>" and params["empty"] == "{}"
    assert of_type(run, codec.RUN_START)[0]["config"] == {"api_key": "***REDACTED***"}


# --------------------------------------------------------------------------- images


def _logged_image(run) -> np.ndarray:
    record = codec.decode([e for e in entries(run) if e.type == codec.IMAGE][-1], run.dir)
    return np.array(Image.open(record.path))


@pytest.mark.parametrize(
    ("image", "expected_shape"),
    [
        (np.zeros((5, 7), np.uint8), (5, 7)),
        (np.zeros((5, 7, 3), np.uint8), (5, 7, 3)),
        (np.zeros((5, 7, 4), np.uint8), (5, 7, 4)),
        (np.zeros((3, 5, 7), np.uint8), (5, 7, 3)),  # CHW
        (np.zeros((1, 5, 7), np.float32), (5, 7)),  # CHW, one channel
        (np.zeros((5, 7, 1), np.float64), (5, 7)),
        (np.ones((5, 7), bool), (5, 7)),
    ],
)
def test_accepted_arrays(runs_dir: Path, image: np.ndarray, expected_shape: tuple) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_image("img", image)
    assert _logged_image(run).shape == expected_shape


def test_float_images_are_scaled(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_image("img", np.array([[0.0, 0.5, 1.0]]))
    assert _logged_image(run).tolist() == [[0, 128, 255]]


def test_pil_images_and_files(runs_dir: Path, tmp_path: Path) -> None:
    pil = Image.new("RGB", (9, 4), (10, 20, 30))
    jpg = tmp_path / "x.jpg"
    Image.new("RGB", (8, 8), (200, 0, 0)).save(jpg)
    palette = Image.new("P", (3, 3))
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_image("pil", pil)
        run.log_image("file", jpg)
        run.log_image("path-str", str(jpg))
        run.log_image("palette", palette)
    images = [codec.decode(e, run.dir) for e in entries(run) if e.type == codec.IMAGE]
    assert [(i.key, i.width, i.height) for i in images] == [
        ("pil", 9, 4), ("file", 8, 8), ("path-str", 8, 8), ("palette", 3, 3)]
    assert np.array(Image.open(images[0].path))[0, 0].tolist() == [10, 20, 30]


def test_torch_tensors(runs_dir: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch is installed by scripts/setup.sh dev")
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_image("t", torch.zeros(3, 4, 6))
        run.log_metrics({"loss": torch.tensor(0.5)}, step=0)
    assert _logged_image(run).shape == (4, 6, 3)
    assert of_type(run, codec.METRICS)[0]["values"] == {"loss": 0.5}


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ([[1, 2], [3, 4]], "cannot log list as an image; accepted: numpy arrays"),
        (np.zeros((5, 7, 2), np.uint8), "is not HW, HWC or CHW"),
        (np.zeros((2, 3, 4, 5), np.uint8), "is not HW, HWC or CHW"),
        (np.zeros((5, 7), np.int64), "dtype int64 is not accepted"),
        (np.full((5, 7), 2.0), "float images must lie in 0-1"),
        (np.full((5, 7), np.nan), "NaN"),
        (np.zeros((0, 7), np.uint8), "image sides must be"),
        (np.zeros((20000, 1), np.uint8), "image sides must be"),
        ("/no/such/file.png", "image file not found"),
        (object(), "accepted: numpy arrays HW, HWC or CHW"),
    ],
)
def test_rejected_images_say_what_is_accepted(runs_dir: Path, image, message: str) -> None:
    with loggerhub.init(project="p", dir=runs_dir, strict=True) as run:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            run.log_image("img", image)


def test_caller_may_reuse_its_buffer(runs_dir: Path) -> None:
    buffer = np.zeros((2, 2), np.uint8)
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_image("img", buffer)
        buffer[:] = 255  # before the writer thread encodes it
    assert _logged_image(run).tolist() == [[0, 0], [0, 0]]


# --------------------------------------------------------------------------- artifacts


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b", "C:/x", "..", ""])
def test_artifact_names_cannot_escape(runs_dir: Path, tmp_path: Path, name: str) -> None:
    source = tmp_path / "f.txt"
    source.write_text("x")
    with loggerhub.init(project="p", dir=runs_dir, strict=True) as run:
        with pytest.raises(ValueError, match="artifact names"):
            run.log_artifact(source, name=name)


def test_symlinks_cannot_escape(runs_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_text("w")
    (folder / "leak").symlink_to(outside / "secret.txt")
    source = tmp_path / "f.txt"
    source.write_text("x")
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_artifact(folder, kind="model")
        run.flush()
        # A symlink planted inside artifacts/ must not redirect a later copy outside the run.
        next_seq = run._writer.next_seq
        (run.dir / "artifacts" / f"{next_seq:012d}").symlink_to(outside, target_is_directory=True)
        run.log_artifact(source, name="owned.txt")
    copied = codec.decode([e for e in entries(run) if e.type == codec.ARTIFACT][0], run.dir).path
    assert (copied / "weights.bin").read_text() == "w"
    assert not (copied / "leak").exists()
    assert of_type(run, codec.ARTIFACT)[0]["skipped_links"] == ["leak"]
    assert not (outside / "owned.txt").exists()
    assert "escapes" in of_type(run, codec.REJECTED)[0]["reason"]


def test_missing_artifact_is_rejected(runs_dir: Path, tmp_path: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        with pytest.warns(LoggerhubWarning, match="no such file"):
            run.log_artifact(tmp_path / "missing.pt")
    assert of_type(run, codec.ARTIFACT) == []


def test_rank_nonzero_logs_nothing(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_metrics({"a": 1.0}, step=0)
    assert not runs_dir.exists()


def test_truncated_image_file_is_rejected_not_raised(runs_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "half.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(broken)
    broken.write_bytes(broken.read_bytes()[:80])
    with loggerhub.init(project="p", dir=runs_dir) as run:
        with pytest.warns(LoggerhubWarning, match="cannot read image"):
            run.log_image("img", broken)
    assert of_type(run, codec.IMAGE) == [] and "cannot read image" in of_type(run, codec.REJECTED)[0]["reason"]
