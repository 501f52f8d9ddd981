"""Log a Hugging Face ``Trainer`` to every loggerhub tracker, with a ``TrainerCallback``.

::

    from transformers import Trainer
    from loggerhub.integrations.transformers import LoggerhubCallback

    with LoggerhubCallback(backends=["mlflow", "tensorboard"], project="glue") as callback:
        Trainer(model, args, train_dataset=data, callbacks=[callback]).train()

Keys are the Trainer's own, grouped as its TensorBoard integration groups them (``eval_loss`` →
``eval/loss``, ``test_loss`` → ``test/loss``, the rest under ``train/``). Steps follow
docs/conventions.md: ``state.global_step`` (optimizer steps completed), with the 1-based epoch as
the record's epoch (Transformers' fractional ``epoch`` rounded up).

The Trainer has no callback for a failed training: the ``with`` block ends the run FAILED when
``train`` raises and KILLED on Ctrl+C; without it, a ``train`` that returns ends the run FINISHED
and one that raises ends it when the process exits, with the status of the uncaught exception.

Importing this module imports transformers; ``import loggerhub`` does not.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback
from transformers.integrations.integration_utils import rewrite_logs
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from loggerhub.integrations._common import AdapterWarning, RunOwner, epoch_from_progress, guarded, numeric

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from loggerhub.run import Run

__all__ = ["REPORT_TO_BACKENDS", "LoggerhubCallback"]

#: ``TrainingArguments.report_to`` names of the Trainer's own integrations, and the loggerhub
#: backend that delivers to the same tracker.
REPORT_TO_BACKENDS: dict[str, str] = {
    "mlflow": "mlflow", "tensorboard": "tensorboard", "comet_ml": "comet", "neptune": "neptune",
    "wandb": "wandb",
}


class LoggerhubCallback(TrainerCallback):
    """A ``TrainerCallback`` that journals a training into one loggerhub run.

    :param backends, project, name, init_kwargs: passed to :func:`loggerhub.init` when the run
        starts, at the first training or evaluation (``project`` defaults to ``"transformers"``).
    :param log_checkpoints: log every checkpoint folder the Trainer saves as a checkpoint.
    :param per_rank: log from every process, not the world's process zero only.
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
        self._owner = RunOwner(project=project or "transformers", name=name, backends=backends,
                               per_rank=per_rank, init_kwargs=init_kwargs)
        self.log_checkpoints = log_checkpoints
        self.per_rank = per_rank

    @property
    def run(self) -> Run | None:
        """The open loggerhub run, or None before the Trainer first logs."""
        return self._owner.current

    # -- events ----------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self._logs_here(state):
            guarded("Transformers", "the start of training", lambda: self._start(args, kwargs.get("model"), state))

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if self._logs_here(state) and logs:
            guarded("Transformers", "logs", lambda: self._log(args, kwargs.get("model"), state, logs))

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   metrics: Mapping[str, Any], **kwargs: Any) -> None:
        # Evaluation reaches on_log too; prediction only comes here.
        if self._logs_here(state) and metrics:
            guarded("Transformers", "prediction metrics", lambda: self._log(args, kwargs.get("model"), state, metrics))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if not (self.log_checkpoints and self._logs_here(state)):
            return
        folder = os.path.join(str(args.output_dir), f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(folder):
            guarded("Transformers", f"checkpoint {folder}", lambda: self._log_checkpoint(args, folder, state))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if not self._logs_here(state) or self._owner.current is None:
            return
        guarded("Transformers", "the end of training",
                lambda: self._run(args, None).log_event("train_end", step=state.global_step))
        self._owner.end("FINISHED")

    # -- ending by hand --------------------------------------------------------------------------

    def finish(self, status: str = "FINISHED") -> None:
        """End the run now (it continues if the Trainer logs again)."""
        self._owner.finish(status)

    def __enter__(self) -> LoggerhubCallback:
        self._owner.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._owner.__exit__(exc_type, exc, traceback)

    # -- helpers ---------------------------------------------------------------------------------

    def _logs_here(self, state: TrainerState) -> bool:
        return self.per_rank or state.is_world_process_zero

    def _run(self, args: TrainingArguments, model: Any) -> Run:
        if self._owner.started:
            return self._owner.run()
        config: dict[str, Any] = dict(args.to_dict())
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            config["model"] = model_config.to_dict()
        run = self._owner.run(config)
        self._warn_double_logging(args, run)
        return run

    def _log_checkpoint(self, args: TrainingArguments, folder: str, state: TrainerState) -> None:
        run = self._run(args, None)
        run.log_checkpoint(folder, name=os.path.basename(folder), step=state.global_step)
        # The writer thread copies the folder; save_total_limit deletes old ones at the next save.
        run.flush()

    def _start(self, args: TrainingArguments, model: Any, state: TrainerState) -> None:
        self._run(args, model).log_event("train_start", step=state.global_step)

    def _log(self, args: TrainingArguments, model: Any, state: TrainerState, logs: Mapping[str, Any]) -> None:
        values = dict(logs)
        progress = values.pop("epoch", None)
        if progress is None:
            progress = state.epoch
        epoch = epoch_from_progress(progress) if progress is not None and state.global_step else None
        metrics = numeric(rewrite_logs(values))
        if metrics:
            self._run(args, model).log_metrics(metrics, step=state.global_step, epoch=epoch)

    @staticmethod
    def _warn_double_logging(args: TrainingArguments, run: Run) -> None:
        report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
        twice = sorted(str(name) for name in report_to if REPORT_TO_BACKENDS.get(str(name)) in run.backends)
        if twice:
            warnings.warn(
                f"loggerhub: TrainingArguments.report_to={twice} makes the Trainer log to trackers "
                f"loggerhub delivers to as well; they will show every metric twice. Drop them from "
                f"report_to (report_to='none').",
                AdapterWarning,
                stacklevel=4,
            )
