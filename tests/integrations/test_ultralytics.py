"""The Ultralytics adapter: real YOLO trainings on CPU, offline, read back from the journal and
from the storage of every tracker whose backend is installed."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loggerhub.journal import Entry, JournalReader

pytestmark = pytest.mark.filterwarnings("error::loggerhub.integrations.ultralytics.AdapterWarning")

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- reading the journal


def journal(run_dir: Path) -> list[Entry]:
    return list(JournalReader(run_dir).entries())


def of_type(entries: list[Entry], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in entries if e.type == kind]


def metric_series(entries: list[Entry]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for data in of_type(entries, "metrics"):
        for key, value in data["values"].items():
            series[key].append((data["step"], value))
    return dict(series)


def params(entries: list[Entry]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for data in of_type(entries, "params"):
        merged.update(data["params"])
    return merged


def events(entries: list[Entry]) -> list[tuple[str, int]]:
    return [(d["phase"], d["step"]) for d in of_type(entries, "event")]


def by_key(entries: list[Entry], kind: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for data in of_type(entries, kind):
        found[data.get("key") or data.get("name")].append(data)
    return dict(found)


def results_csv(save_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Ultralytics' own per-epoch record of a training, as metric series."""
    import csv

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with (save_dir / "results.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            epoch = int(float(row.pop("epoch")))
            row.pop("time")
            for key, value in row.items():
                series[key.strip()].append((epoch, float(value)))
    return dict(series)


def at_steps(series: list[tuple[int, float]], epoch_steps: list[int]) -> list[tuple[int, float]]:
    """A results.csv series (1-based epochs) moved to the optimizer step that closed each epoch."""
    return [(epoch_steps[epoch - 1], value) for epoch, value in series]


#: The tiny trainings of conftest.train_args take one optimizer step per batch of 4: 8 images
#: make 2 steps per epoch.
STEPS_PER_EPOCH = 2


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


def same_series(got: list[tuple[int, float]], want: list[tuple[int, float]], rel: float = 1e-5) -> bool:
    got, want = sorted(got), sorted(want)
    return len(got) == len(want) and all(
        gs == ws and close(gv, wv, rel) for (gs, gv), (ws, wv) in zip(got, want, strict=True))


def pictures(save_dir: Path) -> list[Path]:
    return sorted(p for p in save_dir.iterdir() if p.suffix in (".png", ".jpg"))


# --------------------------------------------------------------------------- reading trackers


@dataclass
class Stored:
    """What one tracker stored for a run, keyed by the tracker's own names."""

    status: str | None = None
    params: set[str] = field(default_factory=set)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=dict)
    artifacts: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)


def tracker_state(run_dir: Path, tracker: str) -> dict[str, Any]:
    from loggerhub.delivery import ConsumerStatus
    from loggerhub.journal import RunPaths

    return ConsumerStatus.load(RunPaths(run_dir).consumer_file(tracker)).state or {}


def read_tracker(tracker: str, run_dir: Path, run_id: str, options: Mapping[str, Any]) -> Stored:
    state = tracker_state(run_dir, tracker)
    return {"comet": _read_comet, "neptune": _read_neptune, "tensorboard": _read_tensorboard,
            "mlflow": _read_mlflow}[tracker](run_dir, run_id, options, state)


def _read_comet(run_dir: Path, run_id: str, options: Mapping[str, Any], state: dict[str, Any]) -> Stored:
    from loggerhub_comet.offline import read_offline_dir

    experiment = read_offline_dir(options["offline_dir"])[state["experiment_key"]]
    stored = Stored(status=experiment["others"].get("status"), params=set(experiment["params"]))
    stored.metrics = {name: [(p["step"], p["value"]) for p in points]
                      for name, points in experiment["metrics"].items()}
    for upload in experiment["uploads"]:
        kind = upload["metadata"].get("loggerhub")
        if upload["upload_type"] == "visualization" and kind in ("image", "figure"):
            target = stored.images if kind == "image" else stored.figures
            target[upload["name"]] = target.get(upload["name"], 0) + 1
        elif upload["upload_type"] == "confusion-matrix":
            stored.tables.add(upload["content"]["title"])
        elif kind == "table":
            stored.tables.add(upload["metadata"]["key"])
        elif upload["upload_type"] in ("asset", "model-element"):
            stored.artifacts.add(f"{upload.get('group') or ''}/{upload['name']}")
    return stored


def _read_neptune(run_dir: Path, run_id: str, options: Mapping[str, Any], state: dict[str, Any]) -> Stored:
    from loggerhub_neptune import offline

    fields = offline.merge_parts(offline.read_run(options["data_dir"], run_id))
    stored = Stored(status=fields.get("loggerhub/status", {}).get("value"))
    figures = set(fields.get("loggerhub/figures", {}).get("values", []))
    for path, value in fields.items():
        root, kind = path.split("/")[0], value["type"]
        if root == "parameters":
            stored.params.add(path.removeprefix("parameters/"))
        elif root in ("models", "artifacts"):
            if kind == "file":
                stored.artifacts.add(path)
            else:
                stored.artifacts.update(f"{path}/{name}" for name in offline.file_set_files(value))
        elif root in ("loggerhub", "sys", "source_code", "monitoring"):
            continue
        elif kind == "float_series":
            stored.metrics[path] = [(v["step"], v["value"]) for v in value["values"]]
        elif kind == "image_series":
            (stored.figures if path in figures else stored.images)[path] = len(value["values"])
        elif kind == "file" and value.get("ext") == "csv":
            stored.tables.add(path)
    return stored


def _read_tensorboard(run_dir: Path, run_id: str, options: Mapping[str, Any],
                      state: dict[str, Any]) -> Stored:
    from loggerhub_tensorboard.reader import read_logdir

    tb = read_logdir(state["logdir"])
    images = {tag: len(series) for tag, series in tb.images.items()}
    # README: params logged after the first metric reach the Text tab only, as markdown tables.
    later = {line.split("|")[1].strip().replace("\\_", "_")
             for text in tb.texts.get("_loggerhub_/params", []) for line in text.text.splitlines()[2:]}
    return Stored(
        status=tb.status,
        params=set(tb.hparams) | later,
        metrics={tag: [(s.step, s.value) for s in series] for tag, series in tb.scalars.items()},
        images=images,
        figures=images,  # TensorBoard shows both in its Images tab
        artifacts=set(tb.files),
        tables={tag for tag, series in tb.texts.items() if series[-1].text.startswith("| ")},
    )


def _read_mlflow(run_dir: Path, run_id: str, options: Mapping[str, Any], state: dict[str, Any]) -> Stored:
    from loggerhub_mlflow.testing import read_back

    view = read_back(options["tracking_uri"], state["run_id"])
    return Stored(status=view.status, params=set(view.params), metrics=view.metrics, images=view.images,
                  figures=view.figures, artifacts=set(view.artifacts), tables=set(view.tables))


def tracker_key(tracker: str, key: str) -> str:
    import importlib

    return str(importlib.import_module(f"loggerhub_{tracker}.keys").to_tracker(key))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def detect(
    tmp_path_factory: pytest.TempPathFactory,
    detect_data: Path,
    train_kwargs: Any,
    trackers: list[str],
    tracker_options: Any,
) -> Iterator[SimpleNamespace]:
    """One detection training, logged to the local journal and every installed tracker.

    Batches of 2 with ``nbs=4`` make Ultralytics accumulate gradients over 2 batches, ramped up
    from 1 during warmup: the 4 batches of epoch 1 take 3 optimizer steps, those of epoch 2 take 2.
    The training counts its optimizer steps itself, by wrapping the trainer's ``optimizer_step``.
    """
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    from loggerhub.integrations.ultralytics import TRACKER_SETTINGS, attach

    root = tmp_path_factory.mktemp("detect")
    keys = [key for key in TRACKER_SETTINGS if key in SETTINGS]
    original = {key: SETTINGS[key] for key in keys}
    # Every Ultralytics integration on, as a user may have it: attaching must switch off those
    # of the run's trackers while it trains, and only those.
    SETTINGS.update(dict.fromkeys(keys, True))
    seen: dict[str, Any] = {}

    def probe(trainer: Any) -> None:
        seen["settings"] = {key: SETTINGS[key] for key in keys}
        found = {getattr(c, "__module__", "") for cs in trainer.callbacks.values() for c in cs}
        seen["modules"] = sorted(found)
        seen["optimizer_steps"] = 0
        step = trainer.optimizer_step

        def counted() -> None:
            step()
            seen["optimizer_steps"] += 1

        trainer.optimizer_step = counted

    def epoch_ended(trainer: Any) -> None:
        seen.setdefault("epoch_steps", []).append(seen["optimizer_steps"])

    try:
        model = YOLO("yolo11n.yaml")
        model.add_callback("on_train_start", probe)
        model.add_callback("on_train_epoch_end", epoch_ended)
        options = {name: tracker_options(name, root) for name in trackers}
        run = attach(model, backends=trackers, project="e2e", name="detect", dir=root / "runs",
                     options=options, drain_timeout=240)
        started = time.monotonic()
        model.train(data=str(detect_data), **train_kwargs(root, "detect", batch=2))
        seconds = time.monotonic() - started
        after = {key: SETTINGS[key] for key in keys}
        yield SimpleNamespace(
            run=run, model=model, trainer=model.trainer, save_dir=Path(model.trainer.save_dir),
            entries=journal(run.dir), trackers=trackers, options=options, root=root, seconds=seconds,
            settings_during=seen["settings"], modules_during=seen["modules"], settings_after=after,
            switched=[key for key in keys if key in trackers], epoch_steps=seen["epoch_steps"],
        )
    finally:
        SETTINGS.update(original)


# --------------------------------------------------------------------------- import and API


def test_importing_the_adapter_imports_neither_ultralytics_nor_torch() -> None:
    code = ("import sys, loggerhub.integrations.ultralytics, loggerhub.integrations.yolo_cli; "
            "print(sorted(m for m in ('ultralytics', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_attach_refuses_what_it_cannot_log_and_detach_undoes_it(tmp_path: Path) -> None:
    from ultralytics import YOLO

    from loggerhub.integrations.ultralytics import attach, detach

    with pytest.raises(TypeError, match="Ultralytics model"):
        attach(object(), backends=["local"], dir=tmp_path)
    model = YOLO("yolo11n.yaml")
    before = {event: list(callbacks) for event, callbacks in model.callbacks.items()}
    run = attach(model, backends=["local"], dir=tmp_path, project="api")
    try:
        assert all(len(model.callbacks[event]) == len(before.get(event, [])) + 1 for event in model.callbacks)
        assert "train" in vars(model) and "export" in vars(model)
        with pytest.raises(RuntimeError, match="attached"):
            attach(model, run=run)
        with pytest.raises(TypeError, match="not both"):
            attach(YOLO("yolo11n.yaml"), run=run, project="other")
        with pytest.raises(ValueError, match="switch_off"):
            attach(YOLO("yolo11n.yaml"), run=run, switch_off="everything")
        detach(model)
        assert {event: list(callbacks) for event, callbacks in model.callbacks.items() if callbacks} == {
            event: callbacks for event, callbacks in before.items() if callbacks}
        assert "train" not in vars(model) and "export" not in vars(model)
        attach(model, run=run)  # attachable again after detach
        detach(model)
    finally:
        run.finish()
    assert [e.type for e in journal(run.dir)] == ["run_start", "run_end"]


def test_ddp_workers_get_an_inert_adapter_that_keeps_ultralytics_loggers_off(tmp_path: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    from ultralytics import YOLO

    from loggerhub.integrations.ultralytics import attach

    model = YOLO("yolo11n.yaml")
    run = attach(model, backends=["local"], dir=tmp_path, project="ddp", switch_off=["comet"])
    # What Ultralytics' generate_ddp_file saves for its workers, with the same pickler.
    callbacks = pickle.loads(cloudpickle.dumps(dict(model.callbacks)))
    run.finish()
    ours = [c for cs in callbacks.values() for c in cs if type(c).__name__ == "_Callback"]
    assert ours and len({id(c.adapter) for c in ours}) == 1
    assert ours[0].adapter.run is None

    def comet_callback(trainer: Any) -> None:
        raise AssertionError("Ultralytics' comet callback ran in the worker")

    comet_callback.__module__ = "ultralytics.utils.callbacks.comet"
    ran: list[str] = []
    worker = SimpleNamespace(callbacks=defaultdict(list, {k: list(v) for k, v in callbacks.items()}))
    # A worker's trainer appends its integrations after the callbacks it was given, then runs them.
    for event in ("on_pretrain_routine_start", "on_train_epoch_end"):
        worker.callbacks[event] += [comet_callback, lambda trainer, event=event: ran.append(event)]
    for event in ("on_pretrain_routine_start", "on_train_epoch_end"):
        for callback in worker.callbacks.get(event, []):
            callback(worker)
    assert ran == ["on_pretrain_routine_start", "on_train_epoch_end"]
    assert [e.type for e in journal(run.dir)] == ["run_start", "run_end"]


@pytest.mark.parametrize(("batches", "args", "expected"), [
    # One optimizer step per batch.
    (2, {"batch": 4, "nbs": 4, "epochs": 2, "warmup_epochs": 3.0}, [2, 4]),
    # Accumulating over 2 batches, no warmup: the batch left over at epoch 1's end counts
    # towards epoch 2's first step (indices 1, 3, 5 step).
    (3, {"batch": 4, "nbs": 8, "epochs": 2, "warmup_epochs": 0}, [1, 3]),
    # Warmup (1 epoch of 4 batches) ramps accumulation 1, 1, 2, 2, 2: steps at 0, 1, 3, 5, 7.
    (4, {"batch": 2, "nbs": 4, "epochs": 2, "warmup_epochs": 3.0}, [3, 5]),
    # Fewer images than nbs: accumulation capped at the 4 batches of the training, ramped over
    # the first 2: one step in all, and epoch 2 ends where epoch 1 did.
    (2, {"batch": 4, "nbs": 64, "epochs": 2, "warmup_epochs": 3.0}, [1, 1]),
])
def test_the_replayed_schedule_counts_optimizer_steps_as_ultralytics_takes_them(
    batches: int, args: dict[str, Any], expected: list[int]
) -> None:
    from loggerhub.integrations.ultralytics import optimizer_steps_by_epoch

    assert optimizer_steps_by_epoch(batches, args) == expected


def test_plots_still_being_written_are_waited_for(tmp_path: Path) -> None:
    import threading

    import numpy as np
    from PIL import Image

    import loggerhub
    from loggerhub.integrations.ultralytics import _complete_picture, _log_pictures

    picture = np.zeros((16, 16, 3), dtype=np.uint8)
    for suffix in (".jpg", ".png"):
        whole = tmp_path / f"whole{suffix}"
        Image.fromarray(picture).save(whole)
        half = tmp_path / f"half{suffix}"
        half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        assert _complete_picture(whole) and not _complete_picture(half)
    late = tmp_path / "late.png"
    late.write_bytes((tmp_path / "half.png").read_bytes())
    # Ultralytics finishes the file from its plotting thread a little later.
    finisher = threading.Timer(0.3, lambda: Image.fromarray(picture).save(late))
    finisher.start()
    with loggerhub.init(project="plots", dir=tmp_path / "runs") as run:
        _log_pictures(run, [late, tmp_path / "whole.png"], set(), "", 1)
    finisher.join()
    assert sorted(by_key(journal(run.dir), "figure")) == ["plots/late", "plots/whole"]
    assert not of_type(journal(run.dir), "rejected")


# --------------------------------------------------------------------------- detection, end to end


@pytest.mark.slow
def test_detect_run_ends_finished_and_every_tracker_caught_up(detect: SimpleNamespace) -> None:
    print(f"\ndetect training: {detect.seconds:.1f} s with trackers {detect.trackers}")
    summary = detect.run.summary
    assert summary["status"] == "FINISHED"
    assert detect.entries[-1].type == "run_end" and detect.entries[-1].data["status"] == "FINISHED"
    assert not of_type(detect.entries, "rejected")
    for tracker in detect.trackers:
        report = summary["trackers"][tracker]
        assert (report["undelivered"], report["rejected"]) == (0, 0), (tracker, report)


@pytest.mark.slow
def test_detect_params_are_all_training_args_and_model_info_once(detect: SimpleNamespace) -> None:
    logged = params(detect.entries)
    args = vars(detect.trainer.args)
    assert {f"args/{key}" for key in args} <= set(logged)
    assert logged["args/epochs"] == 2 and logged["args/imgsz"] == 64 and logged["args/task"] == "detect"
    assert logged["args/optimizer"] == args["optimizer"] != "auto"  # settled during setup, logged again
    info = [d["params"] for d in of_type(detect.entries, "params") if "model/parameters" in d["params"]]
    assert len(info) == 1
    assert info[0]["model/parameters"] > 100_000 and info[0]["model/GFLOPs"] >= 0
    assert "model/speed_PyTorch(ms)" in info[0]


@pytest.mark.slow
def test_detect_metrics_are_ultralytics_own_record_at_the_optimizer_step_closing_each_epoch(
    detect: SimpleNamespace,
) -> None:
    assert detect.epoch_steps == [3, 5]  # see the fixture: accumulation, warmup, and the carry-over
    logged = metric_series(detect.entries)
    record = results_csv(detect.save_dir)
    trainer = detect.trainer
    # Keys come from the trainer, never from a list of detection names.
    expected_keys = {*trainer.label_loss_items(prefix="train"), *trainer.validator.metrics.keys,
                     *trainer.label_loss_items(prefix="val"), *(f"lr/pg{i}" for i in range(3))}
    assert expected_keys <= set(record)
    for key, series in record.items():
        assert same_series(logged[key], at_steps(series, detect.epoch_steps)), (key, logged.get(key), series)
    for data in of_type(detect.entries, "metrics"):
        assert (data["step"], data["epoch"]) in [(3, 1), (5, 2)], data


@pytest.mark.slow
def test_detect_final_evaluation_is_best_metrics_not_a_third_epoch(detect: SimpleNamespace) -> None:
    logged = metric_series(detect.entries)
    best = {key: series for key, series in logged.items() if key.startswith("best/")}
    assert set(best) == {f"best/{key}" for key in detect.trainer.validator.metrics.keys}
    for key, series in best.items():
        assert series == [(5, pytest.approx(detect.trainer.metrics[key.removeprefix("best/")]))]
    assert {d["epoch"] for d in of_type(detect.entries, "metrics") if "best/" in next(iter(d["values"]))} == {2}
    steps = {d["step"] for e in ("metrics", "image", "figure", "table", "artifact", "event")
             for d in of_type(detect.entries, e)}
    assert max(steps) == 5


@pytest.mark.slow
def test_detect_lifecycle_events(detect: SimpleNamespace) -> None:
    assert events(detect.entries) == [
        ("train_start", 0),
        ("epoch_start", 0), ("validation_end", 3), ("epoch_end", 3),
        ("epoch_start", 3), ("validation_end", 5), ("epoch_end", 5),
        ("validation_end", 5),  # the final evaluation of best.pt
        ("train_end", 5),
    ]
    assert [d.get("epoch") for d in of_type(detect.entries, "event")][1:7] == [1, 1, 1, 2, 2, 2]


@pytest.mark.slow
def test_detect_pictures_each_logged_once(detect: SimpleNamespace) -> None:
    images, figures = by_key(detect.entries, "image"), by_key(detect.entries, "figure")
    expected_images, expected_figures = set(), set()
    for path in pictures(detect.save_dir):
        sample = path.stem.startswith(("train_batch", "val_batch"))
        (expected_images if sample else expected_figures).add(path.stem)
    assert set(images) == {f"images/{stem}" for stem in expected_images}
    assert set(figures) == {f"plots/{stem}" for stem in expected_figures}
    assert all(len(found) == 1 for found in (*images.values(), *figures.values()))
    # The parity list: mosaics, validation labels and predictions, and the end-of-training plots.
    assert {"images/train_batch0", "images/val_batch0_labels", "images/val_batch0_pred"} <= set(images)
    assert {"plots/results", "plots/confusion_matrix", "plots/confusion_matrix_normalized",
            "plots/labels"} <= set(figures)
    assert len([key for key in figures if key.endswith("_curve")]) >= 4
    first_mosaic = images["images/train_batch0"][0]  # plotted in a thread at the first batch
    assert (first_mosaic["step"], first_mosaic["epoch"]) == (3, 1)
    assert images["images/val_batch0_pred"][0]["step"] == 5 and figures["plots/results"][0]["step"] == 5


@pytest.mark.slow
def test_detect_confusion_matrix_table(detect: SimpleNamespace) -> None:
    (table,) = of_type(detect.entries, "table")
    matrix = detect.trainer.validator.confusion_matrix.matrix
    assert (table["key"], table["role"], table["step"]) == ("val/confusion_matrix", "confusion_matrix", 5)
    assert table["columns"] == ["red", "blue", "background"]
    assert table["rows"] == matrix.T.astype(int).tolist()  # true classes in rows


@pytest.mark.slow
def test_detect_weights_and_files(detect: SimpleNamespace) -> None:
    found = {d["name"]: d for d in of_type(detect.entries, "artifact")}
    assert not of_type(detect.entries, "checkpoint")  # no save_period: no mid-training snapshots
    assert {name: d["kind"] for name, d in found.items()} == {
        "weights/best.pt": "model", "weights/last.pt": "model", "results.csv": "file", "args.yaml": "file"}
    sources = {"weights/best.pt": detect.trainer.best, "results.csv": detect.save_dir / "results.csv"}
    for name, source in sources.items():
        assert (detect.run.dir / found[name]["file"]).read_bytes() == Path(source).read_bytes()


@pytest.mark.slow
def test_detect_switches_off_ultralytics_own_loggers_only_while_training(detect: SimpleNamespace) -> None:
    assert detect.switched, "no tracker installed that Ultralytics integrates itself"
    for key, value in detect.settings_during.items():
        assert value is (key not in detect.switched), (key, detect.settings_during)
    for key in detect.switched:
        module = f"ultralytics.utils.callbacks.{key}"
        assert module not in detect.modules_during
    assert set(detect.settings_after.values()) == {True}


@pytest.mark.slow
def test_detect_every_tracker_stored_each_item_once(detect: SimpleNamespace, tracker: str) -> None:
    if tracker not in detect.trackers:
        pytest.skip(f"{tracker} is not installed")
    run = detect.run
    stored = read_tracker(tracker, run.dir, run.id, detect.options[tracker])
    assert stored.status == "FINISHED"
    def key(name: str) -> str:
        return tracker_key(tracker, name)

    assert {key("args/epochs"), key("model/parameters")} <= stored.params
    rel = 1e-6 if tracker == "tensorboard" else 1e-9  # TensorBoard scalars are float32
    for name, series in metric_series(detect.entries).items():
        assert same_series(stored.metrics.get(key(name), []), series, rel), (tracker, name)
    for name in by_key(detect.entries, "image"):
        assert stored.images.get(key(name)) == 1, (tracker, name, stored.images)
    for name in by_key(detect.entries, "figure"):
        assert stored.figures.get(key(name)) == 1, (tracker, name, stored.figures)
    for name in ("best.pt", "last.pt", "results.csv", "args.yaml"):
        assert [a for a in stored.artifacts if a.endswith(name)], (tracker, name, stored.artifacts)
    assert key("val/confusion_matrix") in stored.tables, (tracker, stored.tables)


@pytest.mark.slow
def test_a_finished_results_dir_logs_what_the_live_training_logged(
    detect: SimpleNamespace, tmp_path: Path
) -> None:
    import loggerhub
    from loggerhub.integrations.ultralytics import log_results_dir, optimizer_steps_by_epoch

    with loggerhub.init(project="replay", dir=tmp_path) as run:
        last = log_results_dir(run, detect.save_dir)
    assert last == 2
    replayed, live = journal(run.dir), detect.entries
    live_metrics, replayed_metrics = metric_series(live), metric_series(replayed)
    for key, series in replayed_metrics.items():
        assert same_series(series, live_metrics[key]), key
    assert set(live_metrics) - set(replayed_metrics) == {k for k in live_metrics if k.startswith("best/")}
    assert {k for k in params(live) if k.startswith("args/")} == set(params(replayed))
    for kind in ("image", "figure", "artifact"):
        assert set(by_key(replayed, kind)) == set(by_key(live, kind)), kind
    assert events(replayed) == [("train_start", 0), ("train_end", 5)]
    # The replay of Ultralytics' schedule from args.yaml and the dataset, against the live count.
    assert optimizer_steps_by_epoch(len(detect.trainer.train_loader), vars(detect.trainer.args)) == [3, 5]
    with pytest.raises(FileNotFoundError, match="results.csv"):
        log_results_dir(run, tmp_path)


# --------------------------------------------------------------------------- other modes and tasks


@pytest.mark.slow
def test_val_predict_and_export_land_in_a_run_the_user_owns(
    detect: SimpleNamespace, detect_data: Path, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    import loggerhub
    from loggerhub.integrations.ultralytics import attach

    model = YOLO(str(detect.trainer.best))
    common = {"imgsz": 64, "batch": 4, "device": "cpu", "verbose": False}
    with loggerhub.init(project="modes", dir=tmp_path / "runs") as run:
        attach(model, run=run)
        metrics = model.val(data=str(detect_data), plots=True, project=str(tmp_path / "u"), name="val",
                            exist_ok=True, **common)
        results = model.predict(source=str(detect_data.parent / "images" / "val"), conf=0.0, max_det=3,
                                **common)
        exported = model.export(format="torchscript", imgsz=64, device="cpu")
        run.flush()
        assert journal(run.dir)[-1].type != "run_end"  # the user's run stays open between modes
    entries = journal(run.dir)
    logged = metric_series(entries)
    for key, value in metrics.results_dict.items():
        assert logged[f"val/{key}"] == [(0, pytest.approx(value))]
    assert {f"val/speed/{key}(ms)" for key in metrics.speed} <= set(logged)
    (table,) = of_type(entries, "table")
    assert table["key"] == "val/confusion_matrix" and table["columns"] == ["red", "blue", "background"]
    assert "val/plots/confusion_matrix" in by_key(entries, "figure")
    assert {f"val/images/{p.stem}" for p in (tmp_path / "u" / "val").glob("val_batch*")} <= set(
        by_key(entries, "image"))

    predicted = {k: v for k, v in by_key(entries, "image").items() if k.startswith("predict/")}
    assert sorted(predicted) == sorted(f"predict/{Path(r.path).stem}" for r in results)
    for result in results:
        (image,) = predicted[f"predict/{Path(result.path).stem}"]
        assert len(image["boxes"]) == len(result.boxes) > 0
        assert {box[4] for box in image["boxes"]} <= {"red", "blue"}
        assert (image["width"], image["height"]) == (64, 64)
    assert logged["predict/images"] == [(0, len(results))]

    (artifact,) = [d for d in of_type(entries, "artifact") if d["name"].startswith("export/")]
    assert (artifact["name"], artifact["kind"]) == (f"export/{Path(exported).name}", "model")
    assert ("validation_end", 0) in events(entries)
    assert entries[-1].data["status"] == "FINISHED"


@pytest.mark.slow
def test_classify_end_to_end(classify_data: Path, train_kwargs: Any, tmp_path: Path) -> None:
    from ultralytics import YOLO

    from loggerhub.integrations.ultralytics import attach

    model = YOLO("yolo11n-cls.yaml")
    run = attach(model, backends=["local"], project="e2e", name="classify", dir=tmp_path / "runs")
    started = time.monotonic()
    model.train(data=str(classify_data), **train_kwargs(tmp_path, "classify"))
    print(f"\nclassify training: {time.monotonic() - started:.1f} s")
    entries, trainer = journal(run.dir), model.trainer
    save_dir = Path(trainer.save_dir)
    logged = metric_series(entries)
    record = results_csv(save_dir)
    assert {"metrics/accuracy_top1", *trainer.label_loss_items(prefix="train")} <= set(record)
    for key, series in record.items():
        assert same_series(logged[key], at_steps(series, [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH])), key
    assert set(k for k in logged if k.startswith("best/")) == {
        f"best/{k}" for k in trainer.validator.metrics.keys}
    assert all(series[0][0] == 2 * STEPS_PER_EPOCH for key, series in logged.items() if key.startswith("best/"))
    (table,) = of_type(entries, "table")
    # A folder dataset names its classes in sorted order; classification has no background class.
    assert table["columns"] == list(trainer.data["names"].values()) == ["blue", "red"]
    assert table["rows"] == trainer.validator.confusion_matrix.matrix.T.astype(int).tolist()
    stems = {p.stem for p in pictures(save_dir)}
    logged_pictures = {*by_key(entries, "image"), *by_key(entries, "figure")}
    assert {k.split("/", 1)[1] for k in logged_pictures} == stems
    assert "plots/confusion_matrix" in logged_pictures and "images/train_batch0" in logged_pictures
    assert {d["name"] for d in of_type(entries, "artifact")} >= {"weights/best.pt", "weights/last.pt"}
    assert events(entries)[0] == ("train_start", 0) and events(entries)[-1] == ("train_end", 2 * STEPS_PER_EPOCH)
    assert entries[-1].data["status"] == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize(("task", "model_file"), [
    ("segment", "yolo11n-seg.yaml"), ("pose", "yolo11n-pose.yaml"), ("obb", "yolo11n-obb.yaml")])
def test_segment_pose_and_obb_log_their_own_metrics_and_plots(
    task: str, model_file: str, task_data: Any, train_kwargs: Any, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    from loggerhub.integrations.ultralytics import attach

    model = YOLO(model_file)
    run = attach(model, backends=["local"], project="tasks", name=task, dir=tmp_path / "runs")
    started = time.monotonic()
    model.train(data=str(task_data(task)), **train_kwargs(tmp_path, task, epochs=1))
    print(f"\n{task} training (1 epoch): {time.monotonic() - started:.1f} s")
    entries, trainer = journal(run.dir), model.trainer
    logged = metric_series(entries)
    for key, series in results_csv(Path(trainer.save_dir)).items():
        assert same_series(logged[key], at_steps(series, [STEPS_PER_EPOCH])), key
    best = {k for k in logged if k.startswith("best/")}
    assert best == {f"best/{k}" for k in trainer.validator.metrics.keys}
    logged_pictures = {*by_key(entries, "image"), *by_key(entries, "figure")}
    assert {k.split("/", 1)[1] for k in logged_pictures} == {p.stem for p in pictures(Path(trainer.save_dir))}
    # The validator's own curves, whatever their prefix (Box, Mask, Pose...).
    assert {f"plots/{Path(p).stem}" for p in trainer.validator.plots if "curve" in str(p)} <= logged_pictures
    (table,) = of_type(entries, "table")
    assert table["columns"] == ["red", "blue", "background"]
    assert entries[-1].data["status"] == "FINISHED"


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_a_training_that_raises_ends_the_run(
    detect_data: Path, train_kwargs: Any, tmp_path: Path, error: type[BaseException], status: str
) -> None:
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    from loggerhub.integrations.ultralytics import attach

    model = YOLO("yolo11n.yaml")
    before = dict(SETTINGS)
    run = attach(model, backends=["local"], project="fail", dir=tmp_path / "runs", switch_off="all")

    def boom(trainer: Any) -> None:
        raise error("raised by a user callback")

    model.add_callback("on_train_epoch_end", boom)
    with pytest.raises(error, match="user callback"):
        model.train(data=str(detect_data), **train_kwargs(tmp_path, "fail"))
    entries = journal(run.dir)
    assert entries[-1].type == "run_end" and entries[-1].data["status"] == status
    assert json.loads((run.dir / "run.json").read_text())["status"] == status
    # The adapter's own epoch-end records came first, and the training was closed.
    assert metric_series(entries)["train/box_loss"][0][0] == STEPS_PER_EPOCH
    assert events(entries)[-1] == ("train_end", STEPS_PER_EPOCH)
    assert dict(SETTINGS) == before
    assert "train" not in vars(model)  # the run ended: the model is detached


@pytest.mark.slow
def test_a_failure_inside_the_adapter_never_stops_the_training(
    detect_data: Path, train_kwargs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ultralytics import YOLO

    from loggerhub.integrations.ultralytics import AdapterWarning, attach

    model = YOLO("yolo11n.yaml")
    run = attach(model, backends=["local"], project="robust", dir=tmp_path / "runs")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracker-side bug")

    monkeypatch.setattr(run, "log_figure", broken)
    with pytest.warns(AdapterWarning, match="on_train_end: RuntimeError: tracker-side bug"):
        model.train(data=str(detect_data), **train_kwargs(tmp_path, "robust", epochs=1))
    entries = journal(run.dir)
    assert entries[-1].data["status"] == "FINISHED"
    assert events(entries)[-1] == ("train_end", STEPS_PER_EPOCH)  # teardown still ran after the failed handler


# --------------------------------------------------------------------------- the yolo command


def _cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loggerhub.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=dict(env or os.environ), timeout=600)


@pytest.mark.slow
def test_cli_yolo_train_then_predict(detect_data: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    done = _cli("--dir", str(tmp_path / "runs"), "yolo", "train", "model=yolo11n.yaml", f"data={detect_data}",
                "epochs=1", "imgsz=64", "batch=4", "nbs=4", "workers=0", "device=cpu", "amp=False", "plots",
                f"project={tmp_path / 'u'}", "name=cli", "exist_ok", "--backends", "local",
                "--project", "from-cli", "--name", "yolo-train", cwd=tmp_path)
    print(f"\nloggerhub yolo train: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "from-cli").iterdir()
    assert run_dir.name.startswith("yolo-train-")
    assert f"logged to {run_dir}" in done.stderr
    entries = journal(run_dir)
    logged = params(entries)
    assert (logged["args/epochs"], logged["args/plots"], logged["args/amp"], logged["args/mode"]) == (
        1, True, False, "train")
    assert metric_series(entries)["train/box_loss"][0][0] == STEPS_PER_EPOCH
    assert {d["name"] for d in of_type(entries, "artifact")} >= {"weights/best.pt", "weights/last.pt"}
    assert entries[-1].data["status"] == "FINISHED"

    best = tmp_path / "u" / "cli" / "weights" / "best.pt"
    done = _cli("--dir", str(tmp_path / "runs"), "yolo", "predict", f"model={best}", "imgsz=64", "conf=0.0",
                f"source={detect_data.parent / 'images' / 'val'}", "device=cpu", "--project", "from-cli",
                "--name", "yolo-predict", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "from-cli").glob("yolo-predict-*")
    entries = journal(run_dir)
    assert len([k for k in by_key(entries, "image") if k.startswith("predict/")]) == 4
    assert metric_series(entries)["predict/images"] == [(0, 4)]
    assert entries[-1].data["status"] == "FINISHED"


def test_cli_yolo_refuses_unknown_arguments(tmp_path: Path) -> None:
    from loggerhub.cli import USAGE_ERROR

    done = _cli("--dir", str(tmp_path), "yolo", "train", "model=yolo11n.yaml", "epochz=3", cwd=tmp_path)
    assert done.returncode == USAGE_ERROR and "'epochz' is not a valid YOLO argument" in done.stderr
    done = _cli("--dir", str(tmp_path), "yolo", "val", "data=x.yaml", cwd=tmp_path)
    assert done.returncode == USAGE_ERROR and "give the model" in done.stderr
    assert not (tmp_path / "ultralytics").exists()  # nothing was logged


# --------------------------------------------------------------------------- no double logging

DOUBLE_LOGGING_SCRIPT = '''
import json, sys
from ultralytics import YOLO
from ultralytics.utils import SETTINGS, TESTS_RUNNING
from loggerhub.integrations.ultralytics import attach

cfg = json.loads(sys.argv[1])
# Ultralytics' own integrations for the trackers under test on, the others off.
SETTINGS.update({key: key in cfg["backends"] for key in ("clearml", "comet", "dvc", "mlflow", "tensorboard",
                                                          "wandb")})
report = {"tests_running": TESTS_RUNNING}
model = YOLO("yolo11n.yaml")
run = attach(model, backends=cfg["backends"], project="double", name="attached", dir=cfg["runs"],
             options=cfg["options"], drain_timeout=240)
model.train(data=cfg["data"], name="attached", **cfg["train"])
report["run_dir"] = str(run.dir)
report["summary"] = run.summary
report["attached"] = str(model.trainer.save_dir)
report["settings_after"] = {key: SETTINGS[key] for key in cfg["backends"]}
# The same training without loggerhub: Ultralytics' own integrations show they were live.
control = YOLO("yolo11n.yaml")
control.train(data=cfg["data"], name="control", **cfg["train"])
report["control"] = str(control.trainer.save_dir)
print("REPORT " + json.dumps(report))
'''


@pytest.mark.slow
def test_no_tracker_gets_an_item_twice_when_ultralytics_integrates_it_too(
    detect_data: Path, train_kwargs: Any, trackers: list[str], tracker_options: Any, tmp_path: Path
) -> None:
    import shutil

    backends = [name for name in ("tensorboard", "mlflow") if name in trackers]
    if "tensorboard" not in backends:
        pytest.skip("needs the tensorboard backend: Ultralytics' TensorBoard callback writes to save_dir")
    options = {name: tracker_options(name, tmp_path) for name in backends}
    config = tmp_path / "yolo-config"
    shutil.copytree(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics", config / "Ultralytics")
    # Outside pytest, or Ultralytics switches its own integrations off (TESTS_RUNNING).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "GITHUB_WORKFLOW", "RUNNER_OS")}
    env["YOLO_CONFIG_DIR"] = str(config)
    if "mlflow" in backends:
        env["MLFLOW_TRACKING_URI"] = options["mlflow"]["tracking_uri"]  # where Ultralytics' callback logs
    train = {k: v for k, v in train_kwargs(tmp_path, "unused").items() if k != "name"}
    script = tmp_path / "double_logging.py"
    script.write_text(DOUBLE_LOGGING_SCRIPT)
    cfg = {"backends": backends, "options": options, "runs": str(tmp_path / "runs"), "data": str(detect_data),
           "train": train}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), json.dumps(cfg)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=900)
    print(f"\ndouble-logging check (two trainings): {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1].splitlines()[0])
    assert report["tests_running"] is False
    assert report["settings_after"] == dict.fromkeys(backends, True)
    for tracker in backends:
        assert report["summary"]["trackers"][tracker]["undelivered"] == 0

    # TensorBoard: Ultralytics' writer stayed off while loggerhub logged; in the control it ran.
    assert not list(Path(report["attached"]).glob("events.out.tfevents*"))
    assert list(Path(report["control"]).glob("events.out.tfevents*"))
    run_dir = Path(report["run_dir"])
    entries = journal(run_dir)
    live = metric_series(entries)
    stored = read_tracker("tensorboard", run_dir, run_dir.name, options["tensorboard"])
    for key, series in live.items():
        assert sorted(s for s, _ in stored.metrics[tracker_key("tensorboard", key)]) == [s for s, _ in series]

    if "mlflow" in backends:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(options["mlflow"]["tracking_uri"])
        ours = tracker_state(run_dir, "mlflow")["run_id"]
        theirs = client.get_experiment_by_name(train["project"])
        assert theirs is not None, "Ultralytics' MLflow callback never ran in the control training"
        names = [r.info.run_name for r in client.search_runs([theirs.experiment_id])]
        assert names == ["control"], names
        history = client.get_metric_history(ours, "train/box_loss")
        assert [m.step for m in history] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]


# --------------------------------------------------------------------------- the example


@pytest.mark.slow
def test_example_trains_and_logs(tmp_path: Path) -> None:
    env = {**os.environ, "LOGGERHUB_BACKENDS": "local"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "examples" / "ultralytics_train.py"),
                           "--dir", str(tmp_path / "runs"), "--epochs", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    print(f"\nexample: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "examples").iterdir()
    assert f"run {run_dir.name}: FINISHED" in done.stdout
    entries = journal(run_dir)
    assert metric_series(entries)["train/box_loss"][0][0] == STEPS_PER_EPOCH
    assert entries[-1].data["status"] == "FINISHED"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing left behind in the cwd
