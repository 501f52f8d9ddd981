"""The plugin driven directly (no delivery process), against the real client in offline mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loggerhub_neptune import NeptuneBackend, offline
from loggerhub_neptune._session import NeptuneSession, Settings, custom_run_id

from loggerhub_hookspecs import (
    ArtifactKind,
    ArtifactRecord,
    Box,
    ImageRecord,
    MetricPoint,
    Rejected,
    RunInfo,
    Status,
    TextRecord,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The plugin sets NEPTUNE_DATA_DIRECTORY for its process; monkeypatch restores it afterwards.
    for name in ("NEPTUNE_DATA_DIRECTORY", "NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_MODE"):
        monkeypatch.delenv(name, raising=False)


END = 1.7e9 + 3600.0


def info(tmp_path: Path, run_id: str = "run-1", **options: Any) -> RunInfo:
    return RunInfo(run_id=run_id, project="p", name="direct", dir=tmp_path, config={}, started_at=0.0,
                   options={"mode": "offline", "data_dir": str(tmp_path / "neptune"), **options})


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[NeptuneBackend]:
    plugin = NeptuneBackend()
    plugin.loggerhub_run_start(run=info(tmp_path), state={})
    yield plugin
    plugin.loggerhub_run_end(run=info(tmp_path), status=Status.FINISHED, ended_at=END, error=None)


def fields(tmp_path: Path) -> dict[str, dict[str, Any]]:
    [container] = offline.find_containers(tmp_path / "neptune")
    return offline.read_container(container)["fields"]


def point(key: str, value: float, step: int) -> MetricPoint:
    return MetricPoint(key, value, step, 1.7e9 + step)


def test_a_field_cannot_also_be_a_namespace(backend: NeptuneBackend, tmp_path: Path) -> None:
    backend.loggerhub_log_metrics(points=[point("a", 1.0, 0)])
    with pytest.raises(Rejected, match=r"metric 'a/b'.*'a' is a FloatSeries.*other values were stored"):
        backend.loggerhub_log_metrics(points=[point("a/b", 2.0, 0), point("c", 3.0, 0)])
    with pytest.raises(Rejected, match=r"metric 'd'.*'d' is already a namespace"):
        backend.loggerhub_log_metrics(points=[point("d/e", 4.0, 1), point("d", 5.0, 1)])
    stored = fields(tmp_path)
    assert "a/b" not in stored and "d" not in stored
    assert [v["value"] for v in stored["c"]["values"]] == [3.0]
    assert [v["value"] for v in stored["d/e"]["values"]] == [4.0]


def test_one_key_cannot_hold_two_kinds_of_record(backend: NeptuneBackend, tmp_path: Path) -> None:
    backend.loggerhub_log_metrics(points=[point("x", 1.0, 0)])
    with pytest.raises(Rejected, match=r"'x' already holds a FloatSeries, not a StringSeries"):
        backend.loggerhub_log_text(text=TextRecord("x", "words", 1, 1.7e9))
    assert fields(tmp_path)["x"]["type"] == "float_series"


def test_reserved_roots_are_escaped(backend: NeptuneBackend, tmp_path: Path) -> None:
    backend.loggerhub_log_metrics(points=[point("sys/failed", 1.0, 0), point("loggerhub/status", 2.0, 0)])
    stored = fields(tmp_path)
    assert stored["sys/failed"] == {"type": "bool", "value": False}
    assert stored["loggerhub/status"]["value"] == "RUNNING"
    assert stored["_sys/failed"]["values"][0]["value"] == 1.0
    assert stored["_loggerhub/status"]["values"][0]["value"] == 2.0


def test_a_param_that_changes_type_is_replaced(backend: NeptuneBackend, tmp_path: Path) -> None:
    backend.loggerhub_log_params(params={"lr": 1, "name": "a", "seed": 2**40, "eps": float("nan")})
    backend.loggerhub_log_params(params={"lr": 0.5, "name": 3})
    stored = fields(tmp_path)
    # Without the replacement the client would store int(0.5) == 0 and refuse int("a").
    assert stored["parameters/lr"] == {"type": "float", "value": 0.5}
    assert stored["parameters/name"] == {"type": "int", "value": 3}
    assert stored["parameters/seed"] == {"type": "string", "value": str(2**40)}
    assert stored["parameters/eps"] == {"type": "string", "value": "nan"}


def test_long_text_is_kept_whole_in_a_file(backend: NeptuneBackend, tmp_path: Path) -> None:
    text = "".join(chr(0x41 + i % 26) for i in range(2500))
    backend.loggerhub_log_text(text=TextRecord("gen/sample", text, 7, 1.7e9))
    stored = fields(tmp_path)
    assert stored["gen/sample"]["values"][0]["value"] == text[:1000]
    full = stored["loggerhub/long_texts/gen/sample/7"]
    assert Path(full["path"]).read_text(encoding="utf-8") == text


def test_a_retried_hook_does_not_append_twice(backend: NeptuneBackend, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    session = backend.session
    assert isinstance(session, NeptuneSession)
    real_wait = session.neptune_run.wait
    calls = {"n": 0}

    def flaky_wait(**kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        real_wait(**kwargs)

    monkeypatch.setattr(session.neptune_run, "wait", flaky_wait)
    points = [point("loss", 1.0, 0), point("loss", 0.5, 1), point("nan", float("nan"), 0)]
    with pytest.raises(OSError):
        backend.loggerhub_log_metrics(points=points)
    backend.loggerhub_log_metrics(points=list(points))  # the worker's retry, with an equal batch
    backend.loggerhub_log_metrics(points=[point("loss", 0.25, 2)])
    stored = fields(tmp_path)
    assert [v["step"] for v in stored["loss"]["values"]] == [0, 1, 2]
    assert [v["value"] for v in stored["loggerhub/nonfinite/nan"]["values"]] == ["nan"]


def test_a_start_retried_with_its_state_continues_the_run(tmp_path: Path) -> None:
    # The kit opens a start retried after a failure with the state the failed attempt filled, as
    # a resume; an offline run cannot be reopened, so the retry writes part 2 of the same run.
    plugin = NeptuneBackend()
    state: dict[str, Any] = {}
    plugin.loggerhub_run_start(run=info(tmp_path), state=state)
    first = dict(state)
    plugin.loggerhub_run_start(run=info(tmp_path), state=state)
    plugin.loggerhub_log_metrics(points=[point("x", 1.0, 0)])
    plugin.loggerhub_run_end(run=info(tmp_path), status=Status.FINISHED, ended_at=END, error=None)
    assert state == first
    parts = offline.read_run(tmp_path / "neptune", "run-1")
    assert [p["fields"]["loggerhub/part"]["value"] for p in parts] == [1, 2]
    assert "x" in parts[1]["fields"] and "x" not in parts[0]["fields"]


def test_artifacts_and_checkpoints(backend: NeptuneBackend, tmp_path: Path) -> None:
    files = tmp_path / "files [1]"  # glob characters in the path must not matter
    (files / "data" / "sub").mkdir(parents=True)
    (files / "data" / "sub" / "x.txt").write_text("x")
    (files / "model.onnx").write_bytes(b"onnx")
    (files / "last.pt").write_bytes(b"pt")
    backend.loggerhub_log_artifact(artifact=ArtifactRecord("data", files / "data", ArtifactKind.DATASET,
                                                           True, 1, 0, 1.7e9))
    backend.loggerhub_log_artifact(artifact=ArtifactRecord("export/model.onnx", files / "model.onnx",
                                                           ArtifactKind.MODEL, False, 4, 0, 1.7e9))
    backend.loggerhub_checkpoint_saved(checkpoint=ArtifactRecord("last.pt", files / "last.pt",
                                                                 ArtifactKind.MODEL, False, 2, 5, 1.7e9))
    stored = fields(tmp_path)
    expected = {"sub/x.txt": str(files / "data" / "sub" / "x.txt")}
    assert offline.file_set_files(stored["artifacts/data"]) == expected
    assert stored["models/export/model.onnx"]["path"] == str(files / "model.onnx")
    assert stored["models/last.pt"]["path"] == str(files / "last.pt")


def test_debug_mode_writes_nothing(tmp_path: Path) -> None:
    plugin = NeptuneBackend()
    state: dict[str, Any] = {}
    run = info(tmp_path, mode="debug")
    plugin.loggerhub_run_start(run=run, state=state)
    plugin.loggerhub_log_metrics(points=[point("x", 1.0, 0)])
    plugin.loggerhub_run_end(run=run, status=Status.FINISHED, ended_at=END, error=None)
    assert state == {"mode": "debug", "custom_run_id": "run-1",
                     "data_directory": str(tmp_path / "neptune" / ".neptune")}
    assert not offline.find_containers(tmp_path / "neptune")
    assert not any(p.is_file() for p in (tmp_path / "neptune").rglob("*"))


def test_custom_run_id_fits_neptunes_limit() -> None:
    assert custom_run_id("short-20260101-000000-abcdef") == "short-20260101-000000-abcdef"
    long_id = "a-very-long-run-name-for-a-sweep-20260101-000000-abcdef"
    assert len(custom_run_id(long_id)) == 36
    assert custom_run_id(long_id) == custom_run_id(long_id) != custom_run_id(long_id + "x")


def test_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings.resolve({}, {}).mode == "offline"
    assert Settings.resolve({}, {}).data_directory == Path(".neptune").absolute()
    assert Settings.resolve({"data_dir": str(tmp_path)}, {}).data_directory == tmp_path / ".neptune"
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-token")
    with pytest.raises(ValueError, match="needs a project") as error:
        Settings.resolve({}, {})
    assert "not-a-token" not in str(error.value)
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/proj")
    assert Settings.resolve({}, {}).mode == "async"
    assert Settings.resolve({}, {"mode": "offline"}).mode == "offline"  # a resumed run keeps its mode
    with pytest.raises(Rejected, match="neptune option mode is 'online'"):
        Settings.resolve({"mode": "online"}, {})
    with pytest.raises(Rejected, match=r"unknown neptune option\(s\) \['dir'\]"):
        Settings.resolve({"dir": "x"}, {})


def test_state_never_holds_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "tok-" + os.urandom(4).hex())
    plugin = NeptuneBackend()
    state: dict[str, Any] = {}
    plugin.loggerhub_run_start(run=info(tmp_path), state=state)
    plugin.loggerhub_run_end(run=info(tmp_path), status=Status.FINISHED, ended_at=END, error=None)
    assert os.environ["NEPTUNE_API_TOKEN"] not in repr(state)
    assert set(state) == {"mode", "custom_run_id", "data_directory"}


def test_bad_options_reject_every_record_with_the_reason(tmp_path: Path) -> None:
    import json

    import loggerhub

    with loggerhub.init(project="p", name="bad", dir=tmp_path / "runs", backends=["neptune"],
                        options={"neptune": {"mode": "online", "data_dir": str(tmp_path / "n")}},
                        config={"lr": 0.1}, drain_timeout=60,
                        system_metrics=False, console=False, capture_context=False) as run:
        run.log_metrics({"x": 1.0}, step=0)
    report = run.summary["trackers"]["neptune"]
    # The start (with the config), the metric and the end: each rejected with the reason (the
    # telemetry producers are off, so that these are all the records).
    assert report["undelivered"] == 0 and report["rejected"] == 3, report
    lines = (run.paths.consumers / "neptune.rejected.jsonl").read_text().splitlines()
    assert all("neptune option mode is 'online'" in json.loads(line)["reason"] for line in lines)
    assert not (tmp_path / "n").exists()


def test_a_redelivered_record_leaves_no_trace(tmp_path: Path) -> None:
    # The delivery that stored these records died before loggerhub committed them; the next one
    # (a new process: a resumed session, part 2) gets the last of them again.
    from PIL import Image

    png = tmp_path / "sample.png"
    Image.new("RGB", (16, 16)).save(png)
    image = ImageRecord("val/sample", png, 16, 16, 3, 1.7e9 + 3, boxes=(Box(1, 1, 8, 8, "cat", 0.5, 0),
                                                                        Box(2, 2, 9, 9, "dog", None, 1)))
    text = TextRecord("notes", "n" * 1500, 3, 1.7e9 + 3)
    metrics = [point("loss", 1.0, 2), point("loss", 0.5, 3), point("odd", float("nan"), 3)]
    first = NeptuneBackend()
    state: dict[str, Any] = {}
    first.loggerhub_run_start(run=info(tmp_path), state=state)
    first.loggerhub_log_image(image=image)
    first.loggerhub_log_text(text=text)
    first.loggerhub_log_metrics(points=metrics[:2])  # acknowledged, never committed
    first.session.close()  # what a dying process leaves: the files, no end

    again = NeptuneBackend()
    again.loggerhub_run_resume(run=info(tmp_path), state=state)
    again.loggerhub_log_metrics(points=metrics + [point("loss", 0.25, 4)])  # the batch grew since
    again.loggerhub_run_end(run=info(tmp_path), status=Status.FINISHED, ended_at=END, error=None)
    merged = offline.merge_parts(offline.read_run(tmp_path / "neptune", "run-1"))
    assert [v["step"] for v in merged["loss"]["values"]] == [2, 3, 4]
    assert [v["value"] for v in merged["loggerhub/nonfinite/odd"]["values"]] == ["nan"]

    # Each kind of series, redelivered as the first record of a resumed session, after a
    # session that died before storing anything (an empty part) came in between.
    for record in (image, text):
        dying = NeptuneBackend()
        dying.loggerhub_run_resume(run=info(tmp_path), state=state)
        dying.session.close()
        resumed = NeptuneBackend()
        resumed.loggerhub_run_resume(run=info(tmp_path), state=state)
        if isinstance(record, ImageRecord):
            resumed.loggerhub_log_image(image=record)
        else:
            resumed.loggerhub_log_text(text=record)
        resumed.session.close()
    merged = offline.merge_parts(offline.read_run(tmp_path / "neptune", "run-1"))
    assert len(merged["val/sample"]["values"]) == 1
    assert len(merged["loggerhub/boxes/val/sample"]["values"]) == 2
    assert len(merged["notes"]["values"]) == 1
