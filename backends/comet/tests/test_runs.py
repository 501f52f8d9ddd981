"""Resume, refusals, retries and secrets, each through the real delivery path and read back from disk."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from loggerhub_comet import CometBackend
from loggerhub_comet.offline import read_offline_dir, read_offline_zip

import loggerhub
from loggerhub_hookspecs import RunInfo, Status


def options(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"online": False, "offline_dir": str(tmp_path / "comet"), **extra}


def consumer(run: Any) -> dict[str, Any]:
    return json.loads((run.dir / "consumers" / "comet.json").read_text(encoding="utf-8"))


def test_resume_appends_to_the_same_experiment(tmp_path: Path) -> None:
    opts = options(tmp_path)
    run = loggerhub.init(project="resume", name="first", dir=tmp_path / "runs", backends=["comet"],
                         options={"comet": opts}, config={"lr": 0.1}, tags={"team": "vision", "draft": ""},
                         drain_timeout=60)
    for step in range(3):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    run.finish()
    key = consumer(run)["state"]["experiment_key"]

    again = loggerhub.init(resume=run.dir, backends=["comet"], options={"comet": opts}, drain_timeout=60)
    for step in range(3, 5):
        again.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    again.log_text("notes", "after resume")
    again.finish()

    assert again.summary["trackers"]["comet"]["undelivered"] == 0
    assert consumer(again)["state"]["experiment_key"] == key
    experiments = read_offline_dir(opts["offline_dir"])
    assert list(experiments) == [key]
    merged = experiments[key]
    # Two archives, one experiment key: whichever `comet upload` takes first creates the
    # experiment, the other appends to it.
    strategies = [read_offline_zip(p)["experiment"]["resume_strategy"] for p in merged["parts"]]
    assert strategies == ["get_or_create", "get_or_create"]
    assert [p["step"] for p in merged["metrics"]["loss"]] == [0, 1, 2, 3, 4]
    assert merged["params"] == {"lr": 0.1}
    assert merged["others"]["status"] == "FINISHED"
    assert merged["others"]["Name"] == "first"
    assert sorted(merged["tags"]) == ["draft", "team:vision"]
    assert [u["text"] for u in merged["uploads"] if u["upload_type"] == "text-sample"] == ["after resume"]


def test_long_keys_are_rejected_not_truncated(tmp_path: Path) -> None:
    opts = options(tmp_path)
    long_key = "deep/" * 25 + "loss"
    run = loggerhub.init(project="refuse", dir=tmp_path / "runs", backends=["comet"], options={"comet": opts},
                         config={"p" * 101: 1, "ok": 2}, drain_timeout=60)
    run.log_metrics({long_key: 1.0, "short": math.inf}, step=0)
    run.finish()

    report = run.summary["trackers"]["comet"]
    assert (report["undelivered"], report["rejected"]) == (0, 2)
    reasons = [json.loads(line)["reason"] for line in
               (run.dir / "consumers" / "comet.rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("truncates" in reason for reason in reasons), reasons
    (experiment,) = read_offline_dir(opts["offline_dir"]).values()
    # The rest of each refused record was delivered.
    assert experiment["params"] == {"ok": 2}
    assert [p["value"] for p in experiment["metrics"]["short"]] == [math.inf]
    assert not [name for name in experiment["metrics"] if name.startswith("deep/")]


def test_long_param_values_are_kept_whole_as_an_asset(tmp_path: Path) -> None:
    opts = options(tmp_path)
    value = "x" * 1500
    run = loggerhub.init(project="long", dir=tmp_path / "runs", backends=["comet"], options={"comet": opts},
                         config={"prompt": value}, drain_timeout=60)
    run.finish()
    (experiment,) = read_offline_dir(opts["offline_dir"]).values()
    assert experiment["params"]["prompt"] == value[:1000]
    (asset,) = [u for u in experiment["uploads"] if u["metadata"].get("loggerhub") == "param"]
    from loggerhub_comet.offline import read_member

    assert json.loads(read_member(asset["archive"], asset["member"])) == value


def test_api_key_never_reaches_state_archive_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    secret = "cometsecretkey0123456789abcdef"
    monkeypatch.setenv("COMET_API_KEY", secret)
    opts = options(tmp_path)
    run = loggerhub.init(project="secret", dir=tmp_path / "runs", backends=["comet"], options={"comet": opts},
                         drain_timeout=60)
    run.log_metrics({"x": 1.0}, step=0)
    run.finish()
    assert run.summary["trackers"]["comet"]["undelivered"] == 0
    assert consumer(run)["state"]["online"] is False  # the explicit option wins over the key
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"x" in stored and secret.encode() not in stored
    out, err = capfd.readouterr()
    assert secret not in out + err


def test_a_retried_start_stays_in_the_same_experiment(tmp_path: Path) -> None:
    # The kit opens a start retried after a failure with the state the failed attempt filled,
    # as a resume: the first session's archive is closed, the second appends to the same key.
    backend = CometBackend()
    run = RunInfo(run_id="retry-run", project="retry", name="retry", dir=tmp_path, config={},
                  started_at=0.0, options=options(tmp_path))
    state: dict[str, Any] = {}
    backend.loggerhub_run_start(run=run, state=state)
    first = dict(state)
    backend.loggerhub_run_start(run=run, state=state)
    backend.loggerhub_run_end(run=run, status=Status.FAILED, ended_at=1.7e9, error=None)
    assert state == first
    experiments = read_offline_dir(tmp_path / "comet")
    assert list(experiments) == [first["experiment_key"]]
    assert len(experiments[first["experiment_key"]]["parts"]) == 2
    assert experiments[first["experiment_key"]]["others"]["status"] == "FAILED"


def test_experiment_key_option_appends_to_that_experiment(tmp_path: Path) -> None:
    key = "0123456789abcdef" * 2
    opts = options(tmp_path, experiment_key=key)
    run = loggerhub.init(project="attach", dir=tmp_path / "runs", backends=["comet"], options={"comet": opts},
                         drain_timeout=60)
    run.log_metrics({"x": 1.0}, step=0)
    run.finish()
    assert consumer(run)["state"]["experiment_key"] == key
    (experiment,) = read_offline_dir(opts["offline_dir"]).values()
    assert experiment["key"] == key
    # "get": at upload, the experiment must already exist; this archive appends to it.
    assert experiment["experiment"]["resume_strategy"] == "get"
