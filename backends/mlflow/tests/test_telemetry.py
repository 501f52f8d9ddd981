"""System metrics, console output, run context and rank groups, delivered to a real MLflow server
and read back with MLflow's own client."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.system_metrics.metrics as mlflow_monitors
import pytest
from loggerhub_mlflow.keys import SYSTEM_NAMES, system_from_tracker, system_to_tracker
from loggerhub_mlflow.testing import MlflowServer
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from loggerhub import _normalize as norm
from loggerhub import codec
from loggerhub.delivery import Consumer, ConsumerStatus
from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader, JournalWriter, RunPaths
from loggerhub_hookspecs.telemetry import GpuQuantity, SystemKey, gpu_key

STARTED = time.time() - 600
DIFF = "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-lr = 0.1\n+lr = 0.2\n"


def write_journal(run_dir: Path, options: dict[str, Any], records: Sequence[tuple[str, float, Any]] = (), *,
                  status: str = "FINISHED", **start: Any) -> Path:
    """A finished run's journal, written record by record with loggerhub's own writer and codec
    (as ``loggerhub.init`` and the samplers write it), for a delivery the test starts itself."""
    paths = RunPaths(run_dir)
    paths.make()
    errors: list[str] = []
    writer = JournalWriter(paths, 0, 3600.0, on_error=errors.append)
    fields = {"run_id": run_dir.name, "project": "telemetry", "name": run_dir.name, "config": {"lr": 0.1},
              "tags": {}, "backends": ["mlflow"], "options": {"mlflow": options},
              "journal_version": codec.JOURNAL_VERSION, "host": "test", "pid": os.getpid(), **start}
    writer.put((codec.RUN_START, STARTED, fields))
    for record in records:
        writer.put(record)
    writer.put((codec.RUN_END, STARTED + 100, codec.end_fields(status)))
    writer.close()
    assert not errors
    return run_dir


def telemetry_records(run_dir: Path) -> list[tuple[str, float, Any]]:
    redactor = norm.Redactor()
    samples = [
        (STARTED + 10.4, {SystemKey.CPU_PERCENT.value: 37.5, SystemKey.MEMORY_USED_MB.value: 2048.0,
                          SystemKey.PROCESS_MEMORY_MB.value: 300.0,
                          gpu_key(0, GpuQuantity.UTILIZATION_PERCENT): 88.0,
                          gpu_key(0, GpuQuantity.TEMPERATURE_C): 61.0}),
        (STARTED + 20.9, {SystemKey.CPU_PERCENT.value: 42.0, SystemKey.MEMORY_USED_MB.value: 2100.0,
                          SystemKey.PROCESS_MEMORY_MB.value: 310.0,
                          gpu_key(0, GpuQuantity.UTILIZATION_PERCENT): 90.0,
                          gpu_key(0, GpuQuantity.TEMPERATURE_C): 62.0}),
    ]
    diff_file, truncated = codec.write_diff(run_dir, DIFF, redactor)
    context = codec.context_fields(
        command=["train.py", "--lr", "0.2"], python_version="3.11.9", python_executable="/usr/bin/python3",
        hostname="node-7", os="Linux-6.1", cpu="x86_64", cpu_count=8, gpus=["NVIDIA A100"],
        packages={"torch": "2.4.0", "numpy": "2.1.0"}, environment={"WORLD_SIZE": "1"},
        git={"commit": "0123456789abcdef0123456789abcdef01234567", "branch": "main",
             "remote": "https://example.org/team/repo.git", "dirty": True, "untracked": ["notes.txt"],
             "diff_file": diff_file, "diff_truncated": truncated},
        redactor=redactor)
    return [
        (STARTED + 1, codec.CONTEXT, context),
        *[(ts, codec.SYSTEM_METRICS, codec.system_fields(values, 3)) for ts, values in samples],
        (STARTED + 11, codec.CONSOLE, codec.console_fields("stdout", ["epoch 1", "loss 0.5"], 3, redactor)),
        (STARTED + 12, codec.CONSOLE, codec.console_fields("stderr", ["warning: slow"], 3, redactor)),
        (STARTED + 13, codec.CONSOLE, codec.console_fields("stdout", ["epoch 2"], 4, redactor)),
    ]


def as_records(items: list[tuple[float, str, Any]]) -> list[tuple[str, float, Any]]:
    return [(kind, ts, fields) for ts, kind, fields in items]


def deliver(run_dir: Path) -> None:
    Consumer(run_dir, "mlflow", backoff=(0.01, 0.05), timeout=120,
             log=lambda message: print(message, file=sys.stderr)).run()


def mlflow_monitor_names() -> set[str]:
    """The series MLflow's own system metrics monitor logs, read from its source (GPU ones for GPU 0)."""
    names: set[str] = set()
    for module in ("cpu_monitor", "disk_monitor", "gpu_monitor", "network_monitor"):
        source = inspect.getsource(__import__(f"{mlflow_monitors.__name__}.{module}", fromlist=["_"]))
        for name in re.findall(r'_metrics\[f?"([a-z_{}0-9]+)"\]', source):
            names.add("system/" + name.replace("{i}", "0"))
    return names


# --------------------------------------------------------------------------- names


def test_the_mapped_names_are_the_ones_mlflows_monitor_logs() -> None:
    monitor = mlflow_monitor_names()
    assert "system/cpu_utilization_percentage" in monitor  # the source was read
    mapped = set(SYSTEM_NAMES.values())
    mapped |= {system_to_tracker(gpu_key(0, q)) for q in GpuQuantity} - {
        gpu_key(0, GpuQuantity.TEMPERATURE_C), gpu_key(0, GpuQuantity.MEMORY_TOTAL_MB)}
    assert mapped <= monitor, mapped - monitor
    for key in [*(k.value for k in SystemKey), *(gpu_key(3, q) for q in GpuQuantity), "system/new_series"]:
        assert system_from_tracker(system_to_tracker(key)) == key


# --------------------------------------------------------------------------- one run


def test_telemetry_arrives_under_mlflows_own_names(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    run_dir = tmp_path / "runs" / "telemetry" / "tele-1"
    run_dir.mkdir(parents=True)
    write_journal(run_dir, {"tracking_uri": mlflow_server.uri}, as_records(telemetry_records(run_dir)))
    deliver(run_dir)
    status = ConsumerStatus.load(RunPaths(run_dir).consumer_file("mlflow"))
    assert not status.skipped and not status.rejected, (status.skipped, status.rejected)

    client = MlflowClient(mlflow_server.uri)
    run_id = status.state["run_id"]
    run = client.get_run(run_id)
    monitor = mlflow_monitor_names()
    cpu = client.get_metric_history(run_id, "system/cpu_utilization_percentage")
    assert "system/cpu_utilization_percentage" in monitor
    assert [(m.value, m.step, m.timestamp) for m in sorted(cpu, key=lambda m: m.step)] == [
        (37.5, 10, round((STARTED + 10.4) * 1000)), (42.0, 20, round((STARTED + 20.9) * 1000))]
    # loggerhub's MiB as MLflow's megabytes (10**6 bytes, what its monitor logs).
    assert run.data.metrics["system/system_memory_usage_megabytes"] == pytest.approx(2100.0 * 2**20 / 10**6)
    assert "system/gpu_0_utilization_percentage" in run.data.metrics
    # No MLflow counterpart: loggerhub's own name, still under system/.
    assert run.data.metrics["system/process_memory_mb"] == 310.0
    assert run.data.metrics["system/gpu/0/temperature_c"] == 62.0
    assert not {"system/cpu_percent", "system/memory_used_mb"} & set(run.data.metrics)

    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.git.repoURL"] == "https://example.org/team/repo.git"
    assert tags["mlflow.source.git.dirty"] == "true"
    assert tags["mlflow.source.name"] == "train.py --lr 0.2"
    assert tags["loggerhub.host"] == "node-7" and tags["loggerhub.python"] == "3.11.9"

    files = tmp_path / "download"
    requirements = Path(client.download_artifacts(run_id, "context/requirements.txt", str(files)))
    assert requirements.read_text() == "numpy==2.1.0\ntorch==2.4.0\n"
    assert Path(client.download_artifacts(run_id, "context/git.diff", str(files))).read_text() == DIFF
    stdout = Path(client.download_artifacts(run_id, "console/stdout.log", str(files)))
    assert stdout.read_text() == "epoch 1\nloss 0.5\nepoch 2\n"
    stderr = Path(client.download_artifacts(run_id, "console/stderr.log", str(files)))
    assert stderr.read_text() == "warning: slow\n"


def test_redelivery_duplicates_no_line_and_no_point(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    run_dir = tmp_path / "runs" / "telemetry" / "tele-2"
    run_dir.mkdir(parents=True)
    write_journal(run_dir, {"tracking_uri": mlflow_server.uri}, as_records(telemetry_records(run_dir)))
    deliver(run_dir)
    consumer_file = RunPaths(run_dir).consumer_file("mlflow")
    run_id = ConsumerStatus.load(consumer_file).state["run_id"]
    consumer_file.unlink()  # every record comes again; the run is found by its loggerhub.run_id tag
    deliver(run_dir)
    again = ConsumerStatus.load(consumer_file)
    assert again.state["run_id"] == run_id and again.delivered >= 6

    client = MlflowClient(mlflow_server.uri)
    assert len(client.get_metric_history(run_id, "system/cpu_utilization_percentage")) == 2
    stdout = Path(client.download_artifacts(run_id, "console/stdout.log", str(tmp_path / "d")))
    assert stdout.read_text() == "epoch 1\nloss 0.5\nepoch 2\n"


def test_long_console_output_goes_to_numbered_parts(tmp_path: Path, mlflow_server: MlflowServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from loggerhub_mlflow import _telemetry

    monkeypatch.setattr(_telemetry, "CONSOLE_PART_BYTES", 64)  # small parts, in this process
    run_dir = tmp_path / "runs" / "telemetry" / "tele-3"
    run_dir.mkdir(parents=True)
    redactor = norm.Redactor()
    lines = [f"line {i:03d} " + "x" * 20 for i in range(8)]
    records = [(codec.CONSOLE, STARTED + i, codec.console_fields("stdout", [line], i, redactor))
               for i, line in enumerate(lines)]
    write_journal(run_dir, {"tracking_uri": mlflow_server.uri}, records)
    deliver(run_dir)
    client = MlflowClient(mlflow_server.uri)
    run_id = ConsumerStatus.load(RunPaths(run_dir).consumer_file("mlflow")).state["run_id"]
    parts = sorted((f.path for f in client.list_artifacts(run_id, "console")),
                   key=lambda p: int(re.sub(r"\D", "", p) or 1))
    assert parts[0] == "console/stdout.log" and len(parts) == 4
    text = "".join(Path(client.download_artifacts(run_id, p, str(tmp_path / "d"))).read_text() for p in parts)
    assert text == "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- groups


@pytest.mark.slow
@pytest.mark.parametrize("failed_rank", [None, 2])
def test_a_group_of_four_ranks_is_one_parent_with_four_nested_runs(
    tmp_path: Path, mlflow_server: MlflowServer, failed_rank: int | None
) -> None:
    experiment = f"group-{failed_rank}"
    options = {"tracking_uri": mlflow_server.uri, "experiment": experiment}
    group = f"job-{failed_rank}-o'neil"  # a quote: the group is found by its digest, not its name
    runs = [write_journal(tmp_path / "runs" / "telemetry" / f"train-r{rank}", options,
                          [(codec.METRICS, STARTED + 5, (1, None, {"loss": 0.5 + rank}))],
                          status="FAILED" if rank == failed_rank else "FINISHED",
                          group=group, rank=rank, world_size=4, name="train")
            for rank in range(4)]
    # Four real delivery processes, started together, as each rank's own would be.
    processes = [subprocess.Popen([sys.executable, "-m", "loggerhub.delivery", str(run_dir), "--backend", "mlflow"])
                 for run_dir in runs]
    assert [p.wait(timeout=240) for p in processes] == [0, 0, 0, 0]

    client = MlflowClient(mlflow_server.uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    everything = client.search_runs([experiment_id])
    parents = [r for r in everything if r.data.tags.get("loggerhub.group.role") == "parent"]
    assert len(parents) == 1 and len(everything) == 5
    parent = parents[0]
    assert parent.info.run_name == group
    children = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [f"train rank {k}" for k in range(4)]
    assert sorted(r.data.tags["loggerhub.rank"] for r in children) == ["0", "1", "2", "3"]
    assert sorted(r.data.metrics["loss"] for r in children) == [0.5, 1.5, 2.5, 3.5]
    assert parent.info.status == ("FINISHED" if failed_rank is None else "FAILED")
    assert parent.info.end_time == max(r.info.end_time for r in children)


# --------------------------------------------------------------------------- importing


def journal_records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [entry.data for entry in JournalReader(run_dir).entries() if entry.type == kind]


def test_the_importer_maps_system_metrics_and_context_back(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    run_dir = tmp_path / "runs" / "telemetry" / "tele-4"
    run_dir.mkdir(parents=True)
    options = {"tracking_uri": mlflow_server.uri, "experiment": "import-telemetry"}
    write_journal(run_dir, options, as_records(telemetry_records(run_dir)))
    deliver(run_dir)
    run_id = ConsumerStatus.load(RunPaths(run_dir).consumer_file("mlflow")).state["run_id"]

    report = import_runs("mlflow", mlflow_server.uri, dir=tmp_path / "store", options={"run_id": run_id})
    (imported,) = report.imported
    samples = journal_records(imported, codec.SYSTEM_METRICS)
    assert [(s["ts"], s["values"]) for s in samples] == [
        (pytest.approx(STARTED + 10.4, abs=1e-3), pytest.approx({
            SystemKey.CPU_PERCENT.value: 37.5, SystemKey.MEMORY_USED_MB.value: 2048.0,
            SystemKey.PROCESS_MEMORY_MB.value: 300.0, gpu_key(0, GpuQuantity.UTILIZATION_PERCENT): 88.0,
            gpu_key(0, GpuQuantity.TEMPERATURE_C): 61.0})),
        (pytest.approx(STARTED + 20.9, abs=1e-3), pytest.approx({
            SystemKey.CPU_PERCENT.value: 42.0, SystemKey.MEMORY_USED_MB.value: 2100.0,
            SystemKey.PROCESS_MEMORY_MB.value: 310.0, gpu_key(0, GpuQuantity.UTILIZATION_PERCENT): 90.0,
            gpu_key(0, GpuQuantity.TEMPERATURE_C): 62.0}))]
    assert not any(key.startswith("system/") for m in journal_records(imported, codec.METRICS) for key in m["values"])
    (context,) = journal_records(imported, codec.CONTEXT)
    assert context["git"]["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert context["git"]["dirty"] is True and context["hostname"] == "node-7"
    assert context["packages"] == {"torch": "2.4.0", "numpy": "2.1.0"}
    assert (imported / context["git"]["diff_file"]).read_text() == DIFF
    assert not [a for a in journal_records(imported, codec.ARTIFACT) if a["name"] == "context"]


def test_a_plain_mlflow_runs_system_metrics_and_git_tags_are_imported(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    """A run as MLflow's own client records it: its monitor's names and its git context tags."""
    client = MlflowClient(mlflow_server.uri)
    experiment_id = client.create_experiment("plain-telemetry")
    run = client.create_run(experiment_id, run_name="plain", tags={
        "mlflow.source.git.commit": "fedcba9876543210fedcba9876543210fedcba98",
        "mlflow.source.git.branch": "dev", "mlflow.source.name": "train.py"})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[
        Metric("system/cpu_utilization_percentage", 12.5, now, 0),
        Metric("system/gpu_1_power_usage_watts", 150.0, now, 0),
        Metric("system/network_receive_megabytes", 3.0, now, 0),
        Metric("loss", 0.25, now, 7)], synchronous=True)
    client.set_terminated(run.info.run_id)

    report = import_runs("mlflow", mlflow_server.uri, dir=tmp_path, options={"run_id": run.info.run_id})
    (imported,) = report.imported
    (sample,) = journal_records(imported, codec.SYSTEM_METRICS)
    assert sample["values"] == {SystemKey.CPU_PERCENT.value: 12.5, gpu_key(1, GpuQuantity.POWER_W): 150.0,
                                "system/network_receive_megabytes": 3.0}
    assert [m["values"] for m in journal_records(imported, codec.METRICS)] == [{"loss": 0.25}]
    (context,) = journal_records(imported, codec.CONTEXT)
    assert context["git"]["commit"] == "fedcba9876543210fedcba9876543210fedcba98"
    assert context["git"]["branch"] == "dev" and context["command"] == ["train.py"]
