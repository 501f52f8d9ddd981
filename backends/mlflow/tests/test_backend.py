"""Behaviour the README promises, checked against a real MLflow server or local store."""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loggerhub_mlflow import MlflowBackend
from loggerhub_mlflow._backend import MlflowSession
from loggerhub_mlflow.testing import MlflowServer, read_back
from mlflow.tracking import MlflowClient
from PIL import Image

import loggerhub
from loggerhub.delivery import ConsumerStatus
from loggerhub_hookspecs import Box, ImageRecord, MetricPoint, Rejected, RunError, RunInfo, Status


def run_info(tmp_path: Path, options: dict[str, Any], **fields: Any) -> RunInfo:
    return RunInfo(run_id=fields.pop("run_id", f"unit-{secrets.token_hex(4)}"), project="unit",
                   name="unit", dir=tmp_path, config={}, started_at=time.time(),
                   options=options, **fields)


def started(tmp_path: Path, server: MlflowServer) -> tuple[MlflowBackend, RunInfo, dict[str, Any]]:
    plugin, info = MlflowBackend(), run_info(tmp_path, {"tracking_uri": server.uri})
    state: dict[str, Any] = {}
    plugin.loggerhub_run_start(run=info, state=state)
    return plugin, info, state


def mlflow_state(run: loggerhub.Run) -> dict[str, Any]:
    return ConsumerStatus.load(run.paths.consumer_file("mlflow")).state or {}


def run_metrics(run: Any) -> dict[str, float]:
    """The run's latest metric values, without the system metrics the sampler adds to every run."""
    return {key: value for key, value in run.data.metrics.items() if not key.startswith("system/")}


def download_json(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> Any:
    return json.loads(Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text("utf-8"))


# --------------------------------------------------------------------------- retries


def test_a_retried_metric_batch_is_stored_once(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    plugin, _, state = started(tmp_path, mlflow_server)
    now = time.time()
    points = [MetricPoint("loss", 1.0 / (s + 1), s, now + s / 1000) for s in range(2500)]
    points += [MetricPoint("odd", math.nan, 0, now), MetricPoint("odd", math.inf, 1, now)]
    plugin.loggerhub_log_metrics(points=points[:1000])  # as if the call failed after one chunk
    plugin.loggerhub_log_metrics(points=points)
    plugin.loggerhub_log_metrics(points=points)
    client = MlflowClient(mlflow_server.uri)
    history = client.get_metric_history(state["run_id"], "loss")
    assert sorted(m.step for m in history) == list(range(2500))
    odd = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], "odd"))
    assert len(odd) == 2 and math.isnan(odd[0][1]) and odd[1][1] > 1e308


def test_a_retried_run_start_finds_the_run_it_created(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    info = run_info(tmp_path, {"tracking_uri": mlflow_server.uri})
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    MlflowBackend().loggerhub_run_start(run=info, state=first)
    MlflowBackend().loggerhub_run_start(run=info, state=second)
    assert first == second
    client = MlflowClient(mlflow_server.uri)
    found = client.search_runs([first["experiment_id"]], f"tags.`loggerhub.run_id` = '{info.run_id}'")
    assert [r.info.run_id for r in found] == [first["run_id"]]


def test_an_image_redelivered_after_a_failure_is_stored_once(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    plugin, info, state = started(tmp_path, mlflow_server)
    Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8)).save(tmp_path / "img.png")
    record = ImageRecord("val/pred", tmp_path / "img.png", 30, 20, step=4, timestamp=time.time(),
                         boxes=(Box(1, 1, 10, 10, "cat", 0.5, 0),), caption="first")
    plugin.loggerhub_log_image(image=record)
    stored = sorted(mlflow_server.artifacts_dir.rglob("images/val~pred+step+4+*"))
    assert len(stored) == 2  # the PNG and MLflow's compressed preview
    stored[0 if stored[0].suffix == ".webp" else 1].unlink()  # the first attempt died half-way

    session = plugin.session
    assert isinstance(session, MlflowSession)
    session.in_doubt = True  # what a failed call sets
    plugin.loggerhub_log_image(image=record)
    replay = MlflowBackend()  # a later delivery process, replaying the record once more
    replay.loggerhub_run_resume(run=info, state=dict(state))
    replay.loggerhub_log_image(image=record)
    view = read_back(mlflow_server.uri, state["run_id"])
    assert view.images == {"val/pred": 1}
    assert view.boxes == {"val/pred": 1}
    assert len([p for p in view.artifacts if p.endswith("+compressed.webp")]) == 1


# --------------------------------------------------------------------------- params


def test_changed_and_long_params_are_kept_in_full(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    plugin, info, state = started(tmp_path, mlflow_server)
    plugin.loggerhub_log_params(params={"lr": 0.1, "long": "x" * 7000, "tags": ["a", "b"]})
    plugin.loggerhub_log_params(params={"lr": 0.2})  # MLflow cannot change a param: must not raise
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(state["run_id"])
    assert run.data.params["lr"] == "0.1"
    assert run.data.params["long"] == "x" * 6000
    assert run.data.params["tags"] == "['a', 'b']"
    assert run.data.tags["loggerhub.params_differ"] == "2"
    doc = download_json(client, state["run_id"], "loggerhub/params.json", tmp_path / "1")
    assert doc["params"] == {"lr": 0.2, "long": "x" * 7000, "tags": ["a", "b"]}
    assert doc["differs"] == {"lr": {"key": "lr", "reason": "changed after MLflow stored it"},
                              "long": {"key": "long", "reason": "cut to 6000 characters"}}

    resumed = MlflowBackend()  # a new delivery process reads the file back before updating it
    resumed.loggerhub_run_resume(run=info, state=dict(state))
    resumed.loggerhub_log_params(params={"lr": 0.1, "epochs": 3})
    doc = download_json(client, state["run_id"], "loggerhub/params.json", tmp_path / "2")
    assert doc["params"] == {"lr": 0.1, "long": "x" * 7000, "tags": ["a", "b"], "epochs": 3}
    assert list(doc["differs"]) == ["long"]
    assert client.get_run(state["run_id"]).data.tags["loggerhub.params_differ"] == "1"


def test_params_mlflow_cannot_name_are_refused_the_others_stored(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    plugin, _, state = started(tmp_path, mlflow_server)
    with pytest.raises(Rejected, match="250"):
        plugin.loggerhub_log_params(params={"k" * 300: 1, "fine": 2})
    assert MlflowClient(mlflow_server.uri).get_run(state["run_id"]).data.params == {"fine": "2"}


# --------------------------------------------------------------------------- through loggerhub


def test_resume_continues_the_same_mlflow_run(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    options = {"mlflow": {"tracking_uri": mlflow_server.uri, "experiment": "resume"}}
    run = loggerhub.init(project="p", name="resumed", dir=tmp_path, backends=["mlflow"],
                         options=options, config={"lr": 0.1}, drain_timeout=120)
    for step in range(5):
        run.log_metrics({"loss": float(step)}, step=step)
    run.finish()
    first = mlflow_state(run)
    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(first["run_id"]).info.status == "FINISHED"

    again = loggerhub.init(project="p", resume=run.dir, backends=["mlflow"], options=options,
                           drain_timeout=120)
    for step in range(5, 10):
        again.log_metrics({"loss": float(step)}, step=step)
    again.log_params({"lr": 0.01})
    again.finish("FAILED")
    assert again.summary["trackers"]["mlflow"]["undelivered"] == 0
    assert mlflow_state(again)["run_id"] == first["run_id"]
    runs = client.search_runs([first["experiment_id"]])
    assert len(runs) == 1
    view = read_back(mlflow_server.uri, first["run_id"])
    assert sorted(view.metrics["loss"]) == [(s, float(s)) for s in range(10)]
    assert view.status == "FAILED"
    assert view.params == {"lr": "0.1"}
    assert runs[0].data.tags["loggerhub.params_differ"] == "1"


@pytest.mark.parametrize("where", ["default", "directory", "sqlite"])
def test_local_stores_keep_runs_and_artifacts_together(
    tmp_path: Path, where: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A working directory of the test's own (the delivery process inherits it), so that MLflow's
    # defaults, ./mlruns and ./mlflow.db, would show there and nothing else puts them there.
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    options = {"directory": {"tracking_uri": str(store)},
               "sqlite": {"tracking_uri": f"sqlite:///{store / 'runs.db'}"}}.get(where, {})
    with loggerhub.init(project="local", dir=tmp_path / "runs", backends=["mlflow"],
                        options={"mlflow": options}, drain_timeout=120) as run:
        run.log_metrics({"loss": 0.5}, step=0)
        run.log_text("notes", "kept", step=0)
    assert run.summary["trackers"]["mlflow"]["undelivered"] == 0
    root = run.dir / "mlruns" if where == "default" else store
    database = root / ("runs.db" if where == "sqlite" else "mlflow.db")
    assert database.is_file()
    view = read_back(f"sqlite:///{database}", mlflow_state(run)["run_id"])
    assert view.metrics == {"loss": [(0, 0.5)]} and view.texts == {"notes": ["kept"]}
    assert list((root / "mlartifacts").rglob("notes+step+0+*.txt"))
    assert ("tracking_uri" in mlflow_state(run)) == (where != "default")
    out, err = capfd.readouterr()
    assert "View run" not in out + err  # MLflow's URL banner stays off
    assert not any((Path.cwd() / name).exists() for name in ("mlruns", "mlflow.db", "mlartifacts"))
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_refused_metric_keys_are_reported_and_the_rest_delivered(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    with loggerhub.init(project="refused", dir=tmp_path, backends=["mlflow"],
                        options={"mlflow": {"tracking_uri": mlflow_server.uri}}, drain_timeout=120) as run:
        run.log_metrics({"k" * 300: 1.0, "fine": 2.0}, step=0)
    report = run.summary["trackers"]["mlflow"]
    assert report["rejected"] == 1 and report["undelivered"] == 0
    reason = (run.paths.consumers / "mlflow.rejected.jsonl").read_text()
    assert "MLflow allows 250" in reason
    assert read_back(mlflow_server.uri, mlflow_state(run)["run_id"]).metrics == {"fine": [(0, 2.0)]}


def test_artifact_names_the_http_client_would_mangle_are_escaped(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    files = tmp_path / "files"
    (files / "data").mkdir(parents=True)
    (files / "a#b%41.txt").write_text("one")
    (files / "data" / "what?.txt").write_text("two")
    (files / "data" / "plain.txt").write_text("three")
    with loggerhub.init(project="names", dir=tmp_path / "runs", backends=["mlflow"],
                        options={"mlflow": {"tracking_uri": mlflow_server.uri}}, drain_timeout=120) as run:
        run.log_artifact(files / "a#b%41.txt")
        run.log_artifact(files / "data", kind="dataset")
        run.log_artifact(files / "data" / "plain.txt", kind="model")
    run_id = mlflow_state(run)["run_id"]
    view = read_back(mlflow_server.uri, run_id)
    assert view.artifacts >= {"a__23b__2541.txt", "datasets/data/what__3f.txt", "datasets/data/plain.txt",
                              "models/plain.txt"}
    client = MlflowClient(mlflow_server.uri)
    local = client.download_artifacts(run_id, "a__23b__2541.txt", str(tmp_path / "dl"))
    assert Path(local).read_text() == "one"


def test_attaching_to_an_existing_mlflow_run(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    client = MlflowClient(mlflow_server.uri)
    experiment = client.create_experiment(f"attach-{secrets.token_hex(3)}")
    existing = client.create_run(experiment, run_name="made-elsewhere")
    options = {"tracking_uri": mlflow_server.uri, "run_id": existing.info.run_id}
    with loggerhub.init(project="attach", dir=tmp_path, backends=["mlflow"], options={"mlflow": options},
                        drain_timeout=120) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    got = client.get_run(existing.info.run_id)
    assert run_metrics(got) == {"loss": 1.0}
    assert got.data.tags["loggerhub.run_id"] == run.id
    assert got.info.status == "FINISHED"


def test_a_server_outage_is_retried_by_loggerhub(tmp_path: Path) -> None:
    with MlflowServer(tmp_path / "server") as server:
        run = loggerhub.init(project="outage", dir=tmp_path / "runs", backends=["mlflow"],
                             options={"mlflow": {"tracking_uri": server.uri}}, drain_timeout=180)
        run.log_metrics({"loss": 0.0}, step=0)
        deadline = time.monotonic() + 60
        while not mlflow_state(run) and time.monotonic() < deadline:
            time.sleep(0.2)
        server.kill()
        for step in range(1, 50):
            run.log_metrics({"loss": float(step)}, step=step)
        run.flush()
        time.sleep(8)  # the delivery process fails, fast, and backs off
        errors = ConsumerStatus.load(run.paths.consumer_file("mlflow")).errors
        server.restart()
        run.finish()
        report = run.summary["trackers"]["mlflow"]
        assert errors >= 1, report
        assert report["undelivered"] == 0 and report["rejected"] == 0, report
        view = read_back(server.uri, mlflow_state(run)["run_id"])
        assert sorted(view.metrics["loss"]) == [(s, float(s)) for s in range(50)]
        assert view.status == "FINISHED"


def living_members(group: int) -> list[int]:
    """Processes of a process group that are not zombies, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_the_test_server_kills_all_its_processes(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "server").start()
    group = server.pid
    assert group is not None and server.healthy()
    assert len(living_members(group)) >= 2  # the CLI and its uvicorn worker
    server.kill()
    assert not server.healthy()
    deadline = time.monotonic() + 10
    while living_members(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert living_members(group) == []


# --------------------------------------------------------------------------- end time and failure


def test_the_end_time_is_the_journals_not_the_deliverys(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """Defect 11: ``loggerhub sync`` may deliver the end long after the run ended."""
    plugin, info, state = started(tmp_path, mlflow_server)
    ended_at = 1_600_000_000.123  # long before this delivery
    plugin.loggerhub_run_end(run=info, status=Status.FINISHED, ended_at=ended_at, error=None)
    run = MlflowClient(mlflow_server.uri).get_run(state["run_id"])
    assert (run.info.status, run.info.end_time) == ("FINISHED", 1_600_000_000_123)


def test_a_failed_run_says_why_in_its_tags(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """Defect 14: the failure's type, message and traceback are tags of the MLflow run; a later
    end without a failure removes them."""
    plugin, info, state = started(tmp_path, mlflow_server)
    error = RunError("FloatingPointError", "loss diverged: " + "x" * 9000,
                     'Traceback (most recent call last):\n  File "train.py", line 9\nFloatingPointError')
    plugin.loggerhub_run_end(run=info, status=Status.FAILED, ended_at=time.time(), error=error)
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(state["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["loggerhub.error.type"] == "FloatingPointError"
    assert run.data.tags["loggerhub.error.message"] == error.message[:8000]
    assert run.data.tags["loggerhub.error.traceback"] == error.traceback
    assert read_back(mlflow_server.uri, state["run_id"]).error == "FloatingPointError: " + error.message[:8000]

    resumed = MlflowBackend()  # the run is resumed, and this time it finishes
    resumed.loggerhub_run_resume(run=info, state=dict(state))
    resumed.loggerhub_run_end(run=info, status=Status.FINISHED, ended_at=time.time(), error=None)
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    assert not [name for name in run.data.tags if name.startswith("loggerhub.error")]


# --------------------------------------------------------------------------- environment


def test_mlflow_environment_variables_choose_server_and_experiment(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 10: with no loggerhub option, MLflow's own variables decide; the token they carry is
    used by the client and stored nowhere."""
    experiment = f"from-env-{secrets.token_hex(3)}"
    token = f"lh-test-token-{secrets.token_hex(8)}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)  # the delivery process inherits these
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    with loggerhub.init(project="env", dir=tmp_path, backends=["mlflow"], drain_timeout=120) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.summary["trackers"]["mlflow"]["undelivered"] == 0
    state = mlflow_state(run)
    client = MlflowClient(mlflow_server.uri)
    assert client.get_experiment(state["experiment_id"]).name == experiment
    assert run_metrics(client.get_run(state["run_id"])) == {"loss": 1.0}
    assert state["tracking_uri"] == mlflow_server.uri
    for path in run.dir.rglob("*"):
        assert not path.is_file() or token.encode() not in path.read_bytes(), path


def test_loggerhub_options_win_over_mlflow_environment_variables(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "not-this-one")
    experiment = f"from-option-{secrets.token_hex(3)}"
    options = {"mlflow": {"tracking_uri": mlflow_server.uri, "experiment": experiment}}
    with loggerhub.init(project="env", dir=tmp_path, backends=["mlflow"], options=options,
                        drain_timeout=120) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.summary["trackers"]["mlflow"]["undelivered"] == 0
    state = mlflow_state(run)
    assert MlflowClient(mlflow_server.uri).get_experiment(state["experiment_id"]).name == experiment


def test_mlflow_experiment_id_is_honoured(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(mlflow_server.uri)
    experiment_id = client.create_experiment(f"by-id-{secrets.token_hex(3)}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    plugin, _, state = started(tmp_path, mlflow_server)
    assert state["experiment_id"] == experiment_id
    assert client.get_run(state["run_id"]).info.experiment_id == experiment_id


def test_a_later_delivery_stays_where_the_run_is(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loggerhub sync`` from a shell whose MLFLOW_TRACKING_URI names another server continues
    the run where it started (the URI in the state), not on that server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    info = run_info(tmp_path, {})
    state: dict[str, Any] = {}
    MlflowBackend().loggerhub_run_start(run=info, state=state)
    assert state["tracking_uri"] == mlflow_server.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    later = MlflowBackend()
    later.loggerhub_run_resume(run=info, state=dict(state))
    later.loggerhub_log_metrics(points=[MetricPoint("loss", 0.5, 3, time.time())])
    assert run_metrics(MlflowClient(mlflow_server.uri).get_run(state["run_id"])) == {"loss": 0.5}


def test_a_run_moved_by_the_tracking_uri_option_is_found_by_its_loggerhub_id(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    """The state's run id belongs to the store the state names: when the option now names another
    store, the run there is found through its ``loggerhub.run_id`` tag (or created)."""
    info = run_info(tmp_path, {"tracking_uri": mlflow_server.uri})
    state: dict[str, Any] = {}
    MlflowBackend().loggerhub_run_start(run=info, state=state)
    elsewhere = {**state, "run_id": "0" * 32, "tracking_uri": f"sqlite:///{tmp_path / 'old.db'}"}
    moved = MlflowBackend()
    moved.loggerhub_run_resume(run=info, state=elsewhere)
    assert elsewhere["run_id"] == state["run_id"] and elsewhere["tracking_uri"] == mlflow_server.uri
