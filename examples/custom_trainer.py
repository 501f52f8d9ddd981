"""A small real training loop that logs through loggerhub.

A two-layer numpy network learns to separate two interleaved spirals. Every step logs the loss
and learning rate; every epoch logs validation accuracy, a picture of the decision boundary,
a matplotlib figure of the loss curve, and a checkpoint of the weights.

    python examples/custom_trainer.py                      # the local backend only
    LOGGERHUB_BACKENDS=tensorboard python examples/custom_trainer.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import loggerhub  # noqa: E402


def spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.sqrt(rng.uniform(0.05, 1, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    sign = np.where(label == 0, 1.0, -1.0)
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / 10
    return x + rng.normal(0, 0.03, x.shape), label


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return hidden, 1 / (1 + np.exp(-logits[:, 0]))


def boundary_image(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """An RGB picture of the predicted probability, with the validation points on it."""
    size = 96
    grid = np.linspace(-1.2, 1.2, size)
    xx, yy = np.meshgrid(grid, grid[::-1])
    _, prob = forward(params, np.stack([xx.ravel(), yy.ravel()], axis=1))
    prob = prob.reshape(size, size)
    image = np.stack([prob, 0.2 * np.ones_like(prob), 1 - prob], axis=-1)
    cols = np.clip(((x[:, 0] + 1.2) / 2.4 * (size - 1)).astype(int), 0, size - 1)
    rows = np.clip(((1.2 - x[:, 1]) / 2.4 * (size - 1)).astype(int), 0, size - 1)
    image[rows, cols] = np.where(y[:, None] == 1, 1.0, 0.0)
    return image  # float in 0-1: loggerhub converts it to uint8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dir", default=None, help="the local run store (default ./loggerhub-runs)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x_train, y_train = spirals(2048, rng)
    x_val, y_val = spirals(512, rng)
    params = {
        "w1": rng.normal(0, 1.0, (2, args.hidden)), "b1": np.zeros(args.hidden),
        "w2": rng.normal(0, 1.0 / np.sqrt(args.hidden), (args.hidden, 1)), "b2": np.zeros(1),
    }
    config = {"optimizer": {"name": "sgd", "lr": args.lr}, "model": {"hidden": args.hidden},
              "epochs": args.epochs, "batch_size": 64}
    batch = config["batch_size"]
    steps_per_epoch = len(x_train) // batch
    losses: list[float] = []

    with loggerhub.init(project="demo", name="spirals", config=config, dir=args.dir) as run, \
            tempfile.TemporaryDirectory() as scratch:
        run.log_event("train_start", step=0)
        for epoch in range(1, args.epochs + 1):
            run.log_event("epoch_start", epoch=epoch)
            lr = args.lr * (0.5 * (1 + np.cos(np.pi * (epoch - 1) / args.epochs)))
            order = rng.permutation(len(x_train))
            for i in range(steps_per_epoch):
                step = (epoch - 1) * steps_per_epoch + i
                idx = order[i * batch:(i + 1) * batch]
                xb, yb = x_train[idx], y_train[idx]
                hidden, prob = forward(params, xb)
                loss = -np.mean(yb * np.log(prob + 1e-9) + (1 - yb) * np.log(1 - prob + 1e-9))
                grad_logits = (prob - yb)[:, None] / len(xb)
                grad_hidden = grad_logits @ params["w2"].T * (1 - hidden**2)
                params["w2"] -= lr * hidden.T @ grad_logits
                params["b2"] -= lr * grad_logits.sum(0)
                params["w1"] -= lr * xb.T @ grad_hidden
                params["b1"] -= lr * grad_hidden.sum(0)
                losses.append(float(loss))
                run.log_metrics({"train/loss": loss, "lr": lr}, step=step, epoch=epoch)

            _, val_prob = forward(params, x_val)
            accuracy = float(np.mean((val_prob > 0.5) == y_val))
            run.log_metrics({"val/accuracy": accuracy}, step=step, epoch=epoch)
            run.log_event("validation_end", step=step, epoch=epoch)
            run.log_image("val/decision_boundary", boundary_image(params, x_val, y_val), step=step)

            figure, axes = plt.subplots(figsize=(5, 3))
            axes.plot(losses, linewidth=0.8)
            axes.set(xlabel="step", ylabel="loss", title=f"training loss, epoch {epoch}")
            figure.tight_layout()
            run.log_figure("plots/loss_curve", figure, step=step)
            plt.close(figure)

            checkpoint = Path(scratch) / "model.npz"
            np.savez(checkpoint, **params)
            run.log_checkpoint(checkpoint, name="model.npz", step=step)
            run.log_event("epoch_end", step=step, epoch=epoch)
            print(f"epoch {epoch}: loss {np.mean(losses[-steps_per_epoch:]):.4f}  val accuracy {accuracy:.3f}")

        run.log_event("train_end", step=step)
        run.log_text("notes", f"final validation accuracy {accuracy:.3f} after {args.epochs} epochs")
        np.savez(Path(scratch) / "final.npz", **params)
        run.log_artifact(Path(scratch) / "final.npz", kind="model")
        run.flush()  # the temporary directory goes away next; make sure its files were copied
    print(f"run {run.id} saved in {run.dir}")


if __name__ == "__main__":
    main()
