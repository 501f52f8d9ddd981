"""Log Ultralytics YOLO training, validation, prediction and export to every loggerhub tracker.

::

    from ultralytics import YOLO
    from loggerhub.integrations.ultralytics import attach

    model = YOLO("yolo11n.pt")
    run = attach(model, backends=["mlflow", "tensorboard"], project="yolo")
    model.train(data="coco8.yaml", epochs=10)  # the run ends with the training

The adapter registers on every Ultralytics callback event and turns each into loggerhub records;
it holds no tracker-specific code. A training's records follow the step rule of every loggerhub
adapter (docs/conventions.md): the step is the number of optimizer steps completed, the record's
``epoch`` the 1-based epoch. Records logged outside a training (``val``, ``predict``, ``export``)
use the run's current step. See docs/ultralytics.md for the full table of what is logged where.

Importing this module imports neither ultralytics nor torch: they load when a model is attached.
"""

from __future__ import annotations

import csv
import functools
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loggerhub.run import status_for

if TYPE_CHECKING:
    from loggerhub.run import Run

__all__ = ["TRACKER_SETTINGS", "AdapterWarning", "attach", "detach", "log_results_dir", "optimizer_steps_by_epoch"]

#: The Ultralytics ``SETTINGS`` keys of its own tracker integrations (``neptune`` is gone in 8.4,
#: kept for older versions). Ray Tune is not a tracker and is never touched.
TRACKER_SETTINGS: tuple[str, ...] = ("clearml", "comet", "dvc", "mlflow", "neptune", "tensorboard", "wandb")

#: Files Ultralytics writes that show sample batches; every other picture in save_dir is a plot.
_SAMPLE_PREFIXES = ("train_batch", "val_batch")
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
_ATTRIBUTE = "_loggerhub_adapter"
#: How long the end of a training waits for plots Ultralytics is still writing in its threads.
PLOT_WAIT_SECONDS = 10.0


class AdapterWarning(RuntimeWarning):
    """The adapter could not log something. Training is never stopped for it."""


# --------------------------------------------------------------------------- public API


def attach(
    model: Any,
    *,
    run: Run | None = None,
    backends: Sequence[str] | str | None = None,
    project: str | None = None,
    name: str | None = None,
    switch_off: str | Iterable[str] = "backends",
    batch_events: bool = False,
    max_predict_images: int = 8,
    **init_kwargs: Any,
) -> Run:
    """Log everything ``model`` trains, validates, predicts and exports to a loggerhub run.

    :param model: an Ultralytics model (``YOLO``, ``RTDETR``...).
    :param run: log into this run instead of starting one. You then own it: it stays open after
        training, so that ``val``, ``predict`` and ``export`` calls land in it too, and you end it
        (``with loggerhub.init(...) as run:`` does).
    :param backends, project, name, init_kwargs: passed to :func:`loggerhub.init` when ``run`` is
        not given (``project`` defaults to ``"ultralytics"``). That run ends with the first
        training: FINISHED when ``train`` returns, FAILED when it raises, KILLED on Ctrl+C.
    :param switch_off: Ultralytics' own tracker integrations to switch off during training so that
        no tracker gets an item twice: ``"backends"`` (those the run delivers to), ``"all"`` (every
        key of :data:`TRACKER_SETTINGS`), or an explicit list of settings keys.
    :param batch_events: also journal a step_start/step_end event around every training batch.
    :param max_predict_images: annotated images logged per ``predict`` call.
    :returns: the run.
    """
    if not (hasattr(model, "add_callback") and isinstance(getattr(model, "callbacks", None), Mapping)):
        raise TypeError(f"attach takes an Ultralytics model such as YOLO(...), got {type(model).__name__}")
    if vars(model).get(_ATTRIBUTE) is not None:
        raise RuntimeError("this model is attached to a loggerhub run already; call detach(model) first")
    owns_run = run is None
    if run is None:
        import loggerhub

        run = loggerhub.init(project=project or "ultralytics", name=name, backends=backends, **init_kwargs)
    elif backends is not None or project is not None or name is not None or init_kwargs:
        raise TypeError("pass either run= or the arguments of loggerhub.init, not both")
    if max_predict_images < 0:
        raise ValueError("max_predict_images must be >= 0")
    adapter = _Adapter(
        run,
        owns_run=owns_run,
        switch_off=_settings_keys(switch_off, run),
        batch_events=batch_events,
        max_predict_images=max_predict_images,
    )
    adapter.attach(model)
    return run


def detach(model: Any) -> None:
    """Stop logging ``model``: remove the adapter's callbacks and wrappers. The run is not ended."""
    adapter = vars(model).get(_ATTRIBUTE)
    if adapter is not None:
        adapter.detach()


def log_results_dir(run: Run, save_dir: str | Path, *, batches_per_epoch: int | None = None) -> int:
    """Log a finished Ultralytics training directory into ``run``; return the last epoch.

    This is what a live attachment logs, read back from the files a training leaves: ``args.yaml``
    as params, every row of ``results.csv`` as the metrics of its epoch, the plots and sample
    batches, ``weights/best.pt`` and ``weights/last.pt``, ``results.csv`` and ``args.yaml``.
    The adapter uses it for multi-GPU (DDP) trainings, whose callbacks run in worker processes;
    it also brings trainings that ran without loggerhub into a run.

    The files record epochs, not optimizer steps: each epoch's step is replayed from Ultralytics'
    gradient-accumulation schedule (:func:`optimizer_steps_by_epoch`), with the training batches
    per epoch (per GPU) counted from the training images of ``args.yaml``'s dataset unless
    ``batches_per_epoch`` gives them.
    """
    save_dir = Path(save_dir)
    if not (save_dir / "results.csv").is_file():
        raise FileNotFoundError(f"no results.csv in {save_dir}: not a finished Ultralytics training")
    args: dict[str, Any] = {}
    args_file = save_dir / "args.yaml"
    if args_file.is_file():
        import yaml

        args = yaml.safe_load(args_file.read_text(encoding="utf-8")) or {}
        run.log_params({f"args/{key}": value for key, value in args.items()})
    with (save_dir / "results.csv").open(newline="", encoding="utf-8") as handle:
        rows = [{key.strip(): value.strip() for key, value in row.items() if key and value}
                for row in csv.DictReader(handle)]
    epochs = [int(float(row.pop("epoch"))) for row in rows]
    if batches_per_epoch is None:
        batches_per_epoch = _batches_per_epoch(args)
    steps = [0, *optimizer_steps_by_epoch(batches_per_epoch, args, epochs=max(epochs, default=0))]
    run.log_event("train_start", step=0)
    for epoch, row in zip(epochs, rows, strict=True):
        row.pop("time", None)
        run.log_metrics({key: float(value) for key, value in row.items()}, step=steps[epoch], epoch=epoch)
    last = max(epochs, default=0)
    weights = save_dir / "weights"
    for snapshot in sorted(weights.glob("epoch*.pt")):
        index = snapshot.stem[5:]  # Ultralytics names periodic snapshots by the 0-based epoch
        if index.isdigit() and int(index) < last:
            run.log_checkpoint(snapshot, name=f"weights/{snapshot.name}", step=steps[int(index) + 1])
    _log_outputs(run, save_dir, [], set(), steps[last], weights=(weights / "best.pt", weights / "last.pt"))
    run.log_event("train_end", step=steps[last])
    return last


def optimizer_steps_by_epoch(
    batches_per_epoch: int, args: Mapping[str, Any], *, epochs: int | None = None
) -> list[int]:
    """The optimizer steps completed at the end of each epoch of an Ultralytics training.

    A replay of the schedule of ``BaseTrainer._do_train``: the optimizer steps once ``accumulate``
    batches have passed since its last step, ``accumulate`` being ``round(nbs / batch)`` (at most
    the training's batch count), ramped up from 1 over the warmup iterations; the count of batches
    since the last step carries over from one epoch into the next. ``args`` are the training
    arguments (``batch``, ``nbs``, ``epochs``, ``warmup_epochs``), ``batches_per_epoch`` the length
    of one GPU's training loader. Exact for a training that ran from start to end; a resumed
    training, one whose batch Ultralytics halved after running out of memory, one that redid an
    epoch to recover from NaN losses, or one limited by ``time`` stepped differently.
    """
    import numpy as np

    nb = int(batches_per_epoch)
    planned = int(args.get("epochs") or 0)
    epochs = planned if epochs is None else epochs
    batch = args.get("batch") or 16
    accumulate = max(round(float(args.get("nbs") or 64) / batch), 1) if batch >= 1 else 1
    if not args.get("time"):
        accumulate = min(accumulate, nb * max(planned, 1))
    warmup_epochs = min(float(args.get("warmup_epochs") or 0), max(planned - 1, 0))
    warmup = round(warmup_epochs * nb) if warmup_epochs > 0 else 0
    steps, done, last = [], 0, -1  # ``last``: the batch index of the last optimizer step
    for epoch in range(epochs):
        ni, end = nb * epoch, nb * (epoch + 1)
        while ni < end and ni <= warmup and warmup:
            if ni - last >= max(1, int(np.interp(ni, [0, warmup], [1, accumulate]).round())):
                done, last = done + 1, ni
            ni += 1
        first = max(ni, last + accumulate)  # after warmup: a step every `accumulate` batches
        if first < end:
            taken = (end - 1 - first) // accumulate + 1
            done, last = done + taken, first + (taken - 1) * accumulate
        steps.append(done)
    return steps


def _batches_per_epoch(args: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> int:
    """One GPU's training batches per epoch, counted from the training images' files.

    ``data`` is the trainer's resolved dataset, else ``args["data"]`` is resolved offline. Images
    that Ultralytics skips as corrupt are counted; ``fraction`` is applied to the whole split.
    """
    from ultralytics.data.utils import IMG_FORMATS, check_cls_dataset, check_det_dataset

    if data is None and not args.get("data"):
        raise ValueError("no dataset in args.yaml to count the batches per epoch: pass batches_per_epoch")
    if data is None:
        if args.get("task") == "classify":
            data = check_cls_dataset(args["data"])
        else:
            data = check_det_dataset(args["data"], autodownload=False)
    sources = data["train"] if isinstance(data["train"], list) else [data["train"]]
    images = 0
    for source in map(Path, sources):
        if source.is_dir():
            images += sum(1 for p in source.rglob("*.*") if p.suffix[1:].lower() in IMG_FORMATS)
        elif source.is_file():
            lines = source.read_text(encoding="utf-8-sig").split()
            images += sum(1 for line in lines if line.rpartition(".")[-1].lower() in IMG_FORMATS)
    fraction = args.get("fraction", 1.0)
    if isinstance(fraction, int) and not isinstance(fraction, bool) and fraction > 1:
        images = min(images, fraction)
    elif isinstance(fraction, float) and fraction < 1:
        images = max(1, round(images * fraction))
    device = str(args.get("device") or "")
    world = len(device.split(":", 1)[-1].split(",")) if "," in device else 1
    if not images:
        return 1
    # Each GPU loads ceil(images / world) images (DistributedSampler pads the last shard) in
    # batches of batch // world, never larger than the dataset, the last one partial.
    batch = min(max(int(args.get("batch") or 16) // world, 1), images)
    return math.ceil(math.ceil(images / world) / batch)


# --------------------------------------------------------------------------- the adapter


class _Callback:
    """What the adapter registers for one Ultralytics event: picklable, found again by identity."""

    __slots__ = ("adapter", "event")

    def __init__(self, adapter: _Adapter, event: str) -> None:
        self.adapter = adapter
        self.event = event

    def __call__(self, subject: Any) -> None:
        self.adapter.dispatch(self.event, subject)

    def __repr__(self) -> str:
        return f"<loggerhub callback {self.event}>"


class _Adapter:
    """Turns one model's Ultralytics callbacks into records of one run."""

    def __init__(
        self,
        run: Run | None,
        *,
        owns_run: bool,
        switch_off: tuple[str, ...],
        batch_events: bool,
        max_predict_images: int,
    ) -> None:
        self.run = run
        self.owns_run = owns_run
        self.switch_off = switch_off
        self.batch_events = batch_events
        self.max_predict_images = max_predict_images
        self.detached = False
        self._model: Any = None
        self._callbacks: list[tuple[str, _Callback]] = []
        self._wrapped: dict[str, Callable[..., Any]] = {}
        self._predicted: Counter[str] = Counter()
        self._new_training(None)

    def __reduce__(self) -> tuple[Any, ...]:
        # A DDP launch pickles the trainer's callbacks into its worker processes. The run, with its
        # journal thread and lock, stays here: workers get an inert adapter that only keeps
        # Ultralytics' own loggers off, and this process logs the training from its files.
        return (_Adapter._for_ddp_worker, (self.switch_off,))

    @classmethod
    def _for_ddp_worker(cls, switch_off: tuple[str, ...]) -> _Adapter:
        return cls(None, owns_run=False, switch_off=switch_off, batch_events=False, max_predict_images=0)

    # -- attaching ------------------------------------------------------------------------------

    def attach(self, model: Any) -> None:
        from ultralytics.utils.callbacks.base import default_callbacks

        self._model = model
        events = dict.fromkeys([*default_callbacks, *model.callbacks])
        for event in events:
            callback = _Callback(self, event)
            model.add_callback(event, callback)
            self._callbacks.append((event, callback))
        # Ultralytics has no callback for a failed training, and the exported file's path is only
        # returned to the caller: wrap both calls on this instance only.
        for method, wrapper in (("train", self._train), ("export", self._export)):
            original = getattr(model, method)
            self._wrapped[method] = original
            setattr(model, method, _wrap(wrapper, original))
        model.__dict__[_ATTRIBUTE] = self

    def detach(self) -> None:
        if self.detached:
            return
        self.detached = True
        model = self._model
        if model is None:
            return
        for event, callback in self._callbacks:
            callbacks = model.callbacks.get(event, [])
            callbacks[:] = [c for c in callbacks if c is not callback]
        for method in self._wrapped:
            if method in vars(model):
                delattr(model, method)
        model.__dict__.pop(_ATTRIBUTE, None)
        self._callbacks.clear()
        self._wrapped.clear()

    # -- dispatch -------------------------------------------------------------------------------

    def dispatch(self, event: str, subject: Any) -> None:
        if self.run is None:  # a copy in a DDP worker process
            if event == "on_pretrain_routine_start":
                _strip_tracker_callbacks(subject, self.switch_off)
            return
        if self.detached or not _is_main_rank():
            return
        handler = getattr(self, "_on_" + event.removeprefix("on_"), None)
        if handler is not None:  # else an event with nothing to log, e.g. one Ultralytics never calls
            self._guarded(event, lambda: handler(subject))

    @staticmethod
    def _guarded(what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as error:  # noqa: BLE001 - logging must never stop a training
            warnings.warn(
                f"loggerhub: the Ultralytics adapter could not log {what}: {type(error).__name__}: {error}",
                AdapterWarning,
                stacklevel=3,
            )

    # -- the wrapped calls ------------------------------------------------------------------------

    def _train(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        saved = _switch_off(self.switch_off)
        try:
            result = original(*args, **kwargs)
        except BaseException as error:
            _restore(saved)
            self._guarded("the end of a failed training", self._close_training)
            if self.owns_run:
                self._finish(status_for(type(error), error).value, error)
            raise
        _restore(saved)
        trainer = getattr(self._model, "trainer", None)
        if trainer is not None and getattr(trainer, "ddp", False) and not self.detached:
            # The workers ran the callbacks: log what they left on disk.
            self._guarded("a DDP training", lambda: log_results_dir(
                self._live_run(), trainer.save_dir,
                batches_per_epoch=_batches_per_epoch(vars(trainer.args), trainer.data)))
        if self.owns_run:
            self._finish("FINISHED")
        return result

    def _export(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        exported = original(*args, **kwargs)
        if exported and not self.detached and _is_main_rank() and Path(exported).exists():
            self._live_run().log_artifact(
                exported, name=f"export/{Path(exported).name}", kind="model", step=self._current_step()
            )
        return exported

    def _finish(self, status: str, error: BaseException | None = None) -> None:
        self.detach()
        self._live_run().finish(status, exc=error)

    # -- training -------------------------------------------------------------------------------

    def _new_training(self, trainer: Any) -> None:
        self._trainer = trainer
        self._args: dict[str, Any] = {}
        self._started = False
        self._last_epoch: int | None = None  # 1-based number of the last epoch that trained
        self._last_step: int | None = None  # optimizer steps completed when that epoch ended
        self._validated: int | None = None  # 1-based number of the last epoch validated
        self._model_info_logged = False
        self._logged_files: set[Path] = set()

    def _on_pretrain_routine_start(self, trainer: Any) -> None:
        import ultralytics

        self._new_training(trainer)
        self._args = dict(vars(trainer.args))
        params = {f"args/{key}": value for key, value in self._args.items()}
        params["ultralytics/version"] = ultralytics.__version__
        self._live_run().log_params(params)

    def _on_pretrain_routine_end(self, trainer: Any) -> None:
        # Setup may settle arguments (an auto batch size, the resolved dataset): log what changed.
        changed = {}
        for key, value in vars(trainer.args).items():
            if key not in self._args or not _same(self._args[key], value):
                changed[f"args/{key}"] = value
                self._args[key] = value
        if changed:
            self._live_run().log_params(changed)

    def _on_train_start(self, trainer: Any) -> None:
        self._started = True
        self._live_run().log_event("train_start", step=_optimizer_steps(trainer))

    def _on_train_epoch_start(self, trainer: Any) -> None:
        epoch = trainer.epoch + 1
        self._live_run().log_event("epoch_start", step=_optimizer_steps(trainer), epoch=epoch)

    def _on_train_batch_start(self, trainer: Any) -> None:
        if self.batch_events:
            self._live_run().log_event("step_start", step=_optimizer_steps(trainer), epoch=trainer.epoch + 1)

    def _on_train_batch_end(self, trainer: Any) -> None:
        if self.batch_events:
            self._live_run().log_event("step_end", step=_optimizer_steps(trainer), epoch=trainer.epoch + 1)

    def _on_train_epoch_end(self, trainer: Any) -> None:
        run = self._live_run()
        epoch = self._last_epoch = trainer.epoch + 1
        step = self._last_step = _optimizer_steps(trainer)
        metrics: dict[str, Any] = {}
        if trainer.tloss is not None:
            metrics.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
        metrics.update(getattr(trainer, "lr", None) or {})
        if metrics:
            run.log_metrics(metrics, step=step, epoch=epoch)
        # Mosaics are plotted during the first batches (and again when mosaic closes), each in a
        # background thread: log each file once, at the first epoch end that finds it complete.
        for path in sorted(Path(trainer.save_dir).glob("train_batch*")):
            if path not in self._logged_files and _complete_picture(path):
                self._logged_files.add(path)
                _log_picture(run, path, "", step, epoch=epoch)

    def _on_model_save(self, trainer: Any) -> None:
        # Periodic snapshots (save_period=N) still hold the optimizer state: they are checkpoints.
        period = getattr(trainer, "save_period", -1) or -1
        if period > 0 and trainer.epoch % period == 0:
            path = Path(trainer.wdir) / f"epoch{trainer.epoch}.pt"
            if path.is_file():
                self._live_run().log_checkpoint(path, name=f"weights/{path.name}", step=_optimizer_steps(trainer))

    def _on_fit_epoch_end(self, trainer: Any) -> None:
        run = self._live_run()
        epoch = trainer.epoch + 1
        if self._last_epoch is not None and epoch == self._last_epoch:
            step = _optimizer_steps(trainer)
            if self._validated == epoch:  # with val=False, trainer.metrics holds stale values
                run.log_metrics(dict(trainer.metrics), step=step, epoch=epoch)
                if not self._model_info_logged:
                    self._model_info_logged = True
                    from ultralytics.utils.torch_utils import model_info_for_loggers

                    run.log_params(model_info_for_loggers(trainer))
            run.log_event("epoch_end", step=step, epoch=epoch)
            return
        # Ultralytics calls this once more, with the epoch counter raised by one, for its final
        # evaluation of best.pt: that is not an epoch, so it lands under best/ at the last step.
        best = {f"best/{key}": value for key, value in dict(trainer.metrics).items()}
        if best:
            run.log_metrics(best, step=self._training_step(trainer), epoch=self._last_epoch)

    def _on_train_end(self, trainer: Any) -> None:
        step = self._training_step(trainer)
        validator = getattr(trainer, "validator", None)
        plots = [*getattr(trainer, "plots", {}), *getattr(validator, "plots", {})]
        _log_outputs(
            self._live_run(), Path(trainer.save_dir), plots, self._logged_files, step,
            weights=(Path(trainer.best), Path(trainer.last)),
        )
        if validator is not None:
            _log_confusion_matrix(self._live_run(), validator, "val/confusion_matrix", step)

    def _on_teardown(self, trainer: Any) -> None:
        self._close_training()

    def _close_training(self) -> None:
        """Training ends whatever the outcome: teardown runs on failure too, this wrapper as well."""
        if self._trainer is not None and self._started:
            self._live_run().log_event("train_end", step=self._training_step(self._trainer))
        self._new_training(None)

    def _training_step(self, trainer: Any) -> int:
        """The step of what closes a training: that of its last epoch's end."""
        return self._last_step if self._last_step is not None else _optimizer_steps(trainer)

    # -- validation -----------------------------------------------------------------------------

    def _on_val_end(self, validator: Any) -> None:
        run = self._live_run()
        if self._trainer is None:
            self._log_validation(validator)
            return
        if validator.training:
            epoch = self._trainer.epoch + 1
            self._validated = epoch
            run.log_event("validation_end", step=_optimizer_steps(self._trainer), epoch=epoch)
        else:  # the final evaluation of best.pt; its metrics arrive in on_fit_epoch_end
            run.log_event("validation_end", step=self._training_step(self._trainer), epoch=self._last_epoch)

    def _log_validation(self, validator: Any) -> None:
        """A validation outside training (``model.val()``): everything under ``val/``."""
        run = self._live_run()
        step = self._current_step()
        metrics = {f"val/{key}": value for key, value in _results(validator.metrics).items()}
        metrics.update({f"val/speed/{key}(ms)": value for key, value in (validator.speed or {}).items()})
        if metrics:
            run.log_metrics(metrics, step=step)
        _log_pictures(run, [Path(p) for p in list(getattr(validator, "plots", {}))], set(), "val/", step)
        _log_confusion_matrix(run, validator, "val/confusion_matrix", step)
        run.log_event("validation_end", step=step)

    # -- prediction -----------------------------------------------------------------------------

    def _on_predict_start(self, predictor: Any) -> None:
        self._predicted = Counter()

    def _on_predict_batch_end(self, predictor: Any) -> None:
        step = self._current_step()
        for result in getattr(predictor, "results", None) or ():
            if self._predicted.total() >= self.max_predict_images:
                return
            # Frames of one video share a file name: number the repeats.
            key = f"predict/{Path(result.path).stem}"
            self._predicted[key] += 1
            if self._predicted[key] > 1:
                key = f"{key}-{self._predicted[key]}"
            _log_prediction(self._live_run(), result, key, step)

    def _on_predict_end(self, predictor: Any) -> None:
        seen = getattr(predictor, "seen", 0)
        if not seen:
            return
        metrics = {"predict/images": seen}
        metrics.update({f"predict/speed/{key}(ms)": value for key, value in (predictor.speed or {}).items()})
        self._live_run().log_metrics(metrics, step=self._current_step())

    # -- helpers --------------------------------------------------------------------------------

    def _current_step(self) -> int:
        return max(self._live_run().step, 0)

    def _live_run(self) -> Run:
        assert self.run is not None
        return self.run


# --------------------------------------------------------------------------- records


def _log_outputs(
    run: Run, save_dir: Path, plots: Iterable[Any], logged: set[Path], step: int, *, weights: Iterable[Path]
) -> None:
    """What a training leaves at its end: plots, sample batches, weights, results.csv, args.yaml."""
    pictures = [Path(p) for p in plots]
    # The trainer's and validator's plot registries miss some files (results.png in older
    # versions), so the directory listing completes them.
    pictures += sorted(p for p in save_dir.iterdir() if p.suffix.lower() in _PICTURE_SUFFIXES)
    _log_pictures(run, pictures, logged, "", step)
    # Ultralytics strips the optimizer from best.pt and last.pt when training ends: they are the
    # run's trained models, not resumable checkpoints, so they go out as model artifacts.
    for path in weights:
        if path.is_file():
            run.log_artifact(path, name=f"weights/{path.name}", kind="model", step=step)
    for name in ("results.csv", "args.yaml"):
        if (save_dir / name).is_file():
            run.log_artifact(save_dir / name, name=name, kind="file", step=step)


def _log_pictures(run: Run, paths: Iterable[Path], logged: set[Path], prefix: str, step: int) -> None:
    """Log each picture once, waiting a little for those Ultralytics is still writing."""
    pending = [p for p in dict.fromkeys(paths) if p not in logged and p.is_file()]
    deadline = time.monotonic() + PLOT_WAIT_SECONDS
    while pending:
        still = []
        for path in pending:
            if _complete_picture(path):
                logged.add(path)
                _log_picture(run, path, prefix, step)
            else:
                still.append(path)
        pending = still
        if pending and time.monotonic() > deadline:
            names = ", ".join(p.name for p in pending)
            warnings.warn(f"loggerhub: plots still incomplete after {PLOT_WAIT_SECONDS:.0f} s were not "
                          f"logged: {names}", AdapterWarning, stacklevel=3)
            return
        if pending:
            time.sleep(0.05)


def _complete_picture(path: Path) -> bool:
    """True once a PNG or JPEG is whole.

    Ultralytics writes plots from background threads, so a file can be seen half-written. The
    check reads the file's end instead of decoding it, because Ultralytics patches PIL's open to
    try installing a HEIF plugin on any file it cannot identify.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 12))
            tail = handle.read()
    except OSError:
        return False
    if path.suffix.lower() == ".png":
        return tail.endswith(b"IEND\xaeB`\x82")
    return tail.rstrip(b"\x00").endswith(b"\xff\xd9")


def _log_picture(run: Run, path: Path, prefix: str, step: int, *, epoch: int | None = None) -> None:
    if path.stem.startswith(_SAMPLE_PREFIXES):
        run.log_image(f"{prefix}images/{path.stem}", path, step=step, epoch=epoch)
    else:
        run.log_figure(f"{prefix}plots/{path.stem}", path, step=step)


def _log_confusion_matrix(run: Run, validator: Any, key: str, step: int) -> None:
    import numpy as np

    matrix = getattr(getattr(validator, "confusion_matrix", None), "matrix", None)
    if matrix is None:
        return
    names = getattr(validator.confusion_matrix, "names", None) or getattr(validator, "names", None) or {}
    labels = [str(n) for n in (names.values() if isinstance(names, Mapping) else names)]
    # Ultralytics counts predicted classes in rows; loggerhub's rows are the true classes.
    table = np.asarray(matrix).T
    size = table.shape[0]
    labels = (labels + ["background"])[:size]
    labels += [str(i) for i in range(len(labels), size)]
    if np.all(np.mod(table, 1) == 0):
        table = table.astype(np.int64)
    run.log_confusion_matrix(key, table, labels, step=step)


def _log_prediction(run: Run, result: Any, key: str, step: int) -> None:
    from loggerhub_hookspecs import Box

    image = result.orig_img[..., ::-1]  # Ultralytics keeps OpenCV's BGR
    names = result.names or {}
    found = result.boxes if getattr(result, "boxes", None) is not None else getattr(result, "obb", None)
    boxes = []
    if found is not None and len(found):
        rows = zip(found.xyxy.tolist(), found.cls.tolist(), found.conf.tolist(), strict=True)
        for (x0, y0, x1, y1), cls, conf in rows:
            label = str(names.get(int(cls), int(cls)))
            boxes.append(Box(x0, y0, x1, y1, label=label, score=conf, class_id=int(cls)))
    caption = None
    probs = getattr(result, "probs", None)
    if probs is not None:
        caption = f"{names.get(int(probs.top1), probs.top1)} {float(probs.top1conf):.3f}"
    run.log_image(key, image, step=step, boxes=boxes, caption=caption)


def _results(metrics: Any) -> dict[str, float]:
    results = getattr(metrics, "results_dict", metrics)
    if not isinstance(results, Mapping):
        return {}
    return {str(key): float(value) for key, value in results.items()}


# --------------------------------------------------------------------------- Ultralytics' own loggers


def _settings_keys(switch_off: str | Iterable[str], run: Run) -> tuple[str, ...]:
    if switch_off == "backends":
        return tuple(name for name in getattr(run, "backends", ()) if name in TRACKER_SETTINGS)
    if switch_off == "all":
        return TRACKER_SETTINGS
    if isinstance(switch_off, str):
        raise ValueError(f"switch_off takes 'backends', 'all' or a list of settings keys, got {switch_off!r}")
    keys = tuple(switch_off)
    unknown = [key for key in keys if key not in TRACKER_SETTINGS]
    if unknown:
        raise ValueError(
            f"unknown Ultralytics tracker settings {unknown}; known: {', '.join(TRACKER_SETTINGS)}"
        )
    return keys


def _switch_off(keys: Iterable[str]) -> dict[str, Any]:
    """Turn Ultralytics' own integrations off for the trainer about to be built.

    Ultralytics reads these settings when it builds each trainer. They are changed in memory only:
    writing them would leave the user's settings file changed if this process were killed, and
    change them for every other process sharing it.
    """
    from ultralytics.utils import SETTINGS

    saved = {}
    for key in keys:
        if key in SETTINGS and SETTINGS[key] is not False:
            saved[key] = SETTINGS[key]
            dict.__setitem__(SETTINGS, key, False)
    return saved


def _restore(saved: Mapping[str, Any]) -> None:
    if not saved:
        return
    from ultralytics.utils import SETTINGS

    for key, value in saved.items():
        dict.__setitem__(SETTINGS, key, value)


def _strip_tracker_callbacks(trainer: Any, keys: Iterable[str]) -> None:
    """In a DDP worker the in-memory settings are gone: drop those integrations' callbacks instead.

    Ultralytics appends its integrations after the callbacks it was given, so they come after
    this one in the list being run, and replacing the lists' contents in place is safe.
    """
    modules = {f"ultralytics.utils.callbacks.{'wb' if key == 'wandb' else key}" for key in keys}
    for callbacks in trainer.callbacks.values():
        callbacks[:] = [c for c in callbacks if getattr(c, "__module__", None) not in modules]


# --------------------------------------------------------------------------- small helpers


def _wrap(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        return wrapper(original, *args, **kwargs)

    return call


def _optimizer_steps(trainer: Any) -> int:
    """The optimizer steps the trainer has completed.

    Ultralytics counts them in its EMA: ``optimizer_step`` updates the EMA once per optimizer
    step, and the count is saved in every checkpoint, restored on resume and rolled back with the
    weights when an epoch is redone after NaN losses. There is no EMA before ``on_train_start``.
    """
    return int(getattr(getattr(trainer, "ema", None), "updates", 0) or 0)


def _is_main_rank() -> bool:
    from ultralytics.utils import RANK

    return RANK in (-1, 0)


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a plain == (arrays) count as changed
        return False

