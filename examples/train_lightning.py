"""Train a 2-layer LightningModule on random data and log it, and an image, to loggerhub.

::

    python examples/train_lightning.py
    LOGGERHUB_BACKENDS=tensorboard,mlflow python examples/train_lightning.py
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from loggerhub.integrations.lightning import LoggerhubLogger


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def on_validation_epoch_end(self) -> None:
        weights = self.net[0].weight.detach().cpu().numpy()
        picture = np.uint8(255 * (weights - weights.min()) / (np.ptp(weights) or 1.0))
        self.logger.experiment.log_image("val/first_layer", picture)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    logger = LoggerhubLogger(project="examples", name="regressor", log_checkpoints=True)
    trainer = L.Trainer(max_epochs=3, logger=logger, log_every_n_steps=4, accelerator="cpu", enable_progress_bar=False)
    trainer.fit(Regressor(), DataLoader(data, batch_size=32), DataLoader(data, batch_size=64))
    print(f"run: {logger.log_dir}")


if __name__ == "__main__":
    main()
