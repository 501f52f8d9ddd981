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

Besides the scenario, the suite tests the calling rules of the contract against your real plugin
and your tracker's real storage: a batch delivered again after the delivery died between the
tracker's acknowledgement and the offset commit (checked against the ``redelivery`` your README
states), a record the tracker can never take (``Rejected``), a resume from the persisted state,
the journal's end time (``ended_at``), a FAILED run with its reason, a hook that fails transiently
and then succeeds, and the record kinds your tracker skips being reported.

A standard test may be skipped only with a stated reason, in ``skips``; the suite's own
``test_skips_are_justified`` (and ``tests/test_conformance_suite.py`` for the backends in this
repository) checks that every skip names a standard test and gives a reason::

    class TestMyTracker(BackendConformance):
        backend = "mytracker"
        redelivery = "at-least-once"  # and the README says so
        skips = {"test_ended_at": "mytracker has no end time; the README says so"}
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

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
#: The metric key of the calling-rule tests; steps 0-9, one journal record per step.
RULE_KEY = "rules/loss"
RULE_STEPS = 10
#: The telemetry records of ``test_telemetry_records_are_accepted`` (contract 0.3): one system
#: sample with a GPU, console lines of both streams, and a context with a dirty git checkout.
TELEMETRY_SAMPLE: dict[str, float] = {
    "system/cpu_percent": 42.5, "system/process_cpu_percent": 97.0, "system/process_memory_mb": 1536.0,
    "system/memory_used_mb": 8192.0, "system/memory_percent": 25.0, "system/disk_read_mb_s": 1.5,
    "system/network_receive_mb_s": 0.25, "system/gpu/0/utilization_percent": 88.0,
    "system/gpu/0/memory_used_mb": 10240.0, "system/gpu/0/memory_total_mb": 24576.0,
    "system/gpu/0/memory_percent": 41.67, "system/gpu/0/temperature_c": 71.0, "system/gpu/0/power_w": 245.5,
}
TELEMETRY_STEP = 7
TELEMETRY_CONSOLE = {"stdout": ("epoch 1/3", "loss 0.25"), "stderr": ("100%|##########| 3/3",)}
TELEMETRY_COMMIT = "0123456789abcdef0123456789abcdef01234567"
TELEMETRY_DIFF = "diff --git a/train.py b/train.py\n--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-lr = 0.1\n+lr = 0.2\n"
#: The exit code of a delivery process the suite kills right after the tracker's acknowledgement.
_DIED_AFTER_ACK = 86


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
    #: When the tracker says the run ended, seconds since the epoch.
    ended_at: float | None = None
    #: What the tracker keeps of why the run failed (type and message, as text), if anything.
    error: str | None = None


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
    #: What a batch delivered again looks like in the tracker: ``"exactly-once"``, the tracker
    #: run shows each record once anyway; ``"at-least-once"``, the redelivered batch may show
    #: twice. A batch is redelivered when delivery dies between the tracker's acknowledgement and
    #: the offset commit. State it in the README too.
    redelivery: ClassVar[Literal["exactly-once", "at-least-once"]] = "exactly-once"
    #: Standard tests this backend skips, by test name, each with the reason (from the README).
    skips: ClassVar[dict[str, str]] = {}

    @pytest.fixture(autouse=True)
    def _declared_skip(self, request: pytest.FixtureRequest) -> None:
        name = request.node.originalname
        if name in self.skips and name != "test_skips_are_justified":
            pytest.skip(f"{self.backend}: {self.skips[name]}")

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

    # -- the skip guard -------------------------------------------------------------------------

    def test_skips_are_justified(self) -> None:
        assert not skip_problems(type(self)), skip_problems(type(self))

    # -- calling rules --------------------------------------------------------------------------
    #
    # Each test journals a small run with no tracker attached, then delivers it with the real
    # Consumer and the backend's real plugin (from its entry point) into the tracker's real
    # storage, and reads it back with ``read_back``.

    def test_unsupported_kinds_are_reported(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        """Every kind the backend does not take is counted as skipped, and only those."""
        from loggerhub.delivery import ConsumerStatus, supported_records

        run, _ = delivered
        supported = supported_records(self.plugin())
        status = ConsumerStatus.load(run.dir / "consumers" / f"{self.backend}.json")
        for kind, count in _logged_kinds(run.dir).items():
            if kind in supported:
                assert kind not in status.skipped, (kind, status.skipped)
            else:
                assert status.skipped.get(kind) == count, (kind, count, status.skipped)
        assert run.summary["trackers"][self.backend]["skipped"] == status.skipped

    def test_redelivered_batch(self, tmp_path: Path) -> None:
        """Delivery dies right after the tracker acknowledged a batch; the next one sends it again."""
        from loggerhub.delivery import ConsumerStatus

        options = self.options(tmp_path)

        def log(run: Any) -> None:
            _log_rule_steps(run, range(0, 5))
            run.log_params({"rules/phase": "second batch"})
            _log_rule_steps(run, range(5, RULE_STEPS))

        run = _journal_only(tmp_path, "redelivered", log)
        # The second log_metrics call is steps 5-9: the process dies after it returned.
        died = subprocess.run(
            [sys.executable, "-c", "import sys, loggerhub.testing.conformance as c; c._die_after_ack(*sys.argv[1:])",
             str(run.dir), self.backend, json.dumps(options), "loggerhub_log_metrics", "2"],
            capture_output=True, text=True, timeout=300,
        )
        assert died.returncode == _DIED_AFTER_ACK, died.stderr[-3000:]
        committed = ConsumerStatus.load(run.dir / "consumers" / f"{self.backend}.json")
        assert not committed.finished
        status = self.deliver(run.dir, options)
        assert status.finished and status.errors == 0, status
        view = self.read_back(_delivered_from(run, self.backend), options)
        steps = Counter(step for step, _ in view.metrics.get(self.tracker_key(RULE_KEY), []))
        assert set(steps) == set(range(RULE_STEPS)), steps
        assert all(steps[step] == 1 for step in range(5)), steps  # acknowledged and committed
        if self.redelivery == "exactly-once":
            assert all(count == 1 for count in steps.values()), f"redelivery duplicated points: {steps}"
        else:
            assert all(steps[step] <= 2 for step in range(5, RULE_STEPS)), steps
        assert view.status == "FINISHED"

    def test_rejected_records_are_filed_and_delivery_goes_on(self, tmp_path: Path) -> None:
        """A record whose file is gone from the run directory can never be delivered: Rejected,
        filed in the dead-letter file, and the records after it still arrive."""
        from loggerhub.delivery import supported_records

        options = self.options(tmp_path)
        attachment = tmp_path / "weights.bin"
        attachment.write_bytes(os.urandom(64))

        def log(run: Any) -> None:
            import numpy as np

            _log_rule_steps(run, range(0, 5))
            run.log_image("rules/image", np.zeros((8, 8, 3), dtype=np.uint8), step=5)
            run.log_artifact(attachment, name="rules/weights.bin")
            _log_rule_steps(run, range(5, RULE_STEPS))

        run = _journal_only(tmp_path, "rejected", log)
        from loggerhub.journal import JournalReader

        gone = {}
        for entry in JournalReader(run.dir).entries():
            if entry.type in ("image", "artifact"):
                (run.dir / entry.data["file"]).unlink()
                gone[entry.seq] = entry.type
        expected = sorted(seq for seq, kind in gone.items() if kind in supported_records(self.plugin()))
        status = self.deliver(run.dir, options, timeout=60)
        assert status.finished, f"delivery still retrying a record that can never arrive: {status.last_error}"
        assert status.rejected == len(expected), status
        dead_letters = run.dir / "consumers" / f"{self.backend}.rejected.jsonl"
        filed = [json.loads(line)["seq"] for line in dead_letters.read_text().splitlines()] if expected else []
        assert filed == expected
        view = self.read_back(_delivered_from(run, self.backend), options)
        steps = sorted(step for step, _ in view.metrics.get(self.tracker_key(RULE_KEY), []))
        assert steps == list(range(RULE_STEPS))

    def test_resume_from_persisted_state(self, tmp_path: Path) -> None:
        """A resumed run, delivered by a new process, continues the same tracker run."""
        import loggerhub
        from loggerhub.delivery import ConsumerStatus

        options = self.options(tmp_path)
        run = _journal_only(tmp_path, "resumed", lambda r: _log_rule_steps(r, range(0, 5)))
        self.deliver(run.dir, options)
        first = dict(ConsumerStatus.load(run.dir / "consumers" / f"{self.backend}.json").state or {})
        assert first, "run_start stored nothing to find the tracker run again"
        again = loggerhub.init(project="conformance", dir=tmp_path / "runs", resume=run.dir, backends=["local"])
        _log_rule_steps(again, range(5, RULE_STEPS))
        again.finish()
        status = self.deliver(run.dir, options)
        assert status.finished and status.errors == 0, status
        assert first.items() <= (status.state or {}).items(), (first, status.state)
        view = self.read_back(_delivered_from(run, self.backend), options)
        steps = sorted(step for step, _ in view.metrics.get(self.tracker_key(RULE_KEY), []))
        assert steps == list(range(RULE_STEPS)), "the resumed steps are not in the same tracker run, once"
        assert view.status == "FINISHED"

    def test_ended_at(self, tmp_path: Path) -> None:
        """The tracker's end time is when the run ended, not when it was delivered."""
        options = self.options(tmp_path)
        run = _journal_only(tmp_path, "ended", lambda r: _log_rule_steps(r, range(RULE_STEPS)))
        ended_at = _journaled_end(run.dir)
        # Deliver well after the end, as `loggerhub sync` does after an outage: a delivery-time
        # end would be at least this much off. (A pause, not a timed assertion.)
        time.sleep(2.0)
        self.deliver(run.dir, options)
        view = self.read_back(_delivered_from(run, self.backend), options)
        assert view.ended_at is not None, "read_back found no end time"
        assert abs(view.ended_at - ended_at) < 1.0, (view.ended_at, ended_at)

    def test_failed_with_reason(self, tmp_path: Path) -> None:
        """A run that failed shows FAILED and why, where the tracker has a place for it."""
        import loggerhub

        options = self.options(tmp_path)
        try:
            with loggerhub.init(project="conformance", name="failed", dir=tmp_path / "runs",
                                backends=["local"]) as run:
                _log_rule_steps(run, range(3))
                raise FloatingPointError("loss diverged at step 2")
        except FloatingPointError:
            pass
        self.deliver(run.dir, options)
        view = self.read_back(_delivered_from(run, self.backend), options)
        assert view.status == "FAILED"
        assert view.error is not None, "read_back found no failure reason"
        assert "FloatingPointError" in view.error and "loss diverged at step 2" in view.error, view.error

    def test_transient_failure_then_success(self, tmp_path: Path) -> None:
        """Every hook the delivery calls fails once before reaching the tracker, then succeeds:
        everything arrives, once, and each failure is counted."""
        options = self.options(tmp_path)

        def log(run: Any) -> None:
            _log_rule_steps(run, range(0, 5))
            run.log_params({"rules/phase": "second batch"})
            run.log_text("rules/note", "after a transient failure")
            _log_rule_steps(run, range(5, RULE_STEPS))

        run = _journal_only(tmp_path, "transient", log)
        flaky = Interposed(self.plugin(), fail_before=1)
        status = self.deliver(run.dir, options, plugin=flaky)
        assert status.finished and status.rejected == 0, status
        assert flaky.failures and status.errors == sum(flaky.failures.values()), (flaky.failures, status)
        view = self.read_back(_delivered_from(run, self.backend), options)
        steps = sorted(step for step, _ in view.metrics.get(self.tracker_key(RULE_KEY), []))
        assert steps == list(range(RULE_STEPS))
        assert view.status == "FINISHED"

    def test_telemetry_records_are_accepted(self, tmp_path: Path) -> None:
        """A system sample, console output of both streams and the run context are each
        delivered, or counted as skipped when the tracker has no place for that kind; never an
        error or a rejection. Where they land is the backend's own tests' (and README's) business."""
        from loggerhub import codec
        from loggerhub.delivery import supported_records

        options = self.options(tmp_path)
        run = _journal_only(tmp_path, "telemetry", _log_telemetry)
        status = self.deliver(run.dir, options)
        assert status.finished and status.errors == 0 and status.rejected == 0, status
        supported = supported_records(self.plugin())
        logged = _logged_kinds(run.dir)
        for kind in (codec.SYSTEM_METRICS, codec.CONSOLE, codec.CONTEXT):
            assert logged[kind] >= 1, (kind, logged)
            if kind in supported:
                assert kind not in status.skipped, (kind, status.skipped)
            else:
                assert status.skipped.get(kind) == logged[kind], (kind, logged[kind], status.skipped)
        view = self.read_back(_delivered_from(run, self.backend), options)
        assert view.status == "FINISHED"

    # -- helpers for the calling-rule tests -----------------------------------------------------

    def plugin(self) -> Any:
        """A fresh instance of the backend's plugin, from its entry point."""
        from loggerhub.plugins import resolve

        return resolve([self.backend])[0].load()

    def deliver(self, run_dir: Path, options: Mapping[str, Any], *, plugin: Any = None,
                timeout: float = 300) -> Any:
        """Deliver ``run_dir`` as ``loggerhub sync`` does, with short retry pauses."""
        from loggerhub.delivery import Consumer

        consumer = Consumer(run_dir, self.backend, plugin=plugin if plugin is not None else self.plugin(),
                            options=dict(options), backoff=(0.01, 0.05), timeout=timeout,
                            log=lambda message: print(message, file=sys.stderr))
        return consumer.run()


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


def skip_problems(suite: type[BackendConformance]) -> list[str]:
    """What is wrong with a suite's ``skips`` and ``redelivery``; empty when nothing is."""
    problems = []
    standard = {name for name in dir(BackendConformance) if name.startswith("test_")}
    for name, reason in suite.skips.items():
        if name not in standard:
            problems.append(f"skips names {name!r}, which is not a standard test")
        elif name == "test_skips_are_justified":
            problems.append("the skip guard itself cannot be skipped")
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"skips {name!r} without a reason")
    if suite.redelivery not in ("exactly-once", "at-least-once"):
        problems.append(f"redelivery must be 'exactly-once' or 'at-least-once', not {suite.redelivery!r}")
    return problems


class Interposed:
    """Stands in for a backend's plugin and calls the real one, to inject failures.

    This is the one fake in the suite, and it fakes only the failure: the tracker, its client and
    its storage are real. A client error before a call reaches the tracker, or the process dying
    right after the tracker acknowledged a call, cannot be provoked from outside every tracker's
    client in the same way, so the suite raises (or exits) around the real hook instead.

    :param fail_before: how many times each hook raises ``ConnectionError`` before it delegates.
    :param die_after: ``{hook: n}``: the process exits (``os._exit``) right after the real hook
        returned for the n-th time: the tracker has the call, the offset commit never happens.
    """

    def __init__(self, plugin: Any, *, fail_before: int = 0, die_after: Mapping[str, int] | None = None) -> None:
        from loggerhub.plugins import get_plugin_manager

        self.failures: Counter[str] = Counter()
        self._fail_before = fail_before
        self._die_after = dict(die_after or {})
        self._calls: Counter[str] = Counter()
        pm = get_plugin_manager({"real": plugin})
        for name in dir(pm.hook):
            implementations = getattr(pm.hook, name).get_hookimpls() if name.startswith("loggerhub_") else []
            if implementations:
                # An instance attribute that pluggy takes for the real hook: same marker, same signature.
                setattr(self, name, self._around(name, implementations[0].function))

    def _around(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures[name] < self._fail_before:
                self.failures[name] += 1
                raise ConnectionError(f"{name}: injected transient failure")
            result = real(*args, **kwargs)
            self._calls[name] += 1
            if self._calls[name] == self._die_after.get(name):
                os._exit(_DIED_AFTER_ACK)
            return result

        return call


def _die_after_ack(run_dir: str, backend: str, options: str, hook: str, calls: str) -> None:
    """Deliver ``run_dir`` in this process, which dies right after ``hook`` returned ``calls`` times."""
    from loggerhub.delivery import Consumer
    from loggerhub.plugins import resolve

    plugin = Interposed(resolve([backend])[0].load(), die_after={hook: int(calls)})
    Consumer(run_dir, backend, plugin=plugin, options=json.loads(options), backoff=(0.01, 0.05), timeout=240).run()
    sys.exit("the delivery finished without dying")


def _journal_only(tmp_path: Path, name: str, log: Callable[[Any], None]) -> Any:
    """A finished run journaled with no tracker attached; the test delivers it itself."""
    import loggerhub

    with loggerhub.init(project="conformance", name=name, dir=tmp_path / "runs", backends=["local"],
                        config={"rule": name}) as run:
        log(run)
    return run


def _log_telemetry(run: Any) -> None:
    """Journal the TELEMETRY_* records as the run's telemetry would. They go in through the
    codec and the run's journal queue, the telemetry's own path: the real sampler's values and
    timing are the machine's, and a conformance test needs known ones."""
    from loggerhub import codec

    _log_rule_steps(run, range(TELEMETRY_STEP + 1))
    now = time.time()
    run._put((codec.SYSTEM_METRICS, now, codec.system_fields(TELEMETRY_SAMPLE, TELEMETRY_STEP)))
    for stream, lines in TELEMETRY_CONSOLE.items():
        run._put((codec.CONSOLE, now, codec.console_fields(stream, lines, TELEMETRY_STEP, run._redactor)))
    diff_file, truncated = codec.write_diff(run.dir, TELEMETRY_DIFF, run._redactor)
    run._put((codec.CONTEXT, now, codec.context_fields(
        command=["python", "train.py", "--lr", "0.2"], python_version="3.11.7", python_executable="/usr/bin/python3",
        hostname="trainer-0", os="Linux-6.1-x86_64-with-glibc2.36", cpu="AMD EPYC 7B13", cpu_count=8,
        gpus=["NVIDIA A10G"], packages={"numpy": "1.26.4", "torch": "2.3.1"},
        environment={"CUDA_VISIBLE_DEVICES": "0", "WORLD_SIZE": "1"},
        git={"commit": TELEMETRY_COMMIT, "branch": "main", "remote": "https://github.com/example/train.git",
             "dirty": True, "untracked": ["notes.txt"], "diff_file": diff_file, "diff_truncated": truncated},
        redactor=run._redactor)))


def _log_rule_steps(run: Any, steps: range) -> None:
    for step in steps:
        run.log_metrics({RULE_KEY: 1.0 / (step + 1)}, step=step)


def _journaled_end(run_dir: Path) -> float:
    from loggerhub import codec
    from loggerhub.journal import JournalReader

    ends = [entry for entry in JournalReader(run_dir).entries() if entry.type == codec.RUN_END]
    return codec.run_end(ends[-1])[1]


def _logged_kinds(run_dir: Path) -> Counter[str]:
    """How many records of each kind the journal holds, counted as delivery counts them."""
    from loggerhub import codec
    from loggerhub.delivery import DISPATCH, record_kind
    from loggerhub.journal import JournalReader

    kinds: Counter[str] = Counter()
    for entry in JournalReader(run_dir).entries():
        if entry.type == codec.RUN_START and entry.data.get("config"):
            kinds[codec.PARAMS] += 1
        elif entry.type == codec.METRICS:
            kinds[codec.METRICS] += len(entry.data["values"])
        elif entry.type == codec.EVENT or entry.type in DISPATCH:
            kinds[record_kind(entry)] += 1
    return kinds


def _delivered_from(run: Any, backend: str) -> DeliveredRun:
    """The DeliveredRun of a run the test delivered itself (no summary of a live delivery)."""
    from loggerhub.delivery import ConsumerStatus

    state = ConsumerStatus.load(run.paths.consumer_file(backend)).state or {}
    return DeliveredRun(dir=run.dir, run_id=run.id, summary={}, state=state)


def _delivered(run: Any) -> DeliveredRun:
    from loggerhub.delivery import ConsumerStatus

    backend = next(name for name in run.backends if name != "local")
    state = ConsumerStatus.load(run.paths.consumer_file(backend)).state or {}
    return DeliveredRun(dir=run.dir, run_id=run.id, summary=run.summary, state=state)
