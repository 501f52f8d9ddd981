"""The shared conformance scenario, read back from the offline archives comet_ml wrote."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from loggerhub_comet._session import import_comet
from loggerhub_comet.keys import system_key, to_tracker
from loggerhub_comet.offline import iter_messages, read_offline_dir, read_offline_zip

from loggerhub.testing.conformance import (
    CONFUSION_LABELS,
    CONFUSION_MATRIX,
    NONFINITE_KEY,
    BackendConformance,
    DeliveredRun,
    TrackerView,
)


def comet_experiment(run: DeliveredRun, options: Mapping[str, Any]) -> dict[str, Any]:
    """The run's experiment in the offline directory, merged over all its archives."""
    experiments = read_offline_dir(options["offline_dir"])
    key = run.state["experiment_key"]
    assert key in experiments, (key, sorted(experiments))
    return experiments[key]


def view_of(experiment: dict[str, Any]) -> TrackerView:
    view = TrackerView(status=experiment["others"].get("status"))
    # The last archive is the one run_end wrote: its end time, and Comet's own error message.
    last = read_offline_zip(experiment["parts"][-1])["experiment"]
    view.ended_at = last["stop_time"] / 1000
    view.error = last.get("customer_error_message")
    view.params = {name: str(value) for name, value in experiment["params"].items()}
    view.metrics = {name: [(p["step"], p["value"]) for p in points]
                    for name, points in experiment["metrics"].items()}
    for upload in experiment["uploads"]:
        meta = upload["metadata"]
        kind = meta.get("loggerhub")
        if upload["upload_type"] == "visualization" and kind in ("image", "figure"):
            target = view.images if kind == "image" else view.figures
            target[upload["name"]] = target.get(upload["name"], 0) + 1
            boxes = sum(len(item.get("boxes", [])) for layer in meta.get("annotations", [])
                        for item in layer["data"])
            if boxes:
                view.boxes[upload["name"]] = view.boxes.get(upload["name"], 0) + boxes
        elif upload["upload_type"] == "text-sample":
            view.texts.setdefault(meta["key"], []).append(upload["text"])
        elif upload["upload_type"] == "confusion-matrix":
            view.tables[upload["content"]["title"]] = upload["content"]
        elif kind == "table":
            view.tables[meta["key"]] = upload
        elif upload["upload_type"] in ("asset", "model-element") and kind != "param":
            view.artifacts.add(upload["name"])
    return view


class TestCometConformance(BackendConformance):
    backend = "comet"
    # README, "Delivery guarantees": a record delivered again goes into the next archive too.
    redelivery = "at-least-once"

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"online": False, "offline_dir": str(tmp_path / "comet-offline")}

    def read_back(self, run: DeliveredRun, options: Mapping[str, Any]) -> TrackerView:
        return view_of(comet_experiment(run, options))

    def tracker_key(self, key: str) -> str:
        return to_tracker(key)

    # -- what Comet stores beyond the shared checks ------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def experiment(cls, delivered: tuple[DeliveredRun, TrackerView]) -> dict[str, Any]:
        run, _ = delivered
        return comet_experiment(run, {"offline_dir": run.state["offline_dir"]})

    def test_one_archive_one_experiment(self, experiment: dict[str, Any]) -> None:
        assert len(experiment["parts"]) == 1
        assert experiment["experiment"]["resume_strategy"] == "get_or_create"
        assert experiment["experiment"]["project_name"] == "conformance"
        assert experiment["others"]["Name"] == "scenario"

    def test_archive_passes_comet_upload_validation(self, experiment: dict[str, Any]) -> None:
        import_comet()  # with auto-logging off, as in the delivery process
        from comet_ml import schemas

        validators = {
            "metric_msg": schemas.get_metric_msg_validator(),
            "parameter_msg": schemas.get_parameter_msg_validator(),
            "file_upload": schemas.get_upload_msg_validator(),
            "log_other": schemas.get_log_other_msg_validator(),
            # loggerhub's telemetry, written as comet_ml's own messages (see test_telemetry.py).
            "standard_output": schemas.get_standard_output_msg_validator(),
            "system_details": schemas.get_system_details_msg_validator(),
            "system_info": schemas.get_system_info_msg_validator(),
            "installed_packages": schemas.get_installed_packages_msg_validator(),
            "git_metadata": schemas.get_git_metadata_msg_validator(),
        }
        with zipfile.ZipFile(experiment["parts"][0]) as archive:
            schemas.get_experiment_file_validator().validate(json.loads(archive.read("experiment.json")))
            members = set(archive.namelist())
            kinds = set()
            for message in iter_messages(archive):
                kinds.add(message["type"])
                validators[message["type"]].validate(message["payload"])
                if message["type"] == "file_upload":
                    assert message["payload"]["file_path"] in members
        # Nothing automatic of the delivery process: its environment messages and system metrics
        # are the trainer's, from the journal.
        assert kinds <= set(validators), kinds
        assert not [name for name in experiment["metrics"] if name.startswith("sys.") and system_key(name) is None]

    def test_nonfinite_are_stored_as_comet_strings(self, experiment: dict[str, Any]) -> None:
        with zipfile.ZipFile(experiment["parts"][0]) as archive:
            raw = [m["payload"]["metric"]["metricValue"] for m in iter_messages(archive)
                   if m["type"] == "metric_msg" and m["payload"]["metric"]["metricName"] == NONFINITE_KEY]
        assert raw == [1.0, "NaN", "Infinity", "-Infinity", 2.0]

    def test_epochs(self, experiment: dict[str, Any]) -> None:
        loss = experiment["metrics"]["train/loss"]
        assert [(p["step"], p["epoch"]) for p in loss[99:102]] == [(99, 0), (100, 1), (101, 1)]
        # Logged without an epoch, after points of epoch 2: no epoch, not a stale one.
        assert {p["epoch"] for p in experiment["metrics"][NONFINITE_KEY]} == {None}

    def test_params_keep_types(self, experiment: dict[str, Any]) -> None:
        params = experiment["params"]
        assert params["optimizer/momentum"] == 0.9
        assert params["optimizer/nesterov"] is True
        assert params["layers"] == [64, 128]
        assert params["dropout"] is None
        assert params["api_key"] == "***REDACTED***"
        assert set(experiment["system_params"]) <= {"curr_step", "curr_epoch"}

    def test_boxes_are_native_comet_annotations(self, experiment: dict[str, Any]) -> None:
        (image,) = [u for u in experiment["uploads"] if u["name"] == "samples/boxes"]
        (layer,) = image["metadata"]["annotations"]
        assert layer["name"] == "boxes"
        assert layer["data"] == [
            {"boxes": [[2.0, 2.0, 18.0, 18.0]], "label": "cat", "score": 0.9, "metadata": {"class_id": 0}},
            {"boxes": [[10.0, 5.0, 30.0, 25.0]], "label": "dog", "score": 0.5, "metadata": {"class_id": 1}},
        ]
        assert image["step"] == 2

    def test_confusion_matrix_content(self, experiment: dict[str, Any]) -> None:
        (upload,) = [u for u in experiment["uploads"] if u["upload_type"] == "confusion-matrix"]
        assert upload["content"]["matrix"] == [list(row) for row in CONFUSION_MATRIX]
        assert upload["content"]["labels"] == list(CONFUSION_LABELS)
        assert upload["step"] == 3

    def test_checkpoint_is_a_comet_model(self, experiment: dict[str, Any]) -> None:
        (model,) = [u for u in experiment["uploads"] if u["upload_type"] == "model-element"]
        assert (model["group"], model["name"], model["size"], model["step"]) == ("best", "best.pt", 2048, 3)
        assert model["metadata"]["loggerhub"] == "checkpoint"

    def test_status_history(self, experiment: dict[str, Any]) -> None:
        with zipfile.ZipFile(experiment["parts"][0]) as archive:
            statuses = [m["payload"]["value"] for m in iter_messages(archive)
                        if m["type"] == "log_other" and m["payload"]["key"] == "status"]
        assert statuses == ["RUNNING", "FINISHED"]

    def test_a_failed_run_says_why(self, tmp_path: Path) -> None:
        import loggerhub

        options = self.options(tmp_path)
        try:
            with loggerhub.init(project="conformance", name="boom", dir=tmp_path / "runs", backends=["comet"],
                                options={"comet": options}, drain_timeout=120) as run:
                run.log_metrics({"x": 1.0}, step=0)
                explode("loss diverged")
        except FloatingPointError:
            pass
        (experiment,) = read_offline_dir(options["offline_dir"]).values()
        others = experiment["others"]
        assert (others["status"], others["error_type"], others["error_message"]) == (
            "FAILED", "FloatingPointError", "loss diverged")
        meta = experiment["experiment"]
        # Comet's own failure report, which `comet upload` sends as the experiment's error.
        assert meta["customer_error_reported"] is True
        assert meta["customer_error_message"] == "FloatingPointError: loss diverged"
        (trace,) = [u for u in experiment["uploads"] if u["metadata"].get("loggerhub") == "traceback"]
        from loggerhub_comet.offline import read_member

        assert "in explode" in read_member(trace["archive"], trace["member"]).decode("utf-8")
        from loggerhub import codec
        from loggerhub.journal import JournalReader

        [end] = [e for e in JournalReader(run.dir).entries() if e.type == codec.RUN_END]
        assert meta["stop_time"] == round(codec.run_end(end)[1] * 1000)


def explode(message: str) -> None:
    raise FloatingPointError(message)
