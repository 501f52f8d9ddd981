"""One tiny training per framework, built from code on CPU, for the adapters' end-to-end tests.

Every training runs the same schedule: 12 samples in batches of 4, 2 epochs, so 6 optimizer steps,
3 per epoch; the loss is logged after every optimizer step under ``train/loss``. ``stop`` makes
the second batch of the first epoch raise (``"error"``: a RuntimeError; ``"interrupt"``: the
framework's Ctrl+C path). The environment is set at import, before any framework is imported:
no hub download, Keras on its torch backend.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections import defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from loggerhub.journal import Entry, JournalReader  # noqa: E402

SAMPLES, BATCH, EPOCHS = 12, 4, 2
STEPS_PER_EPOCH = SAMPLES // BATCH
OPTIMIZER_STEPS = STEPS_PER_EPOCH * EPOCHS
#: The optimizer step during which ``stop`` fires: the second batch of the first epoch.
STOP_AT = 2


class Boom(RuntimeError):
    """The error a failing training raises."""


def stop_now(stop: str | None) -> None:
    if stop == "error":
        raise Boom("training failed mid-epoch")
    if stop == "interrupt":
        raise KeyboardInterrupt


@dataclass
class Logged:
    """A run as its journal and its TensorBoard logdir hold it."""

    run_dir: Path
    entries: list[Entry]
    tensorboard: Any  # loggerhub_tensorboard.reader.TensorBoardRun

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.entries if e.type == kind]

    def series(self) -> dict[str, list[tuple[int, int | None]]]:
        """key -> [(step, epoch)] in journal order."""
        found: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
        for data in self.of_type("metrics"):
            for key in data["values"]:
                found[key].append((data["step"], data.get("epoch")))
        return dict(found)

    def params(self) -> dict[str, Any]:
        merged: dict[str, Any] = dict(self.of_type("run_start")[0]["config"])
        for data in self.of_type("params"):
            merged.update(data["params"])
        return merged

    def statuses(self) -> list[str]:
        return [d["status"] for d in self.of_type("run_end")]

    def checkpoints(self) -> list[str]:
        return [d["name"] for d in self.of_type("checkpoint")]

    def tensorboard_steps(self, tag: str) -> list[int]:
        return [s.step for s in self.tensorboard.scalars.get(tag, [])]


def loggerhub_kwargs(root: Path) -> dict[str, Any]:
    """``loggerhub.init`` keyword arguments: runs under ``root/runs``, delivered to TensorBoard."""
    return {
        "backends": ["tensorboard"],
        "dir": str(root / "runs"),
        "options": {"tensorboard": {"logdir": str(root / "tensorboard" / "{project}" / "{run_id}")}},
        "drain_timeout": 60.0,
    }


def read_run(root: Path) -> Logged:
    """The one run logged under ``root``, from its journal and its TensorBoard logdir."""
    from loggerhub_tensorboard.reader import read_logdir

    (run_dir,) = [p for p in (root / "runs").glob("*/*") if (p / "journal").is_dir()]
    entries = list(JournalReader(run_dir).entries())
    return Logged(run_dir, entries, read_logdir(root / "tensorboard" / run_dir.parent.name / run_dir.name))


def dataset() -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 4, generator=generator)
    return x, x.sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------- Transformers


def train_transformers(root: Path, *, stop: str | None = None, log_checkpoints: bool = False,
                       report_to: str = "none", evaluate: bool = True) -> Logged:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from loggerhub.integrations.transformers import LoggerhubCallback

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    ids = torch.randint(0, 32, (SAMPLES, 8), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]

    class Stop(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == STOP_AT:
                stop_now(stop)

    args = TrainingArguments(
        output_dir=str(root / "hf"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        num_train_epochs=EPOCHS, logging_steps=1, eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch" if log_checkpoints else "no", report_to=report_to, use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0, learning_rate=1e-3,
        hub_token="hf_secret_token_value",  # noqa: S106 - a fake secret that must be redacted
    )
    with LoggerhubCallback(project="transformers", name="tiny-gpt2", log_checkpoints=log_checkpoints,
                           **loggerhub_kwargs(root)) as callback:
        trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:BATCH],
                          callbacks=[callback, Stop()])
        trainer.train()
        if evaluate:
            trainer.predict(data[:BATCH])
    return read_run(root)


# --------------------------------------------------------------------------- Lightning


def train_lightning(root: Path, *, stop: str | None = None, log_checkpoints: bool = False) -> Logged:
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from loggerhub.integrations.lightning import LoggerhubLogger

    class TwoLayers(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"hidden": 8, "lr": 0.01})
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.global_step + 1 == STOP_AT:
                stop_now(stop)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

        def on_validation_epoch_end(self) -> None:
            import numpy as np

            self.logger.experiment.log_image("val/sample", np.zeros((4, 4), dtype=np.uint8))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    x, y = dataset()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    logger = LoggerhubLogger(project="lightning", name="two-layers", log_checkpoints=log_checkpoints,
                             **loggerhub_kwargs(root))
    trainer = L.Trainer(
        max_epochs=EPOCHS, logger=logger, log_every_n_steps=1, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=log_checkpoints,
        num_sanity_val_steps=0,
    )
    trainer.fit(TwoLayers(), loader, DataLoader(TensorDataset(x[:BATCH], y[:BATCH]), batch_size=BATCH))
    return read_run(root)


# --------------------------------------------------------------------------- accelerate


def train_accelerate(root: Path, *, stop: str | None = None, log_checkpoints: bool = False,
                     by_name: bool = False) -> Logged:
    import matplotlib.figure
    import numpy as np
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    from loggerhub.integrations.accelerate import LoggerhubTracker, register

    torch.manual_seed(0)
    x, y = dataset()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    if by_name:
        register()
        tracker = None
        accelerator = Accelerator(log_with="loggerhub", cpu=True)
        accelerator.init_trackers("accelerate", config={"lr": 0.01, "api_key": "sk-do-not-log-me"},
                                  init_kwargs={"loggerhub": {"name": "by-name", **loggerhub_kwargs(root)}})
    else:
        tracker = LoggerhubTracker("accelerate", name="plain-loop", **loggerhub_kwargs(root))
        accelerator = Accelerator(log_with=[tracker], cpu=True)
        accelerator.init_trackers("ignored", config={"lr": 0.01, "api_key": "sk-do-not-log-me"})
    model, optimizer, loader = accelerator.prepare(model, optimizer,
                                                   DataLoader(TensorDataset(x, y), batch_size=BATCH))
    run_tracker = accelerator.get_tracker("loggerhub")

    with run_tracker:
        step = 0
        for epoch in range(1, EPOCHS + 1):
            for inputs, targets in loader:
                if step + 1 == STOP_AT:
                    stop_now(stop)
                loss = torch.nn.functional.mse_loss(model(inputs), targets)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                accelerator.log({"train/loss": loss.item()}, step=step, log_kwargs={"loggerhub": {"epoch": epoch}})
            run_tracker.log_images({"val/sample": [np.zeros((4, 4), dtype=np.uint8)]}, step=step)
            if log_checkpoints:
                folder = root / "accelerate-state" / f"epoch{epoch}"
                accelerator.save_state(str(folder))
                run = accelerator.get_tracker("loggerhub", unwrap=True)
                run.log_checkpoint(folder, name=f"checkpoints/epoch{epoch}", step=step)
                run.flush()  # the checkpoint is copied by the writer thread: keep it until then
        run_tracker.log_table("predictions", columns=["x", "y"], data=[[1.0, 2.0]], step=step)
        figure = matplotlib.figure.Figure(figsize=(1, 1))
        figure.add_subplot().plot([0, 1], [1, 0])
        run_tracker.log_figure(figure, "plots/loss.png", step=step)
        accelerator.end_training()
    return read_run(root)


# --------------------------------------------------------------------------- Keras


def train_keras(root: Path, *, stop: str | None = None, log_checkpoints: bool = False) -> Logged:
    import keras

    from loggerhub.integrations.keras import LoggerhubCallback

    class Stop(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) + 1 == STOP_AT:
                stop_now(stop)

    keras.utils.set_random_seed(0)
    x, y = (t.numpy() for t in dataset())
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse", metrics=["mae"])
    with LoggerhubCallback(project="keras", name="sequential", log_checkpoints=log_checkpoints,
                           **loggerhub_kwargs(root)) as callback:
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_data=(x[:BATCH], y[:BATCH]),
                  callbacks=[callback, Stop()], verbose=0, shuffle=False)
        model.evaluate(x, y, batch_size=BATCH, callbacks=[callback], verbose=0)
    return read_run(root)


_TRAINED: dict[str, Logged] = {}


def trained(framework: str, root_factory: Any) -> Logged:
    """The framework's full training with checkpoints, run once per test session and shared by
    its own test and the step rule's (``root_factory``: pytest's ``tmp_path_factory``)."""
    if framework not in _TRAINED:
        _TRAINED[framework] = TRAININGS[framework](root_factory.mktemp(framework), log_checkpoints=True)
    return _TRAINED[framework]


TRAININGS = {
    "transformers": train_transformers,
    "lightning": train_lightning,
    "accelerate": train_accelerate,
    "keras": train_keras,
}


def expected_train_steps() -> list[tuple[int, int]]:
    """The step rule for the loss logged after every optimizer step: (step, epoch)."""
    return [(step, (step - 1) // STEPS_PER_EPOCH + 1) for step in range(1, OPTIMIZER_STEPS + 1)]



# --------------------------------------------------------------------------- checks


def check_series(logged: Logged, expected: dict[str, list[tuple[int, int | None]]]) -> None:
    """Each key has exactly these (step, epoch) points in the journal, and these steps in TensorBoard."""
    series = logged.series()
    for key, points in expected.items():
        assert series.get(key) == points, (key, series.get(key))
        assert logged.tensorboard_steps(key) == [step for step, _ in points], key


def check_ended(logged: Logged, status: str, error_type: str | None = None) -> None:
    """The run ended once, with ``status``, in the journal and in TensorBoard."""
    assert logged.statuses() == [status]
    assert logged.tensorboard.status == status
    if error_type is not None:
        assert logged.of_type("run_end")[0]["error"]["type"] == error_type


def check_stopped(logged: Logged, stop: str) -> None:
    """A training stopped during optimizer step 2: step 1's loss is in, then the right status."""
    assert logged.series()["train/loss"] == [(1, 1)]
    if stop == "error":
        check_ended(logged, "FAILED", Boom.__name__)
    else:
        check_ended(logged, "KILLED", KeyboardInterrupt.__name__)
