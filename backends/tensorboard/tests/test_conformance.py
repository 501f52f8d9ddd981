"""The shared conformance scenario, read back from the event files with TensorBoard's own reader."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loggerhub_tensorboard import keys
from loggerhub_tensorboard.reader import TensorBoardRun, as_logged, read_logdir
from PIL import Image

from loggerhub.journal import JournalReader
from loggerhub.testing.conformance import (
    CONFUSION_LABELS,
    CONFUSION_MATRIX,
    SCENARIO_KEYS,
    BackendConformance,
    DeliveredRun,
    TrackerView,
)

ANNOTATIONS = keys.reserved("annotations/")


@dataclass
class TensorBoardView(TrackerView):
    run: TensorBoardRun | None = None
    #: Distinct colours in each image: a drawn box adds some to a plain image.
    colours: dict[str, int] = field(default_factory=dict)


def param_text(value: bool | float | str) -> str:
    """A param as the HParams table shows it: numbers are doubles, shown without a trailing .0."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return str(int(value))
    return str(value)


class TestTensorBoardConformance(BackendConformance):
    backend = "tensorboard"
    # README "Redelivery": a record the logdir holds already is not written again.
    redelivery = "exactly-once"

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"logdir": str(tmp_path / "tb" / "{project}" / "{run_id}")}

    def read_back(self, run: DeliveredRun, options: Mapping[str, Any]) -> TrackerView:
        project = run.dir.parent.name
        logdir = Path(options["logdir"].replace("{project}", project).replace("{run_id}", run.run_id))
        assert run.state == {"logdir": str(logdir)}
        tb = read_logdir(logdir)
        images = {tag: len(series) for tag, series in tb.images.items()}
        texts = {
            tag: [t.text for t in series] for tag, series in tb.texts.items() if not keys.is_reserved(tag)
        }
        return TensorBoardView(
            status=tb.status,
            # The status text's wall time is the journal's end time; the HParams session end
            # holds it too (test_backend.py, test_the_end_is_stamped_with_the_journal_end_time).
            ended_at=tb.ended_at,
            error=tb.error,
            params={name: param_text(value) for name, value in tb.hparams.items()},
            metrics={tag: [(s.step, s.value) for s in series] for tag, series in tb.scalars.items()},
            # TensorBoard shows images and figures alike, in its Images tab.
            images=images,
            figures=images,
            boxes={
                tag.removeprefix(ANNOTATIONS): len(json.loads(series[-1].text)["boxes"])
                for tag, series in tb.texts.items()
                if tag.startswith(ANNOTATIONS)
            },
            artifacts=tb.files,
            texts=texts,
            # Tables reach the Text tab as markdown tables.
            tables={tag: series[-1] for tag, series in texts.items() if series[-1].startswith("| ")},
            run=tb,
            colours={
                tag: len(Image.open(io.BytesIO(series[-1].png)).convert("RGB").getcolors(1 << 16))
                for tag, series in tb.images.items()
            },
        )

    def tracker_key(self, key: str) -> str:
        return keys.to_tracker(key)

    def expect_metric(self, value: float) -> float | None:
        # TensorBoard scalars are float32; NaN and +/-inf are kept.
        return as_logged(value)

    def expect_boxes(self, view: TrackerView, key: str, count: int) -> None:
        # TensorBoard has no box annotations: the boxes are drawn onto the image, and kept as
        # JSON in the text _loggerhub_/annotations/<tag>.
        assert view.boxes.get(key) == count, view.boxes
        assert isinstance(view, TensorBoardView)
        assert view.colours[key] > 1, "the boxes were not drawn"

    # -- TensorBoard specifics ---------------------------------------------------------------

    def test_plain_images_are_not_drawn_on(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        view = delivered[1]
        assert isinstance(view, TensorBoardView)
        assert view.colours["samples/rgb"] == 1
        assert "samples/rgb" not in view.boxes

    def test_box_json(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        view = delivered[1]
        assert isinstance(view, TensorBoardView) and view.run is not None
        note = json.loads(view.run.texts[ANNOTATIONS + "samples/boxes"][-1].text)
        assert note["caption"] is None and (note["width"], note["height"]) == (48, 32)
        assert note["boxes"] == [
            {"x0": 2.0, "y0": 2.0, "x1": 20.0, "y1": 20.0, "label": "cat", "score": 0.9, "class_id": 0},
            {"x0": 10.0, "y0": 5.0, "x1": 40.0, "y1": 30.0, "label": "dog", "score": 0.5, "class_id": 1},
        ]

    def test_confusion_matrix_markdown(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        table = delivered[1].tables["val/confusion_matrix"]
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
        assert rows[0] == ["true \\\\ predicted", *CONFUSION_LABELS]
        assert rows[1] == ["---"] * 4
        expected = zip(CONFUSION_LABELS, CONFUSION_MATRIX, strict=True)
        assert rows[2:] == [[label, *map(str, row)] for label, row in expected]

    def test_hparams_session(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        view = delivered[1]
        assert isinstance(view, TensorBoardView) and view.run is not None
        assert view.run.hparams_status == "STATUS_SUCCESS"
        assert view.run.hparams["epochs"] == 3.0 and view.run.hparams["optimizer/nesterov"] is True
        assert view.run.plugins["_hparams_/session_start_info"] == "hparams"

    def test_wall_times_are_the_logged_times(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run, view = delivered
        assert isinstance(view, TensorBoardView) and view.run is not None
        logged = {}
        for entry in JournalReader(run.dir).entries():
            if entry.type == "metrics":
                for key in entry.data["values"]:
                    logged[(key, entry.data["step"])] = entry.data["ts"]
        key = SCENARIO_KEYS[1]
        series = view.run.scalars[self.tracker_key(key)]
        assert [s.wall_time for s in series] == [logged[(key, s.step)] for s in series]

    def test_one_run_one_event_file(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        view = delivered[1]
        assert isinstance(view, TensorBoardView) and view.run is not None
        assert len(view.run.event_files) == 1
        assert math.isnan(dict(view.metrics["val/nonfinite"])[1])
