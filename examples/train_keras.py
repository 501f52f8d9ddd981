"""Fit a Keras 3 Sequential model (on the torch backend) and log it to loggerhub.

::

    python examples/train_keras.py
    LOGGERHUB_BACKENDS=tensorboard,mlflow python examples/train_keras.py
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from loggerhub.integrations.keras import LoggerhubCallback  # noqa: E402


def main() -> None:
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse", metrics=["mae"])
    with LoggerhubCallback(project="examples", name="sequential", log_every_n_steps=4) as callback:
        model.fit(x, y, batch_size=32, epochs=3, validation_split=0.25, callbacks=[callback], verbose=0)
        model.evaluate(x, y, callbacks=[callback], verbose=0)
        print(f"run: {callback.run.dir}")


if __name__ == "__main__":
    main()
