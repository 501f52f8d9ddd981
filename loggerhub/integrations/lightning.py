"""Log a PyTorch Lightning training to every loggerhub tracker through Lightning's own logger API.

::

    import lightning as L
    from loggerhub.integrations.lightning import LoggerhubLogger

    logger = LoggerhubLogger(backends=["mlflow", "tensorboard"], project="mnist")
    L.Trainer(logger=logger, max_epochs=3).fit(model, data)

Inside a ``LightningModule``, ``self.logger.experiment`` is the :class:`loggerhub.Run`:
``self.logger.experiment.log_image(...)`` and ``log_figure`` work as on any run.

Steps follow docs/conventions.md: a record's step is the number of optimizer steps completed
(``trainer.global_step``), its epoch the 1-based epoch while fitting. Lightning's own loggers get
the step before that (``global_step - 1`` for what the k-th optimizer step logged).

Only the ``lightning`` package (``import lightning``) is supported: the standalone
``pytorch_lightning`` package defines a separate ``Logger`` class that its ``Trainer`` checks for.
Importing this module imports Lightning; ``import loggerhub`` does not.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from loggerhub.integrations._common import RunOwner, epoch_from_index
from loggerhub.run import Terminated

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from loggerhub.run import Run

__all__ = ["LoggerhubLogger"]

#: Lightning's ``finalize`` statuses: ``failed`` is resolved from the exception being handled.
_FINALIZE_STATUS = {"success": "FINISHED", "finished": "FINISHED"}


class LoggerhubLogger(Logger):
    """A Lightning logger that journals into one loggerhub run and delivers to its backends.

    :param backends, project, name, init_kwargs: passed to :func:`loggerhub.init` when the run
        starts (on first use; ``project`` defaults to ``"lightning"``).
    :param log_checkpoints: log every checkpoint ``ModelCheckpoint`` saves (``True``), or none.
    :param per_rank: log from every rank, not rank zero only.

    The run lives in ``<dir>/<project>/<run id>``: :attr:`save_dir`, :attr:`name` and
    :attr:`version` are those parts, so ``ModelCheckpoint`` writes into ``<run dir>/checkpoints``.
    """

    def __init__(
        self,
        *,
        backends: Sequence[str] | str | None = None,
        project: str | None = None,
        name: str | None = None,
        log_checkpoints: bool = False,
        per_rank: bool = False,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._owner = RunOwner(project=project or "lightning", name=name, backends=backends,
                               per_rank=per_rank, init_kwargs=init_kwargs)
        self._log_checkpoints = log_checkpoints
        self._logged_checkpoints: set[str] = set()
        self._module: weakref.ReferenceType[Any] | None = None

    # -- where the run lives ------------------------------------------------------------------

    @property
    @rank_zero_experiment
    def experiment(self) -> Run:
        """The loggerhub run (started on first use); a no-op object on ranks other than zero."""
        return self._owner.run()

    @property
    def name(self) -> str:
        """The run's project: the folder that holds its run directory."""
        return self._owner.project or "lightning"

    @property
    def version(self) -> str:
        """The run id: the run directory's name."""
        run = self._owner.current
        return run.id if run is not None else str(self.experiment.id)

    @property
    def save_dir(self) -> str:
        """The loggerhub run store, ``<dir>``."""
        return str(self._run_dir().parent.parent)

    @property
    def root_dir(self) -> str:
        return str(self._run_dir().parent)

    @property
    def log_dir(self) -> str:
        """The run directory."""
        return str(self._run_dir())

    def _run_dir(self) -> Path:
        return Path(self._owner.run().dir)

    # -- records ------------------------------------------------------------------------------

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | argparse.Namespace, *args: Any, **kwargs: Any) -> None:
        if isinstance(params, argparse.Namespace):
            params = vars(params)
        self._owner.run().log_params(dict(params))

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning hands every logger its module at the start of each fit, validate and test:
        # the module leads to the trainer, whose optimizer step count is the step rule's step.
        self._module = weakref.ref(model)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = dict(metrics)
        lightning_epoch = values.pop("epoch", None)
        trainer = self._trainer()
        epoch = None
        if trainer is not None:
            step = int(trainer.global_step)
            if trainer.state.fn == "fit":
                epoch = epoch_from_index(trainer.current_epoch)
        elif lightning_epoch is not None:
            # Logged outside a trainer, by hand: the caller's step and epoch are kept.
            values["epoch"] = lightning_epoch
        if values:
            self._owner.run().log_metrics(values, step=step, epoch=epoch)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        if not self._log_checkpoints:
            return
        # ModelCheckpoint keeps top-k, last and best: log each file once, when it first appears.
        paths = {checkpoint_callback.last_model_path, checkpoint_callback.best_model_path,
                 *checkpoint_callback.best_k_models}
        trainer = self._trainer()
        step = int(trainer.global_step) if trainer is not None else None
        run = self._owner.run()
        for path in sorted(str(p) for p in paths if p and p not in self._logged_checkpoints):
            if Path(path).is_file():
                self._logged_checkpoints.add(path)
                run.log_checkpoint(path, name=f"checkpoints/{Path(path).name}", step=step)
        # The writer thread copies each file; ModelCheckpoint deletes the ones that leave its top k.
        run.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: ``success`` and ``finished`` end it FINISHED; ``failed`` ends it KILLED
        when Lightning is handling Ctrl+C or SIGTERM, FAILED otherwise."""
        if not self._owner.started:
            return
        resolved = _FINALIZE_STATUS.get(status)
        error = None
        if resolved is None:
            # Lightning calls this from the except clause that caught what stopped the training.
            error = sys.exc_info()[1]
            killed = isinstance(error, (KeyboardInterrupt, SIGTERMException, Terminated))
            resolved = "KILLED" if killed else "FAILED"
        self._owner.end(resolved, error)

    def _trainer(self) -> Any:
        module = self._module() if self._module is not None else None
        return getattr(module, "_trainer", None)
