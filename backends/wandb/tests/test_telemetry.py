"""System metrics, console output, the run's context and rank groups: journaled, delivered by
loggerhub's delivery into the real wandb's offline run (its ``.wandb`` file, read with this
backend's reader, and the files wandb-core writes beside it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loggerhub_wandb import datastore, reader
from loggerhub_wandb.keys import stats_name, system_key

from loggerhub.delivery import sync
from loggerhub.journal import JournalReader
from loggerhub.testing.telemetry import DIFF, T0, telemetry_run

MB = 2**20
SAMPLES = [
    {"system/memory_percent": 40.0, "system/process_memory_mb": 410.0, "system/cpu_percent": 12.5,
     "system/gpu/0/utilization_percent": 80.0, "system/gpu/0/memory_used_mb": 1024.0,
     "system/gpu/0/power_w": 150.0, "system/gpu/0/temperature_c": 61.0},
    {"system/memory_percent": 45.0, "system/process_memory_mb": 420.0, "system/cpu_percent": 25.0,
     "system/gpu/0/utilization_percent": 90.0, "system/gpu/0/memory_used_mb": 2048.0,
     "system/gpu/0/power_w": 160.0, "system/gpu/0/temperature_c": 62.0},
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def _journal(tmp_path: Path, **init: Any) -> Any:
    return telemetry_run(tmp_path / "runs", SAMPLES, **init)


def _deliver(run: Any, tmp_path: Path) -> tuple[Path, list[Any]]:
    options = {"wandb": {"mode": "offline", "dir": str(tmp_path / "wb")}}
    [status] = sync(run.dir, to=["wandb"], options=options, timeout=120).values()
    assert status.offset == JournalReader(run.dir).last_seq()
    [part] = reader.run_dirs(tmp_path / "wb" / "wandb")
    path = reader.wandb_file(part)
    assert path is not None
    return part, list(datastore.read_records(path).records)


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    tmp_path = tmp_path_factory.mktemp("delivered")
    return _deliver(_journal(tmp_path), tmp_path)


def test_system_metrics_are_wandb_stats_records(delivered: tuple[Path, list[Any]]) -> None:
    _, records = delivered
    stats = [r.stats for r in records if r.WhichOneof("record_type") == "stats"]
    samples = [(s.timestamp.ToNanoseconds() / 1e9, {i.key: json.loads(i.value_json) for i in s.item}) for s in stats]
    assert [ts for ts, _ in samples] == [T0 + 10, T0 + 20]
    assert samples[0][1] == {
        "memory_percent": 40.0, "proc.memory.rssMB": 410.0, "loggerhub.cpu_percent": 12.5,
        "gpu.0.gpu": 80.0, "gpu.0.memoryAllocatedBytes": 1024.0 * MB, "gpu.0.powerWatts": 150.0, "gpu.0.temp": 61.0,
    }
    assert all(s.stats_type == s.SYSTEM for s in stats)


def test_console_is_wandb_raw_output(delivered: tuple[Path, list[Any]]) -> None:
    _, records = delivered
    output = [r.output_raw for r in records if r.WhichOneof("record_type") == "output_raw"]
    assert [(o.output_type, o.line, o.timestamp.ToNanoseconds() / 1e9) for o in output] == [
        (output[0].STDOUT, "epoch 1\nloss 0.5\n", T0 + 11), (output[0].STDERR, "warning: slow\n", T0 + 12)]


def test_context_is_wandbs_environment_and_requirements(delivered: tuple[Path, list[Any]]) -> None:
    part, records = delivered
    [environment] = [r.environment for r in records if r.WhichOneof("record_type") == "environment"]
    assert (environment.host, environment.os, environment.python, environment.executable) == (
        "node-7", "Linux-6.1-x86_64", "3.11.9", "/usr/bin/python3")
    assert (environment.program, list(environment.args)) == ("train.py", ["--lr", "0.1"])
    assert (environment.git.commit, environment.git.remote_url) == ("a" * 40, "https://example.org/team/repo.git")
    assert (environment.cpu_count, environment.gpu_count, environment.gpu_type) == (8, 1, "NVIDIA A100")
    assert (part / "files" / "requirements.txt").read_text().split() == ["numpy==2.1.0", "torch==2.5.1"]
    assert (part / "files" / "diff.patch").read_text() == DIFF


def test_rank_group_is_wandbs_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    _, records = _deliver(_journal(tmp_path, per_rank=True, group="job-42"), tmp_path)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
    assert (run.run_group, run.job_type) == ("job-42", "rank-1")


@pytest.mark.parametrize("key", [
    "system/memory_percent", "system/process_memory_mb", "system/cpu_percent", "system/disk_read_mb_s",
    "system/gpu/0/utilization_percent", "system/gpu/3/memory_used_mb", "system/gpu/1/power_w",
    "system/gpu/2/memory_percent", "system/gpu/0/temperature_c", "system/gpu/0/memory_total_mb",
])
def test_every_system_key_maps_back(key: str) -> None:
    native = stats_name(key)
    assert native is not None
    back = system_key(native[0])
    assert back is not None and back[0] == key and native[1] * back[1] == pytest.approx(1.0)


def test_a_redelivered_sample_and_console_are_not_written_twice(tmp_path: Path) -> None:
    """The delivery that wrote them died before committing its offset: the next one (a new run
    directory of the same W&B run) gets them again and skips them."""
    from loggerhub_wandb import WandbBackend

    from loggerhub_hookspecs import ConsoleRecord, MetricPoint, RunInfo, Status

    info = RunInfo(run_id="redelivered", project="p", name="n", dir=tmp_path, config={}, started_at=T0,
                   options={"mode": "offline", "dir": str(tmp_path / "wb")})
    sample = [MetricPoint("system/memory_percent", 40.0, 3, T0 + 5)]
    lines = ConsoleRecord("stdout", ("a", "b"), 3, T0 + 6)
    state: dict[str, Any] = {}
    for resumed in (False, True):
        plugin = WandbBackend()
        if resumed:
            plugin.loggerhub_run_resume(run=info, state=state)
        else:
            plugin.loggerhub_run_start(run=info, state=state)
        plugin.loggerhub_log_system_metrics(points=sample)
        plugin.loggerhub_log_console(output=lines)
        plugin.loggerhub_run_end(run=info, status=Status.FINISHED, ended_at=T0 + 9, error=None)
    parts = reader.run_dirs(tmp_path / "wb" / "wandb", "redelivered")
    assert len(parts) == 2
    kinds = []
    for part in parts:
        path = reader.wandb_file(part)
        assert path is not None
        kinds += [r.WhichOneof("record_type") for r in datastore.read_records(path).records]
    assert kinds.count("stats") == 1 and kinds.count("output_raw") == 1
