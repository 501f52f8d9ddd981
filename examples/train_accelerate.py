"""A plain torch training loop driven by accelerate, logged to loggerhub through its tracker API.

::

    python examples/train_accelerate.py
    LOGGERHUB_BACKENDS=tensorboard,mlflow python examples/train_accelerate.py

The step passed to ``accelerator.log`` is the number of optimizer steps completed, and the epoch
goes in through ``log_kwargs``: the step rule of docs/conventions.md.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from loggerhub.integrations.accelerate import LoggerhubTracker


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=32, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    tracker = LoggerhubTracker("examples", name="plain-loop")
    accelerator = Accelerator(log_with=[tracker], cpu=True)
    accelerator.init_trackers("examples", config={"lr": 0.05, "batch_size": 32, "epochs": 3})
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    with tracker:  # the run ends FAILED or KILLED if the loop raises
        step = 0
        for epoch in range(1, 4):
            for inputs, targets in loader:
                loss = torch.nn.functional.mse_loss(model(inputs), targets)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                accelerator.log({"train/loss": loss.item()}, step=step, log_kwargs={"loggerhub": {"epoch": epoch}})
        print(f"run: {tracker.tracker.dir}")
        accelerator.end_training()


if __name__ == "__main__":
    main()
