"""The shared conformance scenario, read back from a real MLflow tracking server."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from loggerhub_mlflow.keys import to_tracker
from loggerhub_mlflow.testing import MlflowServer, read_back

from loggerhub.testing.conformance import BackendConformance, DeliveredRun, TrackerView


class TestMlflowConformance(BackendConformance):
    backend = "mlflow"
    # README "Delivery, retries and resume": on a SQL store (this server's), a redelivered
    # metric batch is stored once; every other record is written idempotently.
    redelivery = "exactly-once"
    server: MlflowServer

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _server(cls, mlflow_server: MlflowServer) -> None:
        cls.server = mlflow_server

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"tracking_uri": self.server.uri}

    def read_back(self, run: DeliveredRun, options: Mapping[str, Any]) -> TrackerView:
        view: TrackerView = read_back(options["tracking_uri"], run.state["run_id"])
        if os.environ.get("LOGGERHUB_MLFLOW_DUMP"):
            print(run.state, {k: v[:3] for k, v in view.metrics.items()}, view, sep="\n")
        return view

    def tracker_key(self, key: str) -> str:
        """README "Keys": characters MLflow refuses become ``__`` and their code point."""
        return to_tracker(key)

    def expect_metric(self, value: float) -> float | None:
        """README "Metrics": MLflow's SQL stores hold +/-inf as the largest finite double."""
        if math.isinf(value):
            return math.copysign(sys.float_info.max, value)
        return value

    def expect_boxes(self, view: TrackerView, key: str, count: int) -> None:
        """README "Images": MLflow has no box annotations. The boxes are drawn into the image
        and kept, with label, score and class, in ``image_annotations/<key>+step+N+timestamp+T.json``."""
        assert view.images.get(key) == 1, view.images
        assert view.boxes.get(key) == count, view.boxes

    def test_confusion_matrix_is_a_table_with_its_labels(
        self, delivered: tuple[DeliveredRun, TrackerView]
    ) -> None:
        table = delivered[1].tables[self.tracker_key("val/confusion_matrix")]
        assert list(table.columns) == ["actual", "cat", "dog", "background"]
        assert table.values.tolist() == [["cat", 5, 1, 0], ["dog", 2, 7, 1], ["background", 0, 1, 9]]

    def test_params_file_holds_canonical_keys_and_typed_values(
        self, delivered: tuple[DeliveredRun, TrackerView]
    ) -> None:
        import json

        from mlflow.tracking import MlflowClient

        run, view = delivered
        assert "loggerhub/params.json" in view.artifacts
        client = MlflowClient(self.server.uri)
        local = client.download_artifacts(run.state["run_id"], "loggerhub/params.json",
                                          str(run.dir / "readback"))
        doc = json.loads(Path(local).read_text(encoding="utf-8"))
        assert doc["params"]["layers"] == [64, 128]
        assert doc["params"]["optimizer/nesterov"] is True
        assert doc["params"]["api_key"] == "***REDACTED***"
        assert doc["differs"] == {}
