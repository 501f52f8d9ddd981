"""Log an accelerate training loop to every loggerhub tracker, as an accelerate tracker.

::

    from accelerate import Accelerator
    from loggerhub.integrations.accelerate import LoggerhubTracker

    accelerator = Accelerator(log_with=[LoggerhubTracker(backends=["tensorboard"])])
    accelerator.init_trackers("my-project", config={"lr": 1e-3})
    ...
    accelerator.log({"train/loss": loss.item()}, step=optimizer_step)
    accelerator.end_training()

or, after :func:`register`, ``Accelerator(log_with="loggerhub")`` with ``init_trackers``'s
``init_kwargs={"loggerhub": {...}}`` for :func:`loggerhub.init`.

accelerate never picks the step: the loop passes it. docs/conventions.md's rule is the number of
optimizer steps completed, with the epoch as ``log(..., epoch=...)`` (1-based).

The tracker runs on the main process only (``main_process_only``), as accelerate's own trackers.
``end_training`` ends the run FINISHED. Used as a context manager around the loop, the block ends
it FAILED or KILLED when the loop raises; without one, a loop that raises ends the run when the
process exits, with the status of the uncaught exception.

Importing this module imports accelerate; ``import loggerhub`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from accelerate.tracking import GeneralTracker, on_main_process, register_tracker_class

from loggerhub.integrations._common import RunOwner

if TYPE_CHECKING:
    from loggerhub.run import Run

__all__ = ["LoggerhubTracker", "register"]


class LoggerhubTracker(GeneralTracker):
    """An accelerate ``GeneralTracker`` that journals into one loggerhub run.

    :param project: the loggerhub project; given by ``init_trackers(project_name)`` when
        accelerate builds the tracker from ``log_with="loggerhub"``.
    :param backends, name, init_kwargs: passed to :func:`loggerhub.init` when the run starts, at
        ``init_trackers`` (``project`` defaults to ``"accelerate"``).
    """

    name = "loggerhub"
    requires_logging_directory = False
    main_process_only = True

    def __init__(
        self,
        project: str | None = None,
        *,
        backends: Sequence[str] | str | None = None,
        name: str | None = None,
        per_rank: bool = False,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._owner = RunOwner(project=project or "accelerate", name=name, backends=backends,
                               per_rank=per_rank, init_kwargs=init_kwargs)

    @property
    def tracker(self) -> Run:
        """The loggerhub run (``accelerator.get_tracker("loggerhub", unwrap=True)``)."""
        return self._owner.run()

    @on_main_process
    def start(self) -> None:
        self._owner.run()

    @on_main_process
    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        self._owner.run().log_params(dict(values))

    @on_main_process
    def log(self, values: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None,
            **kwargs: Any) -> None:
        """Log the numbers in ``values`` at ``step``; strings go in as texts."""
        run = self._owner.run()
        texts = {key: value for key, value in values.items() if isinstance(value, str)}
        numbers = {key: value for key, value in values.items() if key not in texts}
        if numbers:
            run.log_metrics(numbers, step=step, epoch=epoch)
        for key, text in texts.items():
            run.log_text(key, text, step=step)

    @on_main_process
    def log_images(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log images: each value is one image or a list of them (``key/0``, ``key/1``...)."""
        run = self._owner.run()
        for key, images in values.items():
            if isinstance(images, (list, tuple)):
                for index, image in enumerate(images):
                    run.log_image(f"{key}/{index}", image, step=step)
            else:
                run.log_image(key, images, step=step)

    @on_main_process
    def log_table(self, table_name: str, columns: Sequence[str] | None = None,
                  data: Sequence[Sequence[Any]] | None = None, dataframe: Any = None,
                  step: int | None = None, **kwargs: Any) -> None:
        """Log a table from ``columns`` and ``data``, or from a pandas ``dataframe``."""
        if dataframe is not None:
            columns, data = list(dataframe.columns), dataframe.to_numpy().tolist()
        self._owner.run().log_table(table_name, list(columns or []), list(data or []), step=step)

    @on_main_process
    def log_figure(self, figure: Any, artifact_file: str, step: int | None = None, **kwargs: Any) -> None:
        """Log a matplotlib figure, as accelerate's MLflow tracker does; the key is ``artifact_file``
        without its suffix."""
        self._owner.run().log_figure(str(Path(artifact_file).with_suffix("")), figure, step=step)

    @on_main_process
    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Log a file, as accelerate's MLflow tracker does, named ``artifact_path/<file name>``."""
        name = Path(local_path).name
        self._owner.run().log_artifact(local_path, name=f"{artifact_path}/{name}" if artifact_path else name)

    @on_main_process
    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Log a directory, as accelerate's MLflow tracker does."""
        self._owner.run().log_artifact(local_dir, name=artifact_path)

    @on_main_process
    def finish(self, status: str = "FINISHED") -> None:
        self._owner.end(status)

    def __enter__(self) -> LoggerhubTracker:
        self._owner.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._owner.__exit__(exc_type, exc, traceback)


def register() -> None:
    """Make ``Accelerator(log_with="loggerhub")`` build a :class:`LoggerhubTracker`."""
    register_tracker_class(LoggerhubTracker)
