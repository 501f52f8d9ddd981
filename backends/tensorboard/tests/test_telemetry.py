"""System metrics, console output, run context and rank groups, delivered into real event files
and read back with TensorBoard's own readers (EventAccumulator, EventMultiplexer)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from loggerhub_tensorboard.reader import CONSOLE_PREFIX, CONTEXT_TAG, DIFF_TAG, REQUIREMENTS_TAG, read_logdir
from tensorboard.backend.event_processing import event_multiplexer

from loggerhub import _normalize as norm
from loggerhub import codec
from loggerhub.delivery import Consumer, ConsumerStatus
from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader, JournalWriter, RunPaths
from loggerhub_hookspecs.telemetry import GpuQuantity, SystemKey, gpu_key

STARTED = time.time() - 600
DIFF = "diff --git a/train.py b/train.py\n@@ -1 +1 @@\n-lr = 0.1\n+lr = 0.2\n"


def write_journal(run_dir: Path, records: Sequence[tuple[str, float, Any]] = (), *,
                  status: str = "FINISHED", **start: Any) -> Path:
    """A finished run's journal, written with loggerhub's own writer and codec, for a delivery
    the test starts itself."""
    paths = RunPaths(run_dir)
    paths.make()
    errors: list[str] = []
    writer = JournalWriter(paths, 0, 3600.0, on_error=errors.append)
    fields = {"run_id": run_dir.name, "project": "telemetry", "name": run_dir.name, "config": {},
              "tags": {}, "backends": ["tensorboard"], "options": {"tensorboard": {}},
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
    diff_file, truncated = codec.write_diff(run_dir, DIFF, redactor)
    context = codec.context_fields(
        command=["train.py", "--lr", "0.2"], python_version="3.11.9", python_executable="/usr/bin/python3",
        hostname="node-7", os="Linux-6.1", cpu="x86_64", cpu_count=8, gpus=[],
        packages={"torch": "2.4.0", "numpy": "2.1.0"}, environment={"WORLD_SIZE": "1"},
        git={"commit": "0123456789abcdef0123456789abcdef01234567", "branch": "main",
             "remote": "https://example.org/team/repo.git", "dirty": True, "untracked": [],
             "diff_file": diff_file, "diff_truncated": truncated},
        redactor=redactor)
    cpu, gpu = SystemKey.CPU_PERCENT.value, gpu_key(0, GpuQuantity.UTILIZATION_PERCENT)
    return [
        (codec.CONTEXT, STARTED + 1, context),
        (codec.SYSTEM_METRICS, STARTED + 10.5, codec.system_fields({cpu: 37.5, gpu: 88.0}, 3)),
        (codec.SYSTEM_METRICS, STARTED + 20.5, codec.system_fields({cpu: 42.0, gpu: 90.0}, 3)),
        (codec.CONSOLE, STARTED + 11, codec.console_fields("stdout", ["epoch 1", "", "loss 0.5"], 3, redactor)),
        (codec.CONSOLE, STARTED + 12, codec.console_fields("stderr", ["warning: slow"], 3, redactor)),
        (codec.CONSOLE, STARTED + 13, codec.console_fields("stdout", ["epoch 2"], 4, redactor)),
    ]


def deliver(run_dir: Path) -> None:
    Consumer(run_dir, "tensorboard", backoff=(0.01, 0.05), timeout=120,
             log=lambda message: print(message, file=sys.stderr)).run()


def test_telemetry_arrives_as_scalars_and_text(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "telemetry" / "tele-1"
    run_dir.mkdir(parents=True)
    write_journal(run_dir, telemetry_records(run_dir))
    deliver(run_dir)
    status = ConsumerStatus.load(RunPaths(run_dir).consumer_file("tensorboard"))
    assert not status.skipped and not status.rejected, (status.skipped, status.rejected)

    run = read_logdir(run_dir / "tensorboard")
    cpu = run.scalars["system/cpu_percent"]
    assert [(s.step, s.wall_time, s.value) for s in cpu] == [
        (10, pytest.approx(STARTED + 10.5), 37.5), (20, pytest.approx(STARTED + 20.5), 42.0)]
    assert [s.value for s in run.scalars["system/gpu/0/utilization_percent"]] == [88.0, 90.0]
    assert run.plugins["system/cpu_percent"] == "scalars"

    stdout = run.texts[CONSOLE_PREFIX + "stdout"]
    assert [(t.step, t.text) for t in stdout] == [(3, "    epoch 1\n    \n    loss 0.5"), (4, "    epoch 2")]
    assert [t.text for t in run.texts[CONSOLE_PREFIX + "stderr"]] == ["    warning: slow"]
    [context] = run.texts[CONTEXT_TAG]
    assert "| git commit | 0123456789abcdef0123456789abcdef01234567 |" in context.text
    assert "| host | node-7 |" in context.text and "| env WORLD\\_SIZE | 1 |" in context.text
    assert run.texts[REQUIREMENTS_TAG][0].text == "    numpy==2.1.0\n    torch==2.4.0"
    assert run.texts[DIFF_TAG][0].text == "\n".join("    " + line for line in DIFF.splitlines())


def test_redelivery_writes_nothing_twice(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "telemetry" / "tele-2"
    run_dir.mkdir(parents=True)
    write_journal(run_dir, telemetry_records(run_dir))
    deliver(run_dir)
    RunPaths(run_dir).consumer_file("tensorboard").unlink()  # every record comes again
    deliver(run_dir)
    assert ConsumerStatus.load(RunPaths(run_dir).consumer_file("tensorboard")).delivered >= 6  # all again
    run = read_logdir(run_dir / "tensorboard")
    assert len(run.scalars["system/cpu_percent"]) == 2
    assert len(run.texts[CONSOLE_PREFIX + "stdout"]) == 2
    assert len(run.texts[CONTEXT_TAG]) == 1


@pytest.mark.slow
def test_a_group_of_four_ranks_is_one_subdirectory_per_rank(tmp_path: Path) -> None:
    runs_root = tmp_path / "runs" / "telemetry"
    group = "job/42"  # a separator in the name: still one directory level
    runs = [write_journal(runs_root / f"train-r{rank}", [(codec.METRICS, STARTED + 5, (1, None, {"loss": 0.5 + rank}))],
                          group=group, rank=rank, world_size=4, name="train")
            for rank in range(4)]
    # Four real delivery processes, started together, as each rank's own would be.
    processes = [subprocess.Popen([sys.executable, "-m", "loggerhub.delivery", str(run_dir), "--backend",
                                   "tensorboard"]) for run_dir in runs]
    assert [p.wait(timeout=240) for p in processes] == [0, 0, 0, 0]

    logdir = runs_root / "tensorboard"
    multiplexer = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == [f"job_42/rank_{k}" for k in range(4)]
    for rank in range(4):
        run = read_logdir(logdir / "job_42" / f"rank_{rank}")
        assert [s.value for s in run.scalars["loss"]] == [0.5 + rank]
        assert run.status == "FINISHED"


def test_the_importer_maps_system_scalars_and_console_back(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "telemetry" / "tele-3"
    run_dir.mkdir(parents=True)
    write_journal(run_dir, [(codec.METRICS, STARTED + 5, (2, None, {"loss": 0.5})), *telemetry_records(run_dir)])
    deliver(run_dir)
    report = import_runs("tensorboard", str(run_dir / "tensorboard"), dir=tmp_path / "store")
    (imported,) = report.imported
    entries = list(JournalReader(imported).entries())
    samples = [e.data for e in entries if e.type == codec.SYSTEM_METRICS]
    assert [(s["step"], s["values"]) for s in samples] == [
        (2, {"system/cpu_percent": 37.5, "system/gpu/0/utilization_percent": 88.0}),
        (4, {"system/cpu_percent": 42.0, "system/gpu/0/utilization_percent": 90.0})]  # after step 4's output
    assert [e.data["values"] for e in entries if e.type == codec.METRICS] == [{"loss": 0.5}]
    console = [(e.data["stream"], e.data["lines"], e.data["step"]) for e in entries if e.type == codec.CONSOLE]
    assert console == [("stdout", ["epoch 1", "", "loss 0.5"], 3), ("stderr", ["warning: slow"], 3),
                       ("stdout", ["epoch 2"], 4)]
