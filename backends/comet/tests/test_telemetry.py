"""System metrics, console output, the run's context and rank groups: journaled, delivered by
loggerhub's delivery into a real comet_ml offline archive, found there as comet_ml's own messages,
and imported back."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from loggerhub_comet.keys import system_key, system_metric_name
from loggerhub_comet.offline import read_member, read_offline_dir

from loggerhub import codec
from loggerhub.delivery import sync
from loggerhub.journal import JournalReader
from loggerhub.testing.telemetry import DIFF, REQUIREMENTS, T0, telemetry_run

MB = 2**20
SAMPLES = [
    {"system/cpu_percent": 12.5, "system/memory_used_mb": 3072.0, "system/process_memory_mb": 410.0,
     "system/network_receive_mb_s": 2.0, "system/gpu/0/utilization_percent": 80.0,
     "system/gpu/0/memory_used_mb": 1024.0, "system/gpu/0/power_w": 150.0},
    {"system/cpu_percent": 25.0, "system/memory_used_mb": 3584.0, "system/process_memory_mb": 420.0,
     "system/network_receive_mb_s": 4.0, "system/gpu/0/utilization_percent": 90.0,
     "system/gpu/0/memory_used_mb": 2048.0, "system/gpu/0/power_w": 160.0},
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "COMET_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _journal(tmp_path: Path, **init: Any) -> Any:
    return telemetry_run(tmp_path / "runs", SAMPLES, **init)


def _deliver(run: Any, tmp_path: Path) -> dict[str, Any]:
    options = {"comet": {"online": False, "offline_dir": str(tmp_path / "comet")}}
    [status] = sync(run.dir, to=["comet"], options=options, timeout=120).values()
    assert status.offset == JournalReader(run.dir).last_seq()
    [experiment] = read_offline_dir(tmp_path / "comet").values()
    return experiment


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    tmp_path = tmp_path_factory.mktemp("delivered")
    run = _journal(tmp_path)
    return run, _deliver(run, tmp_path), tmp_path


def test_system_metrics_are_comets_sys_metrics(delivered: tuple[Any, dict[str, Any], Path]) -> None:
    _, experiment, _ = delivered
    metrics = experiment["metrics"]

    def series(name: str) -> list[tuple[float, int, float]]:
        return [(p["timestamp"], p["step"], p["value"]) for p in metrics[name]]

    ms = [round((T0 + 10) * 1000), round((T0 + 20) * 1000)]
    assert series("sys.cpu.percent.avg") == [(ms[0], 0, 12.5), (ms[1], 1, 25.0)]
    assert series("sys.ram.used") == [(ms[0], 0, 3072.0 * MB), (ms[1], 1, 3584.0 * MB)]  # bytes
    assert series("sys.network.receive_bps") == [(ms[0], 0, 2.0 * MB), (ms[1], 1, 4.0 * MB)]
    assert series("sys.gpu.0.gpu_utilization") == [(ms[0], 0, 80.0), (ms[1], 1, 90.0)]
    assert series("sys.gpu.0.used_memory") == [(ms[0], 0, 1024.0 * MB), (ms[1], 1, 2048.0 * MB)]
    assert series("sys.gpu.0.power_usage") == [(ms[0], 0, 150_000.0), (ms[1], 1, 160_000.0)]  # mW, as NVML
    assert series("sys.loggerhub.process_memory_mb") == [(ms[0], 0, 410.0), (ms[1], 1, 420.0)]
    assert not [name for name in metrics if name.startswith("system")]


def test_console_is_comets_standard_output(delivered: tuple[Any, dict[str, Any], Path]) -> None:
    _, experiment, _ = delivered
    assert experiment["output"] == [
        {"stderr": False, "output": "epoch 1\nloss 0.5\n", "timestamp": round((T0 + 11) * 1000)},
        {"stderr": True, "output": "warning: slow\n", "timestamp": round((T0 + 12) * 1000)},
    ]


def test_context_is_comets_environment_messages(delivered: tuple[Any, dict[str, Any], Path]) -> None:
    _, experiment, _ = delivered
    details = experiment["system_details"]
    assert details["hostname"] == "node-7" and details["os"] == "Linux-6.1-x86_64"
    assert details["command"] == ["train.py", "--lr", "0.1"]
    assert details["python_version"] == "3.11.9" and details["python_exe"] == "/usr/bin/python3"
    assert details["env"] == {"CUDA_VISIBLE_DEVICES": "0"}
    assert experiment["system_info"] == {"cpu_count": 8, "gpus": "NVIDIA A100"}
    assert experiment["packages"] == ["numpy==2.1.0", "torch==2.5.1"]
    assert experiment["git"] == {"user": None, "root": None, "branch": "main", "parent": "a" * 40, "status": None,
                                 "origin": "https://example.org/team/repo.git", "repo_name": "repo"}
    assert experiment["others"]["git_dirty"] is True
    [patch] = [u for u in experiment["uploads"] if u["upload_type"] == "git-patch"]
    with zipfile.ZipFile(io.BytesIO(read_member(patch["archive"], patch["member"]))) as inner:
        assert inner.read("git_diff.patch").decode() == DIFF


def test_messages_pass_comet_upload_validation(delivered: tuple[Any, dict[str, Any], Path]) -> None:
    from comet_ml import schemas
    from loggerhub_comet._session import import_comet
    from loggerhub_comet.offline import iter_messages

    import_comet()
    validators = {
        "standard_output": schemas.get_standard_output_msg_validator(),
        "system_details": schemas.get_system_details_msg_validator(),
        "system_info": schemas.get_system_info_msg_validator(),
        "installed_packages": schemas.get_installed_packages_msg_validator(),
        "git_metadata": schemas.get_git_metadata_msg_validator(),
        "metric_msg": schemas.get_metric_msg_validator(),
        "file_upload": schemas.get_upload_msg_validator(),
    }
    _, experiment, _ = delivered
    seen = set()
    with zipfile.ZipFile(experiment["parts"][0]) as archive:
        for message in iter_messages(archive):
            if message["type"] in validators:
                validators[message["type"]].validate(message["payload"])
                seen.add(message["type"])
    assert seen == set(validators)


def test_rank_group_is_a_tag_and_other_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    experiment = _deliver(_journal(tmp_path, per_rank=True, group="job-42"), tmp_path)
    assert "group:job-42" in experiment["tags"]
    assert {k: experiment["others"][k] for k in ("group", "rank", "world_size")} == {
        "group": "job-42", "rank": 1, "world_size": 2}


def test_a_run_outside_a_group_has_no_group_fields(delivered: tuple[Any, dict[str, Any], Path]) -> None:
    _, experiment, _ = delivered
    assert not [t for t in experiment["tags"] if t.startswith("group:")]
    assert "group" not in experiment["others"]


def test_import_maps_them_back(delivered: tuple[Any, dict[str, Any], Path], tmp_path: Path) -> None:
    from loggerhub.importing import import_runs

    _, _, source = delivered
    report = import_runs("comet", str(source / "comet"), dir=tmp_path / "store")
    [imported] = [Path(p) for p in report.imported]
    records: dict[str, list[dict[str, Any]]] = {}
    for entry in JournalReader(imported).entries():
        records.setdefault(entry.type, []).append(entry.data)
    samples = [(e["ts"], e["step"], e["values"]) for e in records[codec.SYSTEM_METRICS]]
    assert [(ts, step) for ts, step, _ in samples] == [(T0 + 10, 0), (T0 + 20, 1)]
    for (_, _, values), expected in zip(samples, SAMPLES, strict=True):
        assert values == pytest.approx(expected)
    assert not records.get(codec.METRICS)  # the system series are not ordinary metrics
    console = [(e["stream"], e["lines"], e["ts"]) for e in records[codec.CONSOLE]]
    assert console == [("stdout", ["epoch 1", "loss 0.5"], T0 + 11), ("stderr", ["warning: slow"], T0 + 12)]
    [context] = [codec.run_context(e, imported) for e in records[codec.CONTEXT]]
    assert context.hostname == "node-7" and context.cpu_count == 8 and context.gpus == ("NVIDIA A100",)
    assert context.command == ("train.py", "--lr", "0.1") and context.cpu == "x86_64"
    assert dict(context.packages) == REQUIREMENTS
    assert dict(context.environment) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert context.git is not None and context.git.commit == "a" * 40 and context.git.dirty
    assert context.git.branch == "main" and context.git.untracked == ("notes.txt",)
    assert context.git.diff_path is not None and context.git.diff_path.read_text() == DIFF
    # comet_ml adds sys.already_imported_modules itself when this process imported torch or keras
    # before it (earlier tests in the same session): its own bookkeeping, reported as unmapped.
    assert not [r for r in report.unmapped if r.startswith(("comet: Other-tab", "comet: git", "comet: system"))
                and "sys.already_imported_modules" not in r]


@pytest.mark.parametrize("key", [
    "system/cpu_percent", "system/memory_used_mb", "system/memory_percent", "system/disk_used_mb",
    "system/disk_write_mb_s", "system/network_transmit_mb_s", "system/process_cpu_percent",
    "system/gpu/0/utilization_percent", "system/gpu/3/memory_total_mb", "system/gpu/1/power_w",
    "system/gpu/2/memory_percent", "system/gpu/0/temperature_c",
])
def test_every_system_key_maps_back(key: str) -> None:
    native = system_metric_name(key)
    assert native is not None and native[0].startswith("sys.")
    back = system_key(native[0])
    assert back is not None and back[0] == key and native[1] * back[1] == pytest.approx(1.0)
