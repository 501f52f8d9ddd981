"""The Transformers adapter, end to end: a tiny GPT-2 built from its config, trained on CPU."""

from __future__ import annotations

import warnings
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
    loggerhub_kwargs,
    read_run,
    train_transformers,
    trained,
)

pytestmark = pytest.mark.filterwarnings("error::loggerhub.integrations.ultralytics.AdapterWarning")

EPOCH_ENDS = [(STEPS_PER_EPOCH * epoch, epoch) for epoch in range(1, EPOCHS + 1)]
LAST = [(OPTIMIZER_STEPS, EPOCHS)]


@pytest.mark.slow
def test_trainer_logs_metrics_eval_predict_summary_config_and_checkpoints(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    logged = trained("transformers", tmp_path_factory)
    check_series(logged, {
        "train/loss": expected_train_steps(),
        "train/learning_rate": expected_train_steps(),
        "train/grad_norm": expected_train_steps(),
        "eval/loss": EPOCH_ENDS,
        "eval/runtime": EPOCH_ENDS,
        "train/train_runtime": LAST,
        "train/train_samples_per_second": LAST,
        "train/total_flos": LAST,
        "train/train_loss": LAST,
        "test/loss": LAST,  # trainer.predict after train, in the same run
    })
    assert not any(key.endswith("epoch") for key in logged.series())  # the epoch is the record's field
    params = logged.params()
    assert params["learning_rate"] == pytest.approx(1e-3)
    assert params["num_train_epochs"] == EPOCHS
    assert params["model/n_embd"] == 16
    journal = "".join(p.read_text() for p in (logged.run_dir / "journal").iterdir() if p.is_file())
    assert "hf_secret_token_value" not in journal
    assert "learning_rate" in logged.tensorboard.hparams
    assert logged.checkpoints() == [f"checkpoint-{STEPS_PER_EPOCH}", f"checkpoint-{OPTIMIZER_STEPS}"]
    assert any(f.startswith(f"checkpoints/checkpoint-{OPTIMIZER_STEPS}/") for f in logged.tensorboard.files)
    assert [(d["phase"], d["step"]) for d in logged.of_type("event")] == [
        ("train_start", 0), ("train_end", OPTIMIZER_STEPS)]
    check_ended(logged, "FINISHED")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["error", "interrupt"])
def test_training_that_raises_ends_failed_and_ctrl_c_ends_killed(tmp_path: Path, stop: str) -> None:
    with pytest.raises(BaseException) as raised:
        train_transformers(tmp_path, stop=stop, evaluate=False)
    assert raised.type.__name__ == ("Boom" if stop == "error" else "KeyboardInterrupt")
    check_stopped(read_run(tmp_path), stop)


def test_report_to_a_tracker_loggerhub_delivers_to_warns_about_double_logging(tmp_path: Path) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from loggerhub.integrations.transformers import LoggerhubCallback
    from loggerhub.integrations.ultralytics import AdapterWarning

    def start(report_to: list[str]) -> list[str]:
        args = TrainingArguments(output_dir=str(tmp_path / "hf"), report_to=report_to, use_cpu=True)
        kwargs = loggerhub_kwargs(tmp_path) | {"backends": ["tensorboard"]}
        with warnings.catch_warnings(record=True) as caught, LoggerhubCallback(**kwargs) as callback:
            warnings.simplefilter("always")
            callback.on_train_begin(args, TrainerState(), TrainerControl())
        return [str(w.message) for w in caught if issubclass(w.category, AdapterWarning)]

    (message,) = start(["tensorboard"])
    assert "report_to=['tensorboard']" in message and "twice" in message
    assert start(["none"]) == []
