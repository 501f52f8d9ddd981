"""The plugin kit: full hook signatures, one session lifecycle, one way to draw boxes.

The plugin under test is a small, real kit backend defined here: its tracker is a directory of
JSON-lines files (one per tracker run), which the tests read back the way a tracker's own storage
is read back in a backend's conformance suite.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import loggerhub
from loggerhub.delivery import Consumer, supported_records
from loggerhub.plugins import get_plugin_manager
from loggerhub_hookspecs import (
    Box,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    RunError,
    RunInfo,
    Status,
    TextRecord,
    specs,
)
from loggerhub_hookspecs.kit import (
    PALETTE,
    RECORD_METHODS,
    TrackerPlugin,
    TrackerSession,
    box_color,
    box_dict,
    draw_boxes,
)

# -------------------------------------------------------------------------------- the plugin


class NotebookSession(TrackerSession):
    """A tracker run is ``<store>/<tracker run id>.jsonl``; it takes params, metrics, images and
    epoch boundaries, and nothing else. ``fail_start`` / ``fail_end`` make the first start or end
    fail after it has touched the store, as a client that times out half-way would."""

    def __init__(self, run: RunInfo, state: dict[str, Any], *, resumed: bool) -> None:
        super().__init__(run, state, resumed=resumed)
        store = Path(run.options["store"])
        store.mkdir(parents=True, exist_ok=True)
        if resumed:
            self.file = store / f"{state['tracker_run']}.jsonl"
            assert self.file.exists(), "resumed a tracker run that was never created"
        else:
            state["tracker_run"] = uuid.uuid4().hex
            self.file = store / f"{state['tracker_run']}.jsonl"
        self._write({"opened": "resumed" if resumed else "created"})
        flag = store / "fail_start"
        if flag.exists():
            flag.unlink()
            raise ConnectionError("timed out after creating the run")

    def _write(self, line: dict[str, Any]) -> None:
        with self.file.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    def log_params(self, params: Mapping[str, ParamValue]) -> None:
        self._write({"params": dict(params)})

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self._write({"metrics": [[p.key, p.step, p.value] for p in points]})

    def log_image(self, image: ImageRecord) -> None:
        png, width, height = draw_boxes(image.png_bytes(), image.boxes)
        self._write({"image": image.key, "size": [width, height], "boxes": [box_dict(b) for b in image.boxes],
                     "bytes": len(png)})

    def on_event(self, event: LifecycleEvent) -> None:
        self._write({"event": event.phase.value, "step": event.step})

    def end(self, status: Status, ended_at: float, error: RunError | None) -> None:
        flag = self.file.parent / "fail_end"
        if flag.exists():
            flag.unlink()
            raise ConnectionError("connection reset while closing")
        self._write({"end": status.value, "ended_at": ended_at,
                     "error": None if error is None else [error.type, error.message]})


class NotebookPlugin(TrackerPlugin):
    session_path = f"{__name__}:NotebookSession"
    client_distribution = "pluggy"


def tracker_runs(store: Path) -> dict[str, list[dict[str, Any]]]:
    return {f.stem: [json.loads(line) for line in f.read_text().splitlines()] for f in sorted(store.glob("*.jsonl"))}


def deliver(run_dir: Path, store: Path, **kwargs: Any) -> Any:
    return Consumer(run_dir, "notebook", plugin=NotebookPlugin(), options={"store": str(store)},
                    backoff=(0.01, 0.02), log=lambda message: None, **kwargs).run()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "tracker"


# -------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", sorted(n for n in dir(specs) if n.startswith("loggerhub_")))
def test_every_hook_is_implemented_with_the_full_signature(name: str) -> None:
    spec = inspect.signature(getattr(specs, name))
    implementation = inspect.signature(getattr(NotebookPlugin(), name))
    assert list(implementation.parameters) == list(spec.parameters)
    pm = get_plugin_manager({"notebook": NotebookPlugin()})
    assert getattr(pm.hook, name).get_hookimpls()


def test_mypy_reports_a_session_that_drops_an_argument(tmp_path: Path) -> None:
    module = tmp_path / "dropped.py"
    module.write_text(
        "from loggerhub_hookspecs import Status\n"
        "from loggerhub_hookspecs.kit import TrackerSession\n\n\n"
        "class Dropped(TrackerSession):\n"
        "    def end(self, status: Status) -> None:\n"
        "        pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--ignore-missing-imports", str(module)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stdout
    assert 'dropped.py:6: error: Signature of "end" incompatible with supertype' in result.stdout


def test_supported_records_are_the_overridden_methods() -> None:
    phases = {kind for kind, method in RECORD_METHODS.items() if method == "on_event"}
    # System metrics go to log_metrics unless a session places them natively.
    assert NotebookSession.supported_records() == {"params", "metrics", "system_metrics", "image"} | phases
    assert TrackerSession.supported_records() == frozenset()
    assert supported_records(NotebookPlugin()) == NotebookSession.supported_records()


def test_client_version_imports_the_session_and_reads_the_client_distribution() -> None:
    import pluggy

    assert NotebookPlugin().loggerhub_client_version() == pluggy.__version__

    class Missing(TrackerPlugin):
        session_path = "loggerhub_no_such_tracker_sdk._session:Session"

    with pytest.raises(ImportError):
        Missing().loggerhub_client_version()


# -------------------------------------------------------------------------------- lifecycle


def test_every_kind_reaches_its_session_method_and_the_rest_is_counted_as_skipped(
        runs_dir: Path, store: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "w.pt"
    artifact.write_bytes(b"w")
    with loggerhub.init(project="p", dir=runs_dir, config={"lr": 0.1}) as run:
        run.log_event("epoch_start", epoch=0)
        run.log_metrics({"loss": 0.5, "acc": 0.9}, step=0)
        run.log_image("img", np.zeros((8, 8, 3), np.uint8), step=0, boxes=[{"box": [1, 1, 5, 5], "label": "cat"}])
        run.log_text("notes", "not kept by this tracker")
        run.log_table("tab", ["a"], [[1]])
        run.log_artifact(artifact)
        run.log_event("epoch_end", epoch=0)
    status = deliver(run.dir, store)
    [lines] = tracker_runs(store).values()
    assert lines[0] == {"opened": "created"}
    assert lines[1] == {"params": {"lr": 0.1}}
    assert {"event": "epoch_start", "step": 0} in lines and {"event": "epoch_end", "step": 0} in lines
    assert {"metrics": [["loss", 0, 0.5], ["acc", 0, 0.9]]} in lines
    image = next(line for line in lines if "image" in line)
    assert image["size"] == [8, 8] and image["boxes"][0]["label"] == "cat"
    assert lines[-1]["end"] == "FINISHED"
    assert status.skipped == {"text": 1, "table": 1, "artifact": 1}
    assert status.rejected == 0 and status.errors == 0 and status.finished


def test_a_retried_start_attaches_to_the_run_the_failed_attempt_created(runs_dir: Path, store: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_metrics({"x": 1.0}, step=0)
    store.mkdir()
    (store / "fail_start").touch()
    status = deliver(run.dir, store)
    runs = tracker_runs(store)
    assert len(runs) == 1, runs  # not a second tracker run for the retry
    [lines] = runs.values()
    assert [line.get("opened") for line in lines[:2]] == ["created", "resumed"]
    assert lines[-1]["end"] == "FINISHED" and status.errors == 1


def test_an_end_retried_after_a_failure_ends_the_same_run_once(runs_dir: Path, store: Path) -> None:
    try:
        with loggerhub.init(project="p", dir=runs_dir) as run:
            run.log_metrics({"x": 1.0}, step=0)
            raise ValueError("diverged at step 0")
    except ValueError:
        pass
    store.mkdir()
    (store / "fail_end").touch()
    status = deliver(run.dir, store)
    [lines] = tracker_runs(store).values()
    ends = [line for line in lines if "end" in line]
    assert len(ends) == 1 and ends[0]["end"] == "FAILED"
    assert ends[0]["error"][0] == "ValueError" and "diverged" in ends[0]["error"][1]
    assert {"opened": "resumed"} in lines and status.errors == 1 and status.finished


def test_a_record_before_the_run_started_is_a_loud_error() -> None:
    plugin = NotebookPlugin()
    with pytest.raises(RuntimeError, match="before run_start or run_resume"):
        plugin.loggerhub_log_text(text=TextRecord("k", "t", 0, 0.0))
    info = RunInfo("r", "p", "n", Path("."), {}, 0.0)
    with pytest.raises(RuntimeError, match="run_end arrived before"):
        plugin.loggerhub_run_end(run=info, status=Status.FINISHED, ended_at=0.0, error=None)


# -------------------------------------------------------------------------------- boxes


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def test_draw_boxes_outlines_each_class_in_its_palette_colour() -> None:
    boxes = [Box(10, 40, 30, 60, label="cat", class_id=0), Box(50, 40, 70, 60, class_id=1),
             Box(80, 40, 95, 60, class_id=len(PALETTE))]
    png, width, height = draw_boxes(_png(100, 80), boxes)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert (width, height) == image.size == (100, 80)
    assert image.getpixel((20, 60)) == PALETTE[0]  # bottom edge of the cat box
    assert image.getpixel((60, 60)) == PALETTE[1]
    assert image.getpixel((88, 60)) == PALETTE[0]  # class ids wrap around the palette
    assert image.getpixel((20, 50)) == (0, 0, 0)  # inside: untouched
    # The caption sits on a tab of the box's colour, above the box.
    assert image.getpixel((10, 30)) == PALETTE[0]


def test_box_colour_without_a_class_id_follows_the_label() -> None:
    assert box_color(Box(0, 0, 1, 1, label="dog")) == box_color(Box(5, 5, 9, 9, label="dog"))
    assert box_color(Box(0, 0, 1, 1, class_id=3)) == PALETTE[3]


def test_box_dict_is_json_even_for_a_nan_score() -> None:
    data = box_dict(Box(1, 2, 3, 4, label="x", score=math.nan, class_id=2))
    assert json.loads(json.dumps(data, allow_nan=False)) == {
        "x0": 1, "y0": 2, "x1": 3, "y1": 4, "label": "x", "score": None, "class_id": 2}


def test_draw_boxes_keeps_an_alpha_channel() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(out, format="PNG")
    png, _, _ = draw_boxes(out.getvalue(), [Box(2, 2, 10, 10)])
    assert Image.open(io.BytesIO(png)).mode == "RGBA"
