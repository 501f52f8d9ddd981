"""Distributed training: rank zero only by default, one run per rank in one group with
``per_rank=True``, the group id rules, ``loggerhub runs --group`` / ``show <group>``, and a killed
rank ended by ``loggerhub sync``; end to end under a real ``torchrun`` (gloo, CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loggerhub
from loggerhub import codec
from loggerhub import journal as j
from loggerhub.cli import main
from loggerhub.config import ConfigError
from loggerhub.index import RunIndex
from loggerhub.run import LoggerhubWarning, rank_group

# Everything a launcher (torchrun, SLURM, a shell) or the user's shell may have set.
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
                     "SLURM_JOB_ID", "SLURM_STEP_ID", "MASTER_ADDR", "MASTER_PORT", "LOGGERHUB_PER_RANK",
                     "LOGGERHUB_GROUP", "LOGGERHUB_BACKENDS", "LOGGERHUB_DIR")


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in _LAUNCH_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def _launch(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int = 4, **extra: str) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    for variable, value in extra.items():
        monkeypatch.setenv(variable, value)


def _run_start(run_dir: Path) -> dict[str, Any]:
    return next(j.JournalReader(run_dir).entries()).data


def _all_run_dirs(store: Path) -> list[Path]:
    return sorted(path.parent for path in store.glob("*/*/journal"))


# -- the group id -------------------------------------------------------------------------------


def test_torchrun_run_id_is_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "5c1e0c6e-3a4b-4f7e-9d1f-6e2b8a0c1d2e")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert rank_group() == "5c1e0c6e-3a4b-4f7e-9d1f-6e2b8a0c1d2e"
    # A user's --rdzv-id may hold anything; the group keeps what trackers take in names and paths.
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "my job/3")
    assert rank_group() == "my-job-3"


def test_torchrun_default_rdzv_id_none_is_not_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchrun's static rendezvous leaves --rdzv-id at its default, the literal "none", for every job.
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "1")
    assert rank_group() == "slurm-4242.1"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert rank_group().startswith("job-")


_PRINT_GROUP = "from loggerhub.run import rank_group; print(rank_group())"


def _launcher(*ranks: int) -> list[str]:
    """The groups printed by ``ranks`` started by one shell, as a launcher starts them; the
    trailing ``wait`` keeps the shell from exec-ing into its last command."""
    rendezvous = "MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2"
    commands = " ".join(f"RANK={rank} {rendezvous} {sys.executable} -c '{_PRINT_GROUP}' &" for rank in ranks)
    env = {key: value for key, value in os.environ.items() if key not in _LAUNCH_VARIABLES}
    done = subprocess.run(["sh", "-c", f"{commands} wait"], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    return done.stdout.split()


def test_without_a_launcher_id_the_ranks_of_one_launch_share_a_group_that_the_next_launch_does_not() -> None:
    first, second = _launcher(0, 1), _launcher(0, 1)
    assert len(set(first)) == 1 and first[0].startswith("job-"), first
    assert len(set(second)) == 1, second
    # Same MASTER_ADDR:MASTER_PORT, same machine: still another job.
    assert first[0] != second[0]


# -- per_rank runs ------------------------------------------------------------------------------


def test_by_default_a_non_zero_rank_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, 1, TORCHELASTIC_RUN_ID="job-a")
    with loggerhub.init("p", "train", dir=tmp_path) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert _all_run_dirs(tmp_path) == []
    _launch(monkeypatch, 0, TORCHELASTIC_RUN_ID="job-a")
    with loggerhub.init("p", "train", dir=tmp_path) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    (only,) = _all_run_dirs(tmp_path)
    start = _run_start(only)
    assert start["name"] == "train" and "group" not in start and "rank" not in start


def test_per_rank_journals_the_group_rank_and_world_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, 3, TORCHELASTIC_RUN_ID="job-b")
    with loggerhub.init("p", "train", dir=tmp_path, per_rank=True) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.name == "train-rank3" and run.id.startswith("train-rank3-")
    start = _run_start(run.dir)
    assert (start["group"], start["rank"], start["world_size"]) == ("job-b", 3, 4)
    info = codec.run_info(start, run.dir, {})
    assert (info.group, info.rank, info.world_size) == ("job-b", 3, 4)
    summary = json.loads(run.paths.summary.read_text())
    assert (summary["group"], summary["rank"], summary["world_size"]) == ("job-b", 3, 4)


def test_per_rank_and_group_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, 1, TORCHELASTIC_RUN_ID="job-c", LOGGERHUB_PER_RANK="1", LOGGERHUB_GROUP="sweep-7")
    with loggerhub.init("p", dir=tmp_path) as run:
        pass
    start = _run_start(run.dir)
    assert (start["group"], start["rank"], start["name"]) == ("sweep-7", 1, "run-rank1")


def test_a_group_that_trackers_cannot_take_is_a_config_error(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, 0)
    with pytest.raises(ConfigError, match="group="):
        loggerhub.init("p", dir=tmp_path, per_rank=True, group="a/b")
    assert _all_run_dirs(tmp_path) == []


def test_a_group_outside_a_distributed_job_is_ignored_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(LoggerhubWarning, match="group='g1' is ignored"):
        run = loggerhub.init("p", dir=tmp_path, per_rank=True, group="g1")
    run.finish()
    assert "group" not in _run_start(run.dir)


def test_a_resumed_rank_run_stays_in_its_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _launch(monkeypatch, 2, TORCHELASTIC_RUN_ID="job-d")
    with loggerhub.init("p", "train", dir=tmp_path, per_rank=True) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another-job")
    with loggerhub.init("p", dir=tmp_path, per_rank=True, resume=run.dir) as resumed:
        resumed.log_metrics({"loss": 0.5}, step=1)
    (indexed,) = RunIndex(tmp_path).runs()
    assert (indexed.group, indexed.rank, indexed.status) == ("job-d", 2, "FINISHED")


@pytest.mark.slow
def test_rank_and_group_from_an_initialised_process_group(tmp_path: Path) -> None:
    # torch.multiprocessing.spawn, or init_process_group(rank=..., world_size=...), sets no RANK:
    # the rank and world size come from torch.distributed, the group from rank zero's broadcast.
    # A real gloo group of one process, so that this process can be all of it.
    pytest.importorskip("torch")
    import socket

    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with loggerhub.init("p", "spawned", dir=tmp_path, per_rank=True) as run:
            run.log_metrics({"loss": 1.0}, step=0)
    finally:
        dist.destroy_process_group()
    start = _run_start(run.dir)
    assert (start["rank"], start["world_size"], start["name"]) == (0, 1, "spawned-rank0")
    assert start["group"].startswith("job-") and len(start["group"]) == len("job-") + 16


# -- the CLI: runs --group, show <group>, sync of a killed rank ----------------------------------


_KILLED_RANK = textwrap.dedent("""
    import os, signal, sys
    import loggerhub
    run = loggerhub.init("p", "train", dir=sys.argv[1], per_rank=True)
    run.log_metrics({"train/loss": 0.25}, step=5)
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _group_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ranks 0 and 1 of group job-e finished, rank 2 SIGKILLed; a run of another group and a
    plain run beside them."""
    store = tmp_path / "runs"
    for rank in (0, 1):
        _launch(monkeypatch, rank, world_size=3, TORCHELASTIC_RUN_ID="job-e")
        with loggerhub.init("p", "train", dir=store, per_rank=True) as run:
            for step in range(6):
                run.log_metrics({"train/loss": 1 / (step + 1 + rank)}, step=step)
            run.log_metrics({"eval/acc": 0.5 + rank / 10}, step=5)
    env = {**os.environ, "RANK": "2", "WORLD_SIZE": "3", "TORCHELASTIC_RUN_ID": "job-e"}
    killed = subprocess.run([sys.executable, "-c", _KILLED_RANK, str(store)], env=env, timeout=120,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _launch(monkeypatch, 0, world_size=2, TORCHELASTIC_RUN_ID="job-f")
    loggerhub.init("p", "other", dir=store, per_rank=True).finish()
    monkeypatch.delenv("RANK")
    loggerhub.init("p", "plain", dir=store).finish()
    return store


def test_runs_group_lists_the_group_and_show_reads_it_as_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    store = _group_store(tmp_path, monkeypatch)
    capsys.readouterr()

    assert main(["--dir", str(store), "runs", "--group", "job-e"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:5] == ["run", "project", "name", "group/rank", "status"]
    rows = sorted(line.split()[2:5] for line in listed[1:])
    assert rows == [["train-rank0", "job-e/0", "FINISHED"], ["train-rank1", "job-e/1", "FINISHED"],
                    ["train-rank2", "job-e/2", "CRASHED"]]

    assert main(["--dir", str(store), "runs"]) == 0
    everything = capsys.readouterr().out
    assert "job-f/0" in everything
    plain = next(line for line in everything.splitlines() if " plain " in line)
    assert plain.split()[3] == "-"

    assert main(["--dir", str(store), "show", "job-e"]) == 0
    shown = capsys.readouterr().out
    assert "group    job-e  (3 runs, project p, world size 3)" in shown
    table = {line.split()[0]: line.split() for line in shown.splitlines() if line.startswith("  ")}
    assert table["0"][2:6] == ["FINISHED", "5", "7", "0.5"]  # last step, points, eval/acc
    assert table["1"][2:6] == ["FINISHED", "5", "7", "0.6"]
    assert table["2"][2:6] == ["CRASHED", "5", "1", "-"]
    assert "failures" in shown and "loggerhub sync train-rank2-" in shown

    crashed = RunIndex(store).runs(group="job-e")[-1]
    assert crashed.rank == 2
    # The group as one: each rank delivered (ranks 0 and 1 have nothing left), rank 2 ended.
    assert main(["--dir", str(store), "sync", "job-e"]) == 0
    synced = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in synced] == [f"train-rank{rank}" for rank in range(3)]
    assert main(["--dir", str(store), "show", "job-e"]) == 0
    shown = capsys.readouterr().out
    assert "rank 2" in shown and "KILLED  Crashed: the logging process died" in shown


def test_show_of_an_unknown_group_or_run_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path), "show", "job-nothing"]) == 2
    assert "no run 'job-nothing'" in capsys.readouterr().err


# -- a real torchrun ----------------------------------------------------------------------------

# One torchrun of 4 ranks, three jobs in a row (importing torch in 4 processes is most of the
# cost, so the launch is shared). argv: the store, the per_rank job's backends and options (JSON),
# and the rank that SIGKILLs itself at its end.
#   default/    rank zero only, the default;
#   broadcast/  per_rank=True with TORCHELASTIC_RUN_ID removed, as a launcher with no job id: the
#               group comes from rank zero through torch.distributed;
#   group/      per_rank=True to the trackers, grouped by TORCHELASTIC_RUN_ID; one rank is
#               SIGKILLed after the collectives (torchrun tears every rank down once one dies, so
#               it waits for the others to end their runs first).
# Each job is a Linear model under DDP on gloo, each rank logging its loss and an eval metric.
_TRAINING = textwrap.dedent("""
    import json, os, signal, sys, time
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    import loggerhub

    store, backends, options, kill_rank = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    launcher_id = os.environ["TORCHELASTIC_RUN_ID"]
    STEPS = 5

    def train(run):
        torch.manual_seed(0)
        model = DistributedDataParallel(torch.nn.Linear(4, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        inputs = torch.randn(32, 4, generator=torch.Generator().manual_seed(rank))
        targets = inputs.sum(dim=1, keepdim=True)
        for step in range(STEPS):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            loss.backward()
            optimizer.step()
            run.log_metrics({"train/loss": loss.item()}, step=step)
        with torch.no_grad():
            run.log_metrics({"eval/mse": torch.nn.functional.mse_loss(model(inputs), targets).item()},
                            step=STEPS - 1)

    def note(job, run):
        with open(os.path.join(store, job, f"rank{rank}.json"), "w") as handle:
            json.dump({"launcher_id": launcher_id, "dir": str(run.dir)}, handle)

    run = loggerhub.init("ddp", "tiny", dir=os.path.join(store, "default"), config={"lr": 0.05})
    train(run)
    run.finish()
    note("default", run)

    del os.environ["TORCHELASTIC_RUN_ID"]
    run = loggerhub.init("ddp", "tiny", dir=os.path.join(store, "broadcast"), per_rank=True)
    run.log_metrics({"rank": float(rank)}, step=0)
    run.finish()
    note("broadcast", run)
    os.environ["TORCHELASTIC_RUN_ID"] = launcher_id

    run = loggerhub.init("ddp", "tiny", dir=os.path.join(store, "group"), backends=backends.split(","),
                         options=json.loads(options), per_rank=True, config={"lr": 0.05})
    train(run)
    note("group", run)
    dist.barrier()
    dist.destroy_process_group()
    if rank == kill_rank:
        run.log_metrics({"train/loss": 0.0}, step=STEPS)  # after the collectives: journaled, then killed
        run.flush()
        others = [os.path.join(store, f"finished{r}") for r in range(world_size) if r != rank]
        deadline = time.monotonic() + 120
        while not all(map(os.path.exists, others)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    run.finish()
    open(os.path.join(store, f"finished{rank}"), "w").close()
""")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    if not _installed("loggerhub_mlflow"):
        yield None
        return
    from loggerhub_mlflow.testing import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server.uri


class Job:
    """The torchrun of _TRAINING: what it printed and where its three stores are."""

    def __init__(self, done: subprocess.CompletedProcess[str], store: Path, seconds: float,
                 tensorboard: Path | None, mlflow_uri: str | None) -> None:
        self.done, self.store, self.seconds = done, store, seconds
        self.tensorboard, self.mlflow_uri = tensorboard, mlflow_uri
        self.launcher_id = json.loads((store / "group" / "rank0.json").read_text())["launcher_id"]

    def runs(self, job: str, group: str | None = None) -> list[Any]:
        return RunIndex(self.store / job).runs(group=group)


KILLED_RANK = 2


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str | None) -> Job:
    if not _installed("torch"):
        pytest.skip("torch is not installed")
    tmp_path = tmp_path_factory.mktemp("torchrun")
    store = tmp_path / "runs"
    for job in ("default", "broadcast", "group"):
        (store / job).mkdir(parents=True)
    backends, options = ["local"], {}
    tensorboard = None
    if _installed("loggerhub_tensorboard"):
        tensorboard = tmp_path / "tensorboard"
        backends.append("tensorboard")
        options["tensorboard"] = {"logdir": str(tensorboard)}
    if mlflow_uri is not None:
        backends.append("mlflow")
        options["mlflow"] = {"tracking_uri": mlflow_uri}
    script = tmp_path / "train.py"
    script.write_text(_TRAINING, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key not in _LAUNCH_VARIABLES}
    # One thread per rank: 4 ranks share 2 cores.
    env.update(OMP_NUM_THREADS="1", MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "--max_restarts=0",
         str(script), str(store), ",".join(backends), json.dumps(options), str(KILLED_RANK)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    seconds = time.monotonic() - started
    print(f"\ntorchrun, 4 ranks, 3 jobs (the last to {', '.join(backends)}): {seconds:.1f}s")
    assert (store / "group" / "rank0.json").exists(), done.stderr[-3000:]
    return Job(done, store, seconds, tensorboard, mlflow_uri)


@pytest.mark.slow
def test_torchrun_logs_rank_zero_alone_by_default(torchrun_job: Job) -> None:
    store = torchrun_job.store / "default"
    (only,) = _all_run_dirs(store)
    start = _run_start(only)
    assert start["name"] == "tiny" and "group" not in start
    assert json.loads((store / "rank0.json").read_text())["dir"] == str(only)
    for rank in (1, 2, 3):  # the other ranks trained and logged, into nothing
        assert json.loads((store / f"rank{rank}.json").read_text())["dir"] == os.devnull
    assert [(run.status, run.points) for run in torchrun_job.runs("default")] == [("FINISHED", 6)]


@pytest.mark.slow
def test_torchrun_group_from_rank_zero_when_the_launcher_has_no_id(torchrun_job: Job) -> None:
    runs = torchrun_job.runs("broadcast")
    assert sorted((run.rank or 0, run.rank) for run in runs) == [(rank, rank) for rank in range(4)]
    (group,) = {run.group for run in runs}
    assert group is not None and group.startswith("job-") and group != torchrun_job.launcher_id


@pytest.mark.slow
def test_torchrun_per_rank_runs_share_the_launchers_group(torchrun_job: Job,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    job = torchrun_job
    # The killed rank died of SIGKILL: torchrun says so and fails the job.
    assert job.done.returncode != 0
    assert "Signal 9 (SIGKILL)" in job.done.stderr, job.done.stderr[-3000:]
    assert job.launcher_id and job.launcher_id != "none"
    runs = job.runs("group")
    assert len(runs) == 4
    assert sorted((run.group or "", run.rank or 0) for run in runs) == [(job.launcher_id, rank) for rank in range(4)]
    for run in runs:
        start = _run_start(run.dir)
        assert start["world_size"] == 4 and start["name"] == f"tiny-rank{run.rank}"
        if run.rank == KILLED_RANK:  # 5 losses, the eval, and the last loss logged before the kill
            assert (run.status, run.points) in (("CRASHED", 7), ("KILLED", 7))  # KILLED once synced
        else:
            assert (run.status, run.points) == ("FINISHED", 6)

    capsys.readouterr()
    assert main(["--dir", str(job.store / "group"), "runs", "--group", job.launcher_id]) == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    assert sorted(line.split()[3] for line in listed) == [f"{job.launcher_id}/{rank}" for rank in range(4)]


def _killed(job: Job) -> Any:
    (killed,) = [run for run in job.runs("group", job.launcher_id) if run.rank == KILLED_RANK]
    return killed


@pytest.mark.slow
def test_torchrun_killed_rank_is_ended_by_sync(torchrun_job: Job, capsys: pytest.CaptureFixture[str]) -> None:
    job, store = torchrun_job, str(torchrun_job.store / "group")
    killed = _killed(job)
    synced = main(["--dir", store, "sync", killed.run_id, "--timeout", "120"])
    out = capsys.readouterr().out
    assert synced == 0, out
    assert _killed(job).status == "KILLED"
    end = [entry.data for entry in j.JournalReader(killed.dir).entries() if entry.type == codec.RUN_END]
    assert [record["error"]["type"] for record in end] == ["Crashed"]
    assert main(["--dir", store, "show", job.launcher_id]) == 0
    shown = capsys.readouterr().out
    assert f"rank 2  {killed.run_id}  KILLED  Crashed:" in shown


@pytest.mark.slow
def test_torchrun_group_in_mlflow_is_a_parent_with_a_nested_run_per_rank(torchrun_job: Job) -> None:
    job = torchrun_job
    if job.mlflow_uri is None:
        pytest.skip("loggerhub-mlflow is not installed")
    from mlflow.tracking import MlflowClient

    from loggerhub.delivery import sync

    # The killed rank ended by sync (again, if its test did it first: a second sync adds nothing).
    sync(_killed(job).dir, ["mlflow"], timeout=120)
    client = MlflowClient(job.mlflow_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000)
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 4, [(run.info.run_name, run.data.tags) for run in runs]
    (parent_id,) = {run.data.tags["mlflow.parentRunId"] for run in children}
    parents = [run for run in runs if run.info.run_id == parent_id]
    assert len(parents) == 1 and len(runs) == 5  # the parent exactly once, across 4 delivery processes
    assert job.launcher_id in parents[0].info.run_name
    statuses = sorted(child.info.status for child in children)
    assert statuses == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]
    for child in children:
        losses = client.get_metric_history(child.info.run_id, "train/loss")
        assert len({point.step for point in losses}) >= 5


@pytest.mark.slow
def test_torchrun_group_in_tensorboard_is_a_subdirectory_per_rank(torchrun_job: Job) -> None:
    job = torchrun_job
    if job.tensorboard is None:
        pytest.skip("loggerhub-tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for rank in range(4):
        folder = job.tensorboard / job.launcher_id / f"rank_{rank}"
        assert folder.is_dir(), sorted(str(p.relative_to(job.tensorboard)) for p in job.tensorboard.rglob("*"))
        events = EventAccumulator(str(folder))
        events.Reload()
        assert len(events.Scalars("train/loss")) >= 5, events.Tags()
