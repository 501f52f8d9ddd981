"""Log a Keras 3 ``fit`` to every loggerhub tracker, with a Keras callback.

::

    from loggerhub.integrations.keras import LoggerhubCallback

    with LoggerhubCallback(backends=["tensorboard"], project="mnist") as callback:
        model.fit(x, y, epochs=3, validation_split=0.1, callbacks=[callback])

Steps follow docs/conventions.md: a record's step is the number of optimizer steps completed
(``model.optimizer.iterations``), its epoch the 1-based epoch number. Batch logs (running means of
the epoch so far) go under ``train/`` every ``log_every_n_steps`` optimizer steps; epoch logs go
under ``epoch/``, their ``val_`` metrics under ``val/``; a standalone ``evaluate`` under ``test/``.

Keras has no callback for a failed ``fit``: the ``with`` block ends the run FAILED when ``fit``
raises and KILLED on Ctrl+C; without it, a ``fit`` that returns ends the run FINISHED and one that
raises ends it when the process exits, with the status of the uncaught exception.

Importing this module imports Keras; ``import loggerhub`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import keras

from loggerhub.integrations._common import RunOwner, epoch_from_index, guarded, numeric

if TYPE_CHECKING:
    from loggerhub.run import Run

__all__ = ["LoggerhubCallback"]

_VALIDATION_PREFIX = "val_"


class LoggerhubCallback(keras.callbacks.Callback):
    """A Keras callback that journals ``fit`` into one loggerhub run and delivers to its backends.

    :param backends, project, name, init_kwargs: passed to :func:`loggerhub.init` when the run
        starts, at the first ``fit`` (``project`` defaults to ``"keras"``).
    :param log_every_n_steps: log the batch logs every this many optimizer steps; 0 logs epochs only.
    :param log_checkpoints: at every epoch end, save the model to
        ``<run dir>/checkpoints/epoch<N>.keras`` and log it as a checkpoint.
    :param per_rank: log from every rank, not rank zero only.
    """

    def __init__(
        self,
        *,
        backends: Sequence[str] | str | None = None,
        project: str | None = None,
        name: str | None = None,
        log_every_n_steps: int = 1,
        log_checkpoints: bool = False,
        per_rank: bool = False,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        if log_every_n_steps < 0:
            raise ValueError("log_every_n_steps must be >= 0")
        self._owner = RunOwner(project=project or "keras", name=name, backends=backends,
                               per_rank=per_rank, init_kwargs=init_kwargs)
        self.log_every_n_steps = log_every_n_steps
        self.log_checkpoints = log_checkpoints
        self._fitting = False

    @property
    def run(self) -> Run:
        """The loggerhub run, started on first use."""
        return self._owner.run()

    # -- fit -------------------------------------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self._fitting = True
        guarded("Keras", "the optimizer config", self._log_config)

    def _log_config(self) -> None:
        params: dict[str, Any] = {f"fit/{key}": value for key, value in (self.params or {}).items()}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            params["optimizer"] = optimizer.get_config()
        self.run.log_params(params)
        self.run.log_event("train_start", step=self._step())

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self.log_every_n_steps or not logs:
            return
        step = self._step()
        if step % self.log_every_n_steps == 0:
            epoch = self._epoch
            guarded("Keras", "batch logs", lambda: self.run.log_metrics(
                {f"train/{key}": value for key, value in numeric(logs).items()}, step=step, epoch=epoch))

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch = epoch_from_index(epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        values = {}
        for key, value in numeric(logs or {}).items():
            if key.startswith(_VALIDATION_PREFIX):
                values[f"val/{key.removeprefix(_VALIDATION_PREFIX)}"] = value
            else:
                values[f"epoch/{key}"] = value
        step, number = self._step(), epoch_from_index(epoch)

        def log() -> None:
            if values:
                self.run.log_metrics(values, step=step, epoch=number)
            self.run.log_event("epoch_end", step=step, epoch=number)

        guarded("Keras", "epoch logs", log)
        if self.log_checkpoints:
            guarded("Keras", "a checkpoint", lambda: self._log_checkpoint(step, number))

    def _log_checkpoint(self, step: int, epoch: int) -> None:
        folder = self.run.dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        path = folder / f"epoch{epoch}.keras"
        self.model.save(path)
        self.run.log_checkpoint(path, name=f"checkpoints/{path.name}", step=step)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self._fitting = False
        guarded("Keras", "the end of training", lambda: self.run.log_event("train_end", step=self._step()))
        self._owner.end("FINISHED")

    # -- evaluate --------------------------------------------------------------------------------

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._fitting or not logs:  # fit's validation arrives with the epoch logs
            return
        step = self._step()
        guarded("Keras", "evaluation logs", lambda: self.run.log_metrics(
            {f"test/{key}": value for key, value in numeric(logs).items()}, step=step))

    # -- helpers ---------------------------------------------------------------------------------

    _epoch: int | None = None

    def _step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return 0
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def finish(self, status: str = "FINISHED") -> None:
        """End the run now (it continues if the callback logs again)."""
        self._owner.finish(status)

    def __enter__(self) -> LoggerhubCallback:
        self._owner.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._owner.__exit__(exc_type, exc, traceback)
