"""What the framework adapters share: the run they own, the step rule, and never stopping training.

The step rule (docs/conventions.md, "Steps across frameworks"): a record's step is the number of
optimizer steps completed when it was logged, and its epoch is the 1-based number of the epoch it
belongs to.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loggerhub.integrations.ultralytics import AdapterWarning
from loggerhub.run import status_for

if TYPE_CHECKING:
    from loggerhub.run import Run

__all__ = ["AdapterWarning", "RunOwner", "epoch_from_index", "epoch_from_progress", "guarded", "numeric"]


def epoch_from_index(index: int) -> int:
    """The 1-based epoch number of a framework's 0-based epoch index (Lightning, Keras)."""
    return int(index) + 1


def epoch_from_progress(progress: float) -> int:
    """The 1-based epoch a step belongs to, from fractional progress (Transformers' ``state.epoch``:
    1.5 is half-way through the second epoch; exactly 1.0 closed the first)."""
    return max(1, math.ceil(progress))


def numeric(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values a metrics record can hold: numbers and scalar tensors, not strings or lists."""
    return {key: value for key, value in values.items()
            if isinstance(value, (int, float)) or getattr(value, "ndim", None) == 0}


def guarded(adapter: str, what: str, call: Callable[[], Any]) -> Any:
    """Run ``call``; a failure is reported as an :class:`AdapterWarning`, never raised into training."""
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - logging must never stop a training
        warnings.warn(
            f"loggerhub: the {adapter} adapter could not log {what}: {type(error).__name__}: {error}",
            AdapterWarning,
            stacklevel=3,
        )
        return None


class RunOwner:
    """The run an adapter starts on first use and ends with the training's status.

    A framework may log again after it ended the run (``trainer.evaluate()`` after ``train()``,
    Lightning's ``test`` after ``fit``): the run is then continued (``resume=``), so one adapter
    object keeps logging into one run. Used as a context manager, the block ends the run with the
    status of how it was left, the rule of ``with loggerhub.init(...)``; an ending inside the block
    (``on_train_end``) is then left to the block.
    """

    def __init__(
        self,
        *,
        project: str | None,
        name: str | None,
        backends: Sequence[str] | str | None,
        per_rank: bool,
        init_kwargs: Mapping[str, Any],
    ) -> None:
        self.project = project
        self.name = name
        self.backends = backends
        self.per_rank = per_rank
        self.init_kwargs = dict(init_kwargs)
        self._run: Run | None = None
        self._ended: Run | None = None
        self._in_block = 0

    @property
    def started(self) -> bool:
        return self._run is not None or self._ended is not None

    @property
    def current(self) -> Run | None:
        """The open run, or None."""
        return self._run

    def run(self, config: Mapping[str, Any] | None = None) -> Run:
        """The open run: started (with ``config``) on first use, continued after an ending."""
        if self._run is not None:
            return self._run
        import loggerhub

        per_rank = True if self.per_rank else None
        if self._ended is not None:
            self._run = loggerhub.init(self._ended.project, resume=self._ended.dir, backends=self.backends,
                                       per_rank=per_rank, **self.init_kwargs)
        else:
            self._run = loggerhub.init(self.project, self.name, backends=self.backends, config=config,
                                       per_rank=per_rank, **self.init_kwargs)
        return self._run

    def end(self, status: str, exc: BaseException | None = None) -> None:
        """End the open run with ``status``, unless a ``with`` block owns the ending."""
        if self._in_block:
            return
        self.finish(status, exc)

    def finish(self, status: str, exc: BaseException | None = None) -> None:
        """End the open run; ``exc`` is what ended it, journaled with a FAILED or KILLED status."""
        run, self._run = self._run, None
        if run is not None:
            if run.dir != Path(os.devnull):  # a disabled run (another rank) has nothing to continue
                self._ended = run
            run.finish(status, exc=exc)

    def __enter__(self) -> RunOwner:
        self._in_block += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._in_block -= 1
        if not self._in_block:
            self.finish(status_for(exc_type, exc).value, exc)
