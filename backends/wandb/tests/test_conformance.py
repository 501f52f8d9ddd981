"""The shared conformance scenario, read back from the offline run's ``.wandb`` file with wandb's
own protobuf records (``loggerhub_wandb.datastore``), and the media files those records name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loggerhub_wandb import keys, reader
from loggerhub_wandb._session import CONFUSION_COLUMNS, wandb_run_id
from loggerhub_wandb.testing import read_back

from loggerhub.testing.conformance import (
    CONFUSION_LABELS,
    CONFUSION_MATRIX,
    SCENARIO_KEYS,
    SCENARIO_STEPS,
    BackendConformance,
    DeliveredRun,
    TrackerView,
)


class TestWandbConformance(BackendConformance):
    backend = "wandb"
    # The README's "Delivery guarantee": hooks wait until wandb-core wrote their records, and a
    # redelivered batch is skipped by identity.
    redelivery = "exactly-once"

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"mode": "offline", "dir": str(tmp_path / "wandb-root")}

    def read_back(self, run: DeliveredRun, options: Mapping[str, Any]) -> TrackerView:
        assert run.state["id"] == wandb_run_id(run.run_id)
        assert run.state["mode"] == "offline" and run.state["dir"] == options["dir"]
        return read_back(options["dir"], run.state["id"])

    def tracker_key(self, key: str) -> str:
        return keys.to_tracker(key)

    def expect_param(self, value: Any) -> str:
        # W&B config keeps JSON values: they read back as the Python values they were.
        return str(value)

    # -- W&B specifics --------------------------------------------------------------------------

    def _run(self, delivered: tuple[DeliveredRun, TrackerView]) -> reader.WandbRun:
        run = delivered[0]
        parts = reader.read_parts(Path(run.state["dir"]) / "wandb", run.state["id"])
        assert len(parts) == 1 and parts[0].offline and not parts[0].problems
        return parts[0]

    def test_run_identity(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run = self._run(delivered)
        assert run.run_id == delivered[0].state["id"] and run.name == "scenario"
        assert run.project == "conformance"
        assert run.summary[keys.reserved("run_id")] == delivered[0].run_id
        assert run.exit_code == 0

    def test_wandb_step_increases_and_the_user_step_is_the_axis(
            self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run = self._run(delivered)
        steps = [row.step for row in run.history]
        assert steps == list(range(len(steps)))
        assert run.metrics == {"*": keys.STEP}
        key = self.tracker_key(SCENARIO_KEYS[0])
        assert [row.values[keys.STEP] for row in run.history if key in row.values] == list(range(SCENARIO_STEPS))

    def test_rows_keep_the_logged_time_and_epoch(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        from loggerhub.journal import JournalReader

        logged = {}
        for entry in JournalReader(delivered[0].dir).entries():
            if entry.type == "metrics" and SCENARIO_KEYS[1] in entry.data["values"]:
                logged[entry.data["step"]] = (entry.data["ts"], entry.data.get("epoch"))
        key = self.tracker_key(SCENARIO_KEYS[1])
        rows = [row.values for row in self._run(delivered).history if key in row.values]
        assert [(row["_timestamp"], row.get(keys.EPOCH)) for row in rows] == [logged[r[keys.STEP]] for r in rows]

    def test_nonfinite_are_kept(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        series = dict(delivered[1].metrics["val/nonfinite"])
        assert math.isnan(series[1]) and series[2] == math.inf and series[3] == -math.inf

    def test_native_boxes(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        import json

        run = self._run(delivered)
        row = next(row for row in run.history if "samples/boxes" in row.values)
        boxes = row.values["samples/boxes"]["boxes"]["predictions"]
        box_file = row.file(boxes["path"])
        assert box_file is not None
        data = json.loads(box_file.read_text())
        assert data["class_labels"] == {"0": "cat", "1": "dog"}
        assert data["box_data"][0] == {"position": {"minX": 2.0, "maxX": 20.0, "minY": 2.0, "maxY": 20.0},
                                       "domain": "pixel", "class_id": 0, "box_caption": "cat",
                                       "scores": {"score": 0.9}}

    def test_confusion_matrix_is_wandbs_chart(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run = self._run(delivered)
        table = delivered[1].tables["val/confusion_matrix"]
        assert table["columns"] == list(CONFUSION_COLUMNS)
        expected = [[CONFUSION_LABELS[i], CONFUSION_LABELS[j], count]
                    for i, row in enumerate(CONFUSION_MATRIX) for j, count in enumerate(row)]
        assert table["data"] == expected
        assert any("val/confusion_matrix_table" in row.values for row in run.history)
        chart = run.config["_wandb"]["visualize"]["val/confusion_matrix"]
        assert chart["panel_config"]["panelDefId"] == "wandb/confusion_matrix/v1"

    def test_checkpoint_is_a_model_artifact_with_aliases(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run = self._run(delivered)
        models = [a for a in run.artifacts if a.type == "model"]
        assert [(a.name, sorted(a.aliases)) for a in models] == [("best.pt", ["latest", "step-3"])]
        (local, size), = models[0].files.values()
        # "immutable": the manifest references loggerhub's copy in the run directory, not a staged one.
        assert Path(local).is_relative_to(delivered[0].dir)
        logged = delivered[0].dir.parents[2] / "files" / "best.pt"
        assert size == 2048 and Path(local).read_bytes() == logged.read_bytes()
        datasets = [a for a in run.artifacts if a.type == "dataset"]
        assert sorted(datasets[0].files) == ["a.txt", "sub/b.txt"]
