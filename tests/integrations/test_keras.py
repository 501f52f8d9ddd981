"""The Keras 3 adapter, end to end: a Sequential model trained on CPU (torch backend)."""

from __future__ import annotations

from pathlib import Path

import pytest
from integrations._frameworks import (
    EPOCHS,
    OPTIMIZER_STEPS,
    STEPS_PER_EPOCH,
    check_ended,
    check_series,
    check_stopped,
    expected_train_steps,
    read_run,
    train_keras,
    trained,
)

pytestmark = pytest.mark.filterwarnings("error::loggerhub.integrations.ultralytics.AdapterWarning")

EPOCH_ENDS = [(STEPS_PER_EPOCH * epoch, epoch) for epoch in range(1, EPOCHS + 1)]


@pytest.mark.slow
def test_fit_logs_batches_epochs_validation_config_and_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> None:
    logged = trained("keras", tmp_path_factory)
    check_series(logged, {
        "train/loss": expected_train_steps(),
        "train/mae": expected_train_steps(),
        "epoch/loss": EPOCH_ENDS,
        "epoch/mae": EPOCH_ENDS,
        "val/loss": EPOCH_ENDS,
        "val/mae": EPOCH_ENDS,
        "test/loss": [(OPTIMIZER_STEPS, None)],  # model.evaluate after fit, in the same run
    })
    params = logged.params()
    assert params["optimizer/name"] == "sgd"
    assert params["optimizer/learning_rate"] == pytest.approx(0.01)
    assert params["fit/epochs"] == EPOCHS
    assert "optimizer/learning_rate" in logged.tensorboard.hparams
    assert logged.checkpoints() == ["checkpoints/epoch1.keras", "checkpoints/epoch2.keras"]
    assert {f"checkpoints/checkpoints/epoch{n}.keras" for n in (1, 2)} <= logged.tensorboard.files
    check_ended(logged, "FINISHED")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["error", "interrupt"])
def test_fit_that_raises_ends_failed_and_ctrl_c_ends_killed(tmp_path: Path, stop: str) -> None:
    with pytest.raises(BaseException) as raised:
        train_keras(tmp_path, stop=stop)
    assert raised.type.__name__ == ("Boom" if stop == "error" else "KeyboardInterrupt")
    check_stopped(read_run(tmp_path), stop)


def test_log_every_n_steps_must_not_be_negative() -> None:
    from loggerhub.integrations.keras import LoggerhubCallback

    with pytest.raises(ValueError, match="log_every_n_steps"):
        LoggerhubCallback(log_every_n_steps=-1)
