"""The conformance suite every loggerhub backend runs, inside or outside this repository.

Subclass :class:`BackendConformance` in your plugin's tests, set ``backend``, and implement
``options`` and ``read_back``. The suite logs one scenario through the real ``loggerhub.init`` path
(journal, delivery process, your plugin, your tracker's client), then compares what your
``read_back`` found in the tracker's own storage with what was logged::

    class TestMyTracker(BackendConformance):
        backend = "mytracker"

        def options(self, tmp_path):
            return {"mode": "offline", "dir": str(tmp_path / "store")}

        def read_back(self, run, options):
            ...  # read the tracker's files or API; return a TrackerView

Where a tracker cannot hold something, override the matching ``expect_*`` method to state the
behaviour your README documents; the suite then checks that behaviour instead of skipping it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pytest

#: Params with nesting and odd values. ``api_key`` must arrive redacted.
SCENARIO_PARAMS: dict[str, Any] = {
    "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True},
    "epochs": 3,
    "layers": [64, 128],
    "dropout": None,
    "data_path": PurePosixPath("/data/coco"),
    "größe": "groß",
    "api_key": "not-a-real-key",
}
#: Metric keys, some with characters that some trackers reject.
SCENARIO_KEYS = ("train/loss", "metrics/mAP50-95(B)", "lr/pg0", "odd key:#%@!")
SCENARIO_STEPS = 260
#: The key that carries NaN and +/-inf at steps 1, 2 and 3.
NONFINITE_KEY = "val/nonfinite"
NONFINITE_VALUES = {0: 1.0, 1: math.nan, 2: math.inf, 3: -math.inf, 4: 2.0}
CONFUSION_LABELS = ("cat", "dog", "background")
CONFUSION_MATRIX = ((5, 1, 0), (2, 7, 1), (0, 1, 9))


def metric_value(key_index: int, step: int) -> float:
    return round(1.0 / (step + 1) + key_index, 6)


@dataclass
class TrackerView:
    """What a backend's ``read_back`` found in its tracker, keyed by the TRACKER's keys."""

    status: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, int] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=dict)
    artifacts: set[str] = field(default_factory=set)
    texts: dict[str, list[str]] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeliveredRun:
    """The finished loggerhub run whose delivery the suite inspects."""

    dir: Path
    run_id: str
    summary: dict[str, Any]
    state: dict[str, Any]


class BackendConformance:
    """One scenario, held against every backend. See the module docstring."""

    backend: ClassVar[str]

    # -- what a backend provides ------------------------------------------------------------

    def options(self, tmp_path: Path) -> dict[str, Any]:
        """Backend options for ``loggerhub.init(options={backend: ...})``, storing under tmp_path."""
        return {}

    def read_back(self, run: DeliveredRun, options: Mapping[str, Any]) -> TrackerView:
        """Read the delivered run back from the tracker's real storage."""
        raise NotImplementedError

    def tracker_key(self, key: str) -> str:
        """The documented mapping from a canonical key to the tracker's key."""
        return key

    def param_key(self, key: str) -> str:
        """The tracker's key for a param, where params live apart from metrics (a namespace)."""
        return self.tracker_key(key)

    # -- documented behaviour a backend may restate ---------------------------------------------

    def expect_param(self, value: Any) -> str:
        """How a param value reads back, as text."""
        if isinstance(value, list):
            return str(value)
        return str(value)

    def expect_metric(self, value: float) -> float | None:
        """The value stored for a logged value; None when the tracker documents dropping it."""
        return value

    def expect_boxes(self, view: TrackerView, key: str, count: int) -> None:
        """The tracker keeps box annotations natively."""
        assert view.boxes.get(key) == count, view.boxes

    # -- the scenario -------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def delivered(cls, tmp_path_factory: pytest.TempPathFactory) -> tuple[DeliveredRun, TrackerView]:
        suite = cls()
        tmp_path = tmp_path_factory.mktemp(f"conformance-{cls.backend}")
        options = suite.options(tmp_path)
        run = _log_scenario(cls.backend, tmp_path, options)
        return run, suite.read_back(run, options)

    def test_everything_was_delivered(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run, _ = delivered
        report = run.summary["trackers"][self.backend]
        assert report["undelivered"] == 0, report
        assert report["rejected"] == 0, report

    def test_status(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        assert delivered[1].status == "FINISHED"

    def test_params(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        _, view = delivered
        expected = {
            "optimizer/name": "sgd",
            "optimizer/momentum": 0.9,
            "optimizer/nesterov": True,
            "epochs": 3,
            "layers": [64, 128],
            "dropout": None,
            "data_path": "/data/coco",
            "größe": "groß",
            "api_key": "***REDACTED***",
        }
        for key, value in expected.items():
            tracker_key = self.param_key(key)
            assert tracker_key in view.params, (tracker_key, sorted(view.params))
            assert view.params[tracker_key] == self.expect_param(value), (key, view.params[tracker_key])
        assert not any("not-a-real-key" in str(v) for v in view.params.values())

    def test_metrics(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        _, view = delivered
        for index, key in enumerate(SCENARIO_KEYS):
            series = view.metrics.get(self.tracker_key(key))
            assert series is not None, (self.tracker_key(key), sorted(view.metrics))
            assert sorted(series) == [(s, self.expect_metric(metric_value(index, s))) for s in range(SCENARIO_STEPS)]

    def test_nonfinite_values(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        _, view = delivered
        stored = dict(view.metrics.get(self.tracker_key(NONFINITE_KEY), []))
        for step, value in NONFINITE_VALUES.items():
            expected = self.expect_metric(value)
            if expected is None:
                assert step not in stored
            elif math.isnan(expected):
                assert math.isnan(stored[step])
            else:
                assert stored[step] == expected

    def test_images(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        _, view = delivered
        for key in ("samples/rgb", "samples/gray", "samples/boxes"):
            assert view.images.get(self.tracker_key(key)) == 1, (key, view.images)
        self.expect_boxes(view, self.tracker_key("samples/boxes"), 2)

    def test_figure(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        assert delivered[1].figures.get(self.tracker_key("plots/curve")) == 1, delivered[1].figures

    def test_artifacts(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        artifacts = delivered[1].artifacts
        assert any(name.endswith("best.pt") for name in artifacts), artifacts
        assert any(name.endswith("a.txt") for name in artifacts), artifacts
        assert any(name.endswith("sub/b.txt") for name in artifacts), artifacts

    def test_text(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        assert delivered[1].texts.get(self.tracker_key("notes")) == ["hello, tracker ✓"]

    def test_confusion_matrix(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        assert self.tracker_key("val/confusion_matrix") in delivered[1].tables

    @pytest.mark.parametrize("status", ["FAILED", "KILLED"])
    def test_end_status(self, tmp_path: Path, status: str) -> None:
        import loggerhub

        options = self.options(tmp_path)
        run = loggerhub.init(project="conformance", name=f"status-{status}", dir=tmp_path / "runs",
                             backends=[self.backend], options={self.backend: options},
                             drain_timeout=120)
        run.log_metrics({"x": 1.0}, step=0)
        run.finish(status)
        view = self.read_back(_delivered(run), options)
        assert view.status == status


def _log_scenario(backend: str, tmp_path: Path, options: Mapping[str, Any]) -> DeliveredRun:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import loggerhub

    files = tmp_path / "files"
    (files / "dataset" / "sub").mkdir(parents=True)
    (files / "best.pt").write_bytes(os.urandom(2048))
    (files / "dataset" / "a.txt").write_text("a")
    (files / "dataset" / "sub" / "b.txt").write_text("b")

    with loggerhub.init(project="conformance", name="scenario", dir=tmp_path / "runs",
                        backends=[backend], options={backend: dict(options)},
                        config=SCENARIO_PARAMS, drain_timeout=120) as run:
        run.log_event("train_start", step=0)
        for step in range(SCENARIO_STEPS):
            run.log_metrics({key: metric_value(i, step) for i, key in enumerate(SCENARIO_KEYS)},
                            step=step, epoch=step // 100)
        for step, value in NONFINITE_VALUES.items():
            run.log_metrics({NONFINITE_KEY: value}, step=step)
        rgb = np.zeros((32, 48, 3), dtype=np.uint8)
        rgb[:, :, 0] = 200
        run.log_image("samples/rgb", rgb, step=1)
        run.log_image("samples/gray", np.linspace(0, 1, 32 * 32).reshape(32, 32), step=1)
        run.log_image("samples/boxes", rgb, step=2, boxes=[
            {"box": [2, 2, 20, 20], "label": "cat", "score": 0.9, "class_id": 0},
            loggerhub.Box(10, 5, 40, 30, label="dog", score=0.5, class_id=1),
        ])
        figure, axes = plt.subplots(figsize=(3, 2))
        axes.plot([0, 1, 2], [0, 1, 4])
        run.log_figure("plots/curve", figure, step=2)
        plt.close(figure)
        run.log_checkpoint(files / "best.pt", step=3)
        run.log_artifact(files / "dataset", kind="dataset")
        run.log_text("notes", "hello, tracker ✓", step=3)
        run.log_confusion_matrix("val/confusion_matrix", CONFUSION_MATRIX, CONFUSION_LABELS, step=3)
        run.log_event("train_end", step=SCENARIO_STEPS - 1)
    return _delivered(run)


def _delivered(run: Any) -> DeliveredRun:
    from loggerhub.delivery import ConsumerStatus

    backend = next(name for name in run.backends if name != "local")
    state = ConsumerStatus.load(run.paths.consumer_file(backend)).state or {}
    return DeliveredRun(dir=run.dir, run_id=run.id, summary=run.summary, state=state)
