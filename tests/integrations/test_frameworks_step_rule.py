"""One step rule across the framework adapters (docs/conventions.md, "Steps across frameworks").

The same schedule (6 optimizer steps, 3 per epoch) trained with Transformers, Lightning,
accelerate and Keras must put the loss of optimizer step k at step k, with the 1-based epoch,
in the journal and in TensorBoard: runs from different frameworks line up. Ultralytics reports
once per epoch: its records land on the points of the same series where an epoch ends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from integrations._frameworks import (
    BATCH,
    EPOCHS,
    OPTIMIZER_STEPS,
    SAMPLES,
    STEPS_PER_EPOCH,
    TRAININGS,
    expected_train_steps,
    loggerhub_kwargs,
    read_run,
    trained,
)

FRAMEWORKS = ("transformers", "lightning", "accelerate", "keras")


def test_importing_loggerhub_imports_no_framework() -> None:
    code = (
        "import sys, loggerhub, loggerhub.integrations, loggerhub.integrations._common; "
        f"print(sorted(set({FRAMEWORKS + ('pytorch_lightning', 'torch')!r}) & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_every_adapter_logs_the_same_steps_for_the_same_optimizer_steps(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    assert set(TRAININGS) == set(FRAMEWORKS)
    journal = {name: trained(name, tmp_path_factory).series()["train/loss"] for name in FRAMEWORKS}
    tensorboard = {name: trained(name, tmp_path_factory).tensorboard_steps("train/loss") for name in FRAMEWORKS}
    assert journal == dict.fromkeys(FRAMEWORKS, expected_train_steps())
    assert tensorboard == dict.fromkeys(FRAMEWORKS, list(range(1, OPTIMIZER_STEPS + 1)))


@pytest.mark.slow
def test_ultralytics_logs_each_epoch_at_the_optimizer_step_that_closed_it(
    tmp_path: Path, train_kwargs: Any
) -> None:
    from ultralytics import YOLO

    from loggerhub.integrations.ultralytics import attach
    from loggerhub.testing.ultralytics import detect_dataset

    data = detect_dataset(tmp_path / "data", train_images=SAMPLES)
    model = YOLO("yolo11n.yaml")
    attach(model, project="ultralytics", name="yolo", **loggerhub_kwargs(tmp_path))
    # The same schedule: nbs=batch makes one optimizer step per batch; no warmup ramp to skip any.
    model.train(data=str(data), **train_kwargs(tmp_path, "yolo", epochs=EPOCHS, batch=BATCH, nbs=BATCH,
                                               warmup_epochs=0))
    logged = read_run(tmp_path)
    epoch_ends = [(step, epoch) for step, epoch in expected_train_steps() if step % STEPS_PER_EPOCH == 0]
    assert epoch_ends == [(3, 1), (6, 2)]
    series = logged.series()
    for key in ("train/box_loss", "lr/pg0", "metrics/mAP50(B)", "val/box_loss"):
        assert series[key] == epoch_ends, (key, series[key])
    assert logged.tensorboard_steps("train/box_loss") == [step for step, _ in epoch_ends]
    assert series["best/metrics/mAP50(B)"] == [epoch_ends[-1]]
