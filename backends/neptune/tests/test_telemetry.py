"""System metrics, console output, the run's context and rank groups: journaled, delivered by
loggerhub's delivery into the real client's offline op log, found under Neptune's own names, and
imported back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loggerhub_neptune import offline
from loggerhub_neptune.keys import monitoring_series, system_key

from loggerhub import codec
from loggerhub.delivery import sync
from loggerhub.journal import JournalReader
from loggerhub.testing.telemetry import DIFF, REQUIREMENTS, T0, telemetry_run

SAMPLES = [
    {"system/cpu_percent": 12.5, "system/memory_used_mb": 3072.0, "system/process_memory_mb": 410.0,
     "system/gpu/0/utilization_percent": 80.0, "system/gpu/0/memory_used_mb": 1024.0,
     "system/gpu/0/power_w": 150.0, "system/gpu/0/temperature_c": 61.0},
    {"system/cpu_percent": 25.0, "system/memory_used_mb": 3584.0, "system/process_memory_mb": 420.0,
     "system/gpu/0/utilization_percent": 90.0, "system/gpu/0/memory_used_mb": 2048.0,
     "system/gpu/0/power_w": 160.0, "system/gpu/0/temperature_c": 62.0},
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEPTUNE_DATA_DIRECTORY", "NEPTUNE_API_TOKEN", "NEPTUNE_PROJECT", "NEPTUNE_MODE",
                 "RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)


def _journal(tmp_path: Path, **init: Any) -> Any:
    return telemetry_run(tmp_path / "runs", SAMPLES, **init)


def _deliver(run: Any, tmp_path: Path) -> dict[str, dict[str, Any]]:
    data_dir = tmp_path / "neptune"
    options = {"neptune": {"mode": "offline", "data_dir": str(data_dir)}}
    [status] = sync(run.dir, to=["neptune"], options=options, timeout=120).values()
    assert status.offset == JournalReader(run.dir).last_seq()
    [container] = offline.read_run(data_dir, run.id)
    return container["fields"]


@pytest.fixture
def delivered(tmp_path: Path) -> Iterator[tuple[Any, dict[str, dict[str, Any]]]]:
    run = _journal(tmp_path)
    yield run, _deliver(run, tmp_path)


def _namespace(fields: dict[str, dict[str, Any]]) -> str:
    [namespace] = {p.rsplit("/", 1)[0] for p in fields if p.startswith("monitoring/") and p.endswith("/cpu")}
    return namespace


def test_system_metrics_are_neptunes_monitoring_series(delivered: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    run, fields = delivered
    namespace = _namespace(fields)
    # monitoring/<8 hex digits>, as the client names a process's namespace.
    assert len(namespace.split("/")[1]) == 8

    def series(name: str) -> list[tuple[float, float]]:
        return [(v["ts"], v["value"]) for v in fields[f"{namespace}/{name}"]["values"]]

    times = [T0 + 10, T0 + 20]
    assert series("cpu") == list(zip(times, [12.5, 25.0], strict=True))
    assert series("memory") == list(zip(times, [3.0, 3.5], strict=True))  # GB, as Neptune's monitor
    # One GPU: Neptune's names carry no card index.
    assert series("gpu") == list(zip(times, [80.0, 90.0], strict=True))
    assert series("gpu_memory") == list(zip(times, [1.0, 2.0], strict=True))
    assert series("gpu_power") == list(zip(times, [150.0, 160.0], strict=True))
    assert series("gpu_0_temperature_c") == list(zip(times, [61.0, 62.0], strict=True))
    assert series("process_memory_mb") == list(zip(times, [410.0, 420.0], strict=True))
    assert fields[f"{namespace}/cpu"]["config"]["unit"] == "%"
    assert fields[f"{namespace}/memory"]["config"]["unit"] == "GB"
    # Nothing landed as an ordinary metric.
    assert not [p for p in fields if p.startswith("system")]


def test_console_is_the_monitoring_stdout_and_stderr(delivered: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    _, fields = delivered
    namespace = _namespace(fields)
    assert [(v["ts"], v["value"]) for v in fields[f"{namespace}/stdout"]["values"]] == [
        (T0 + 11, "epoch 1"), (T0 + 11, "loss 0.5")]
    assert [v["value"] for v in fields[f"{namespace}/stderr"]["values"]] == ["warning: slow"]


def test_context_goes_to_source_code_and_sys(delivered: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    run, fields = delivered
    assert fields["sys/hostname"]["value"] == "node-7"
    assert fields[f"{_namespace(fields)}/hostname"]["value"] == "node-7"
    requirements = fields["source_code/requirements"]
    assert Path(requirements["path"]).read_text() == "numpy==2.1.0\ntorch==2.5.1\n"
    diff = fields["source_code/diff"]
    assert diff["ext"] == "patch" and Path(diff["path"]).read_text() == DIFF
    assert not Path(diff["path"]).is_relative_to(run.dir)  # the op log holds the diff itself
    assert fields["loggerhub/git/commit"]["value"] == "a" * 40
    assert fields["loggerhub/git/branch"]["value"] == "main"
    assert fields["loggerhub/git/remote"]["value"] == "https://example.org/team/repo.git"
    assert fields["loggerhub/git/dirty"]["value"] is True
    assert json.loads(fields["loggerhub/context/command"]["value"]) == ["train.py", "--lr", "0.1"]
    assert fields["loggerhub/context/cpu_count"]["value"] == 8


@pytest.mark.parametrize("redelivered", ["system_metrics", "console"])
def test_a_redelivered_record_is_not_stored_twice(tmp_path: Path, redelivered: str) -> None:
    """The delivery that stored a record died before committing its offset: the next one (a new
    offline container, a resumed session) gets that record first and must skip it."""
    from loggerhub_neptune import NeptuneBackend

    from loggerhub_hookspecs import ConsoleRecord, MetricPoint, RunInfo, Status

    info = RunInfo(run_id="redelivered", project="p", name="n", dir=tmp_path, config={}, started_at=T0,
                   options={"mode": "offline", "data_dir": str(tmp_path / "neptune")})
    sample = [MetricPoint("system/cpu_percent", 40.0, 3, T0 + 5),
              MetricPoint("system/memory_used_mb", 1024.0, 3, T0 + 5)]
    lines = ConsoleRecord("stdout", ("a", "b"), 3, T0 + 6)

    def deliver(plugin: NeptuneBackend, kind: str) -> None:
        if kind == "system_metrics":
            plugin.loggerhub_log_system_metrics(points=sample)
        else:
            plugin.loggerhub_log_console(output=lines)

    state: dict[str, Any] = {}
    first = NeptuneBackend()
    first.loggerhub_run_start(run=info, state=state)
    deliver(first, "console" if redelivered == "system_metrics" else "system_metrics")
    deliver(first, redelivered)
    first.loggerhub_run_end(run=info, status=Status.FINISHED, ended_at=T0 + 9, error=None)
    again = NeptuneBackend()
    again.loggerhub_run_resume(run=info, state=state)
    deliver(again, redelivered)
    again.loggerhub_run_end(run=info, status=Status.FINISHED, ended_at=T0 + 9, error=None)

    parts = offline.read_run(tmp_path / "neptune", "redelivered")
    assert len(parts) == 2
    merged = offline.merge_parts(parts)
    namespace = _namespace(merged)
    assert [v["value"] for v in merged[f"{namespace}/cpu"]["values"]] == [40.0]
    assert [v["value"] for v in merged[f"{namespace}/memory"]["values"]] == [1.0]
    assert [v["value"] for v in merged[f"{namespace}/stdout"]["values"]] == ["a", "b"]


def test_rank_group_is_a_group_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = _journal(tmp_path, per_rank=True, group="job-42")
    fields = _deliver(run, tmp_path)
    assert fields["sys/group_tags"]["values"] == ["job-42"]
    assert fields["loggerhub/group"]["value"] == "job-42"
    assert fields["loggerhub/rank"]["value"] == 1
    assert fields["loggerhub/world_size"]["value"] == 2


def test_a_run_outside_a_group_has_no_group_fields(delivered: tuple[Any, dict[str, dict[str, Any]]]) -> None:
    _, fields = delivered
    assert "sys/group_tags" not in fields and "loggerhub/group" not in fields


def test_import_maps_them_back(tmp_path: Path) -> None:
    from loggerhub.importing import import_runs

    run = _journal(tmp_path)
    _deliver(run, tmp_path)
    # The diff is uploaded from the run directory, outside the Neptune folder being imported.
    report = import_runs("neptune", str(tmp_path / "neptune"), dir=tmp_path / "store", allow_read=[run.dir])
    [imported] = [Path(p) for p in report.imported]
    records: dict[str, list[dict[str, Any]]] = {}
    for entry in JournalReader(imported).entries():
        records.setdefault(entry.type, []).append(entry.data)
    samples = [(e["ts"], e["values"]) for e in records[codec.SYSTEM_METRICS]]
    assert [ts for ts, _ in samples] == [T0 + 10, T0 + 20]
    for (_, values), expected in zip(samples, SAMPLES, strict=True):
        assert values == pytest.approx(expected)
    console = [(e["stream"], e["lines"]) for e in records[codec.CONSOLE]]
    assert console == [("stdout", ["epoch 1", "loss 0.5"]), ("stderr", ["warning: slow"])]
    [context] = [codec.run_context(e, imported) for e in records[codec.CONTEXT]]
    assert context.hostname == "node-7" and context.cpu_count == 8 and context.os == "Linux-6.1-x86_64"
    assert context.command == ("train.py", "--lr", "0.1")
    assert dict(context.packages) == REQUIREMENTS
    assert dict(context.environment) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert context.git is not None and context.git.commit == "a" * 40 and context.git.dirty
    assert context.git.branch == "main" and context.git.untracked == ("notes.txt",)
    assert context.git.diff_path is not None and context.git.diff_path.read_text() == DIFF
    unmapped = [r for r in report.unmapped if "monitoring" in r or "source_code" in r or "context" in r]
    assert not unmapped


@pytest.mark.parametrize("key", [
    "system/cpu_percent", "system/memory_used_mb", "system/disk_write_mb_s", "system/gpu/0/utilization_percent",
    "system/gpu/3/memory_used_mb", "system/gpu/1/power_w", "system/gpu/2/memory_percent",
])
@pytest.mark.parametrize("gpus", [1, 4])
def test_every_system_key_maps_back(key: str, gpus: int) -> None:
    series = monitoring_series(key, gpus)
    assert series is not None
    back = system_key(series.name)
    assert back is not None and back[0] == key and series.factor * back[1] == pytest.approx(1.0)
