"""The Lightning adapter, end to end: a 2-layer LightningModule trained on CPU."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from integrations._frameworks import (
    EPOCHS,
    STEPS_PER_EPOCH,
    check_ended,
    check_series,
    check_stopped,
    expected_train_steps,
    read_run,
    train_lightning,
    trained,
)

from loggerhub.journal import JournalReader

pytestmark = pytest.mark.filterwarnings("error::loggerhub.integrations.ultralytics.AdapterWarning")

EPOCH_ENDS = [(STEPS_PER_EPOCH * epoch, epoch) for epoch in range(1, EPOCHS + 1)]


@pytest.fixture
def sigint_restored() -> Iterator[None]:
    """Lightning ignores SIGINT from its Ctrl+C handler on: give pytest its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.slow
def test_fit_logs_metrics_hyperparams_images_and_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> None:
    logged = trained("lightning", tmp_path_factory)
    # Lightning hands its loggers the step before (0 for the first optimizer step) and an `epoch`
    # metric: the adapter logs the optimizer steps completed and the 1-based epoch as a field.
    check_series(logged, {"train/loss": expected_train_steps(), "val/loss": EPOCH_ENDS})
    assert "epoch" not in logged.series()
    assert logged.params() == {"hidden": 8, "lr": 0.01}
    assert set(logged.tensorboard.hparams) == {"hidden", "lr"}
    # self.logger.experiment.log_image inside the LightningModule reaches the run.
    assert [(d["key"], d["step"]) for d in logged.of_type("image")] == [("val/sample", s) for s, _ in EPOCH_ENDS]
    assert [s.step for s in logged.tensorboard.images["val/sample"]] == [3, 6]
    # ModelCheckpoint writes into the run directory; each file is logged when it first appears.
    assert logged.checkpoints() == ["checkpoints/epoch=0-step=3.ckpt", "checkpoints/epoch=1-step=6.ckpt"]
    assert (logged.run_dir / "checkpoints" / "epoch=1-step=6.ckpt").is_file()
    assert [d["step"] for d in logged.of_type("checkpoint")] == [3, 6]
    assert logged.of_type("rejected") == []
    check_ended(logged, "FINISHED")


@pytest.mark.slow
def test_fit_that_raises_ends_failed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="mid-epoch"):
        train_lightning(tmp_path, stop="error")
    check_stopped(read_run(tmp_path), "error")


@pytest.mark.slow
def test_ctrl_c_ends_killed(tmp_path: Path, sigint_restored: None) -> None:
    # Lightning's interrupt path: finalize("failed"), then sys.exit(1).
    with pytest.raises(SystemExit):
        train_lightning(tmp_path, stop="interrupt")
    check_stopped(read_run(tmp_path), "interrupt")


def test_experiment_is_a_no_op_off_rank_zero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lightning.pytorch.loggers.logger import DummyExperiment
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from loggerhub.integrations.lightning import LoggerhubLogger

    logger = LoggerhubLogger(dir=str(tmp_path))
    # Lightning sets this attribute in every process it launches; a CPU test cannot launch ranks
    # cheaply, so it plays rank 1 by setting it as Lightning would.
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert isinstance(logger.experiment, DummyExperiment)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert not list(tmp_path.iterdir())  # nothing started on rank 1


def test_logging_after_finalize_continues_the_same_run(tmp_path: Path) -> None:
    # trainer.test(...) after fit: Lightning finalized the logger, then logs again.
    from loggerhub.integrations.lightning import LoggerhubLogger

    logger = LoggerhubLogger(dir=str(tmp_path), backends=[])
    logger.log_metrics({"train/loss": 1.0}, step=3)
    run_dir = logger.log_dir
    logger.finalize("success")
    logger.log_metrics({"test/loss": 2.0}, step=3)
    assert logger.log_dir == run_dir
    logger.finalize("success")

    entries = JournalReader(run_dir).entries()
    assert [e.type for e in entries if e.type in ("run_start", "run_resume", "run_end", "metrics")] == [
        "run_start", "metrics", "run_end", "run_resume", "metrics", "run_end"]

