"""Fault tests with real parts: the real `mlflow server` killed and restarted mid-run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import loggerhub
from loggerhub.delivery import ConsumerStatus

mlflow_testing = pytest.importorskip("loggerhub_mlflow.testing", reason="setup.sh dev installs the mlflow backend")


def test_mlflow_server_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    """SIGKILL the tracking server while the loop logs, restart it on the same port and store:
    training never waits, and every point arrives in MLflow exactly once."""
    from mlflow.tracking import MlflowClient

    with mlflow_testing.MlflowServer(tmp_path / "server") as server:
        run = loggerhub.init(project="faults", name="server-killed", dir=tmp_path / "runs",
                             backends=["mlflow"], options={"mlflow": {"tracking_uri": server.uri}},
                             drain_timeout=180)
        status = run.paths.consumer_file("mlflow")
        slowest_call = 0.0
        steps = 3000
        for step in range(steps):
            if step == 1000:
                run.flush()
                # Kill the server once part of the run has reached it...
                _wait_for(lambda: ConsumerStatus.load(status).offset >= 500, "the first points to arrive")
                server.kill()
            if step == 2000:
                run.flush()
                # ...and restart it once delivery has hit the outage, while logging goes on.
                _wait_for(lambda: ConsumerStatus.load(status).errors >= 1, "delivery to notice the outage")
                server.restart()
            started = time.perf_counter()
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / steps}, step=step)
            slowest_call = max(slowest_call, time.perf_counter() - started)
        run.finish()

        assert slowest_call < 0.05  # no call waited for the dead server
        report = run.summary["trackers"]["mlflow"]
        assert report["undelivered"] == 0 and report["errors"] >= 1, report
        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("faults")
        (mlflow_run,) = client.search_runs([experiment.experiment_id])
        assert mlflow_run.info.status == "FINISHED"
        for key, value in (("loss", lambda s: 1.0 / (s + 1)), ("acc", lambda s: s / steps)):
            history = client.get_metric_history(mlflow_run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(steps)), f"{key}: lost or duplicated points"
            assert all(m.value == pytest.approx(value(m.step)) for m in history)


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
