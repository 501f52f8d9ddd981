"""The shared conformance suite, read back from the files the Neptune client wrote offline."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from loggerhub_neptune import offline
from loggerhub_neptune.keys import from_segment_path, to_tracker
from PIL import Image

from loggerhub.testing.conformance import (
    NONFINITE_KEY,
    NONFINITE_VALUES,
    BackendConformance,
    DeliveredRun,
    TrackerView,
)

ROOT_NAMESPACES = {"parameters", "models", "artifacts", "loggerhub", "sys", "source_code", "monitoring"}


def neptune_fields(run: DeliveredRun, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    parts = offline.read_run(options["data_dir"], run.run_id)
    assert parts, f"no offline container for {run.run_id} under {options['data_dir']}"
    return offline.merge_parts(parts)


def view_of(fields: Mapping[str, dict[str, Any]]) -> TrackerView:
    view = TrackerView(status=fields.get("loggerhub/status", {}).get("value"))
    if "loggerhub/ended_at" in fields:
        view.ended_at = fields["loggerhub/ended_at"]["value"] / 1000  # a Neptune datetime: ms
    if "loggerhub/error/type" in fields:
        view.error = f"{fields['loggerhub/error/type']['value']}: {fields['loggerhub/error/message']['value']}"
    figures = set(fields.get("loggerhub/figures", {}).get("values", []))
    for path, field in fields.items():
        kind = field["type"]
        root = path.split("/")[0]
        if root == "parameters":
            view.params[path.removeprefix("parameters/")] = str(field["value"])
        elif path.startswith("loggerhub/boxes/"):
            key = from_segment_path(path.removeprefix("loggerhub/boxes/"))
            view.boxes[to_tracker(key)] = len(field["values"])
        elif root in ("models", "artifacts"):
            if kind == "file":
                view.artifacts.add(path)
            else:
                view.artifacts.update(f"{path}/{name}" for name in offline.file_set_files(field))
        elif root in ROOT_NAMESPACES:
            continue
        elif kind == "float_series":
            view.metrics[path] = [(v["step"], v["value"]) for v in field["values"]]
        elif kind == "image_series":
            (view.figures if path in figures else view.images)[path] = len(field["values"])
        elif kind == "string_series":
            view.texts[path] = [v["value"] for v in field["values"]]
        elif kind == "file" and field["ext"] == "csv":
            view.tables[path] = list(csv.reader(io.StringIO(Path(field["path"]).read_text(encoding="utf-8"))))
    return view


class TestNeptuneConformance(BackendConformance):
    backend = "neptune"
    # README, "Delivery guarantees": offline, a resumed delivery skips the series values the
    # run's previous container already ends with.
    redelivery = "exactly-once"

    def options(self, tmp_path: Path) -> dict[str, Any]:
        return {"mode": "offline", "data_dir": str(tmp_path / "neptune")}

    def read_back(self, run: DeliveredRun, options: Mapping[str, Any]) -> TrackerView:
        return view_of(neptune_fields(run, options))

    def tracker_key(self, key: str) -> str:
        # Params are read back relative to parameters/, where only the tilde rule applies; none of
        # the scenario's keys is reserved or made of tildes, so both rules leave them as they are.
        return to_tracker(key)

    def expect_param(self, value: Any) -> str:
        # README: None and lists are stored as JSON text (Neptune has no null or list atom).
        if value is None or isinstance(value, list):
            return json.dumps(value)
        return str(value)

    def expect_metric(self, value: float) -> float | None:
        # README: Neptune float series drop NaN/inf; they go to loggerhub/nonfinite/<key> instead.
        return value if math.isfinite(value) else None

    def expect_boxes(self, view: TrackerView, key: str, count: int) -> None:
        # README: no box type in Neptune; the boxes are drawn into the image and each is a JSON
        # entry of the string series loggerhub/boxes/<key>.
        assert view.boxes.get(key) == count, view.boxes

    # -- what the README promises beyond the shared scenario --------------------------------------

    def test_nonfinite_values_are_kept_aside(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run, _ = delivered
        fields = neptune_fields(run, self.options_of(run))
        companion = fields[f"loggerhub/nonfinite/{NONFINITE_KEY}"]
        assert companion["type"] == "string_series"
        stored = {v["step"]: v["value"] for v in companion["values"]}
        expected = {s: ("nan" if math.isnan(v) else "inf" if v > 0 else "-inf")
                    for s, v in NONFINITE_VALUES.items() if not math.isfinite(v)}
        assert stored == expected

    def test_boxes_are_json_and_drawn(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run, _ = delivered
        fields = neptune_fields(run, self.options_of(run))
        boxes = [json.loads(v["value"]) for v in fields["loggerhub/boxes/samples/boxes"]["values"]]
        assert [(b["step"], b["index"], b["label"], b["class_id"]) for b in boxes] == [
            (2, 0, "cat", 0), (2, 1, "dog", 1)]
        assert (boxes[0]["x0"], boxes[0]["y0"], boxes[0]["x1"], boxes[0]["y1"], boxes[0]["score"]) == (
            2, 2, 20, 20, 0.9)
        drawn = Image.open(io.BytesIO(fields["samples/boxes"]["values"][0]["data"])).convert("RGB")
        plain = Image.open(io.BytesIO(fields["samples/rgb"]["values"][0]["data"])).convert("RGB")
        assert drawn.size == plain.size == (48, 32)
        assert drawn.getpixel((2, 10)) != plain.getpixel((2, 10))  # on the cat box's left edge
        assert drawn.getpixel((30, 1)) == plain.getpixel((30, 1))  # outside every box

    def test_layout_and_no_side_effects(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run, _ = delivered
        fields = neptune_fields(run, self.options_of(run))
        assert {p.split("/")[0] for p in fields} >= {"sys", "parameters", "models", "artifacts", "loggerhub"}
        # The delivery process's own client captures nothing (no pid, tid, entrypoint or source
        # files of its own); monitoring/ and source_code/ hold only the run's telemetry, in the
        # one namespace of the run.
        from neptune.metadata_containers.run import generate_monitoring_namespace

        own = generate_monitoring_namespace(run.run_id)
        assert not [p for p in fields if p.startswith("monitoring/") and not p.startswith(own + "/")]
        assert not [p for p in fields if p.rsplit("/", 1)[-1] in ("pid", "tid", "traceback")]
        assert {p for p in fields if p.startswith("source_code/")} <= {"source_code/requirements", "source_code/diff"}
        assert fields["sys/name"]["value"] == "scenario"
        assert fields["sys/failed"]["value"] is False
        assert fields["loggerhub/run_id"]["value"] == run.run_id
        assert fields["loggerhub/part"]["value"] == 1
        assert fields["models/best.pt"]["type"] == "file"
        assert fields["val/confusion_matrix"]["ext"] == "csv"
        assert fields["loggerhub/figures"]["values"] == ["plots/curve"]
        metric = fields["train/loss"]["values"]
        assert all(isinstance(v["ts"], float) and v["ts"] > 1e9 for v in metric)

    def test_state(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        run, _ = delivered
        data_dir = Path(self.options_of(run)["data_dir"])
        assert run.state["mode"] == "offline"
        assert run.state["custom_run_id"] == run.run_id
        assert run.state["data_directory"] == str(data_dir / ".neptune")
        assert set(run.state) == {"mode", "custom_run_id", "data_directory"}
        [container] = offline.run_containers(data_dir, run.run_id)
        assert container["part"] == 1

    def test_confusion_matrix_csv(self, delivered: tuple[DeliveredRun, TrackerView]) -> None:
        assert delivered[1].tables["val/confusion_matrix"] == [
            ["cat", "dog", "background"], ["5", "1", "0"], ["2", "7", "1"], ["0", "1", "9"]]

    def options_of(self, run: DeliveredRun) -> dict[str, Any]:
        # The suite stores runs in <tmp_path>/runs/<project>/<run id>; options(tmp_path) is pure.
        return self.options(run.dir.parents[2])

    @pytest.mark.parametrize("status", ["FINISHED", "KILLED"])
    def test_sys_failed(self, tmp_path: Path, status: str) -> None:
        import loggerhub

        options = self.options(tmp_path)
        run = loggerhub.init(project="p", name="f", dir=tmp_path / "runs", backends=["neptune"],
                             options={"neptune": options}, drain_timeout=120)
        run.log_metrics({"x": 1.0}, step=0)
        run.finish(status)
        [part] = offline.read_run(options["data_dir"], run.id)
        assert part["fields"]["sys/failed"]["value"] is (status != "FINISHED")
        assert part["fields"]["loggerhub/status"]["value"] == status
        if status == "FINISHED":
            assert "loggerhub/error/type" not in part["fields"]
            assert not [p for p in part["fields"] if p.startswith("monitoring/") and p.endswith("/traceback")]
        else:  # ended KILLED by the trainer, with no exception: loggerhub says so
            assert part["fields"]["loggerhub/error/type"]["value"] == "Killed"

    def test_a_failed_run_says_why_where_neptune_users_look(self, tmp_path: Path) -> None:
        import loggerhub

        options = self.options(tmp_path)
        try:
            with loggerhub.init(project="p", name="boom", dir=tmp_path / "runs", backends=["neptune"],
                                options={"neptune": options}, drain_timeout=120) as run:
                run.log_metrics({"x": 1.0}, step=0)
                explode("loss diverged")
        except FloatingPointError:
            pass
        [part] = offline.read_run(options["data_dir"], run.id)
        fields = part["fields"]
        assert fields["sys/failed"]["value"] is True
        assert fields["loggerhub/status"]["value"] == "FAILED"
        assert fields["loggerhub/error/type"]["value"] == "FloatingPointError"
        assert fields["loggerhub/error/message"]["value"] == "loss diverged"
        # The client's own place for an uncaught exception: a string series of lines.
        lines = [v["value"] for v in fields["monitoring/traceback"]["values"]]
        assert lines[0] == "FloatingPointError: loss diverged"
        assert any("in explode" in line for line in lines), lines
        from loggerhub import codec
        from loggerhub.journal import JournalReader

        [end] = [e for e in JournalReader(run.dir).entries() if e.type == codec.RUN_END]
        ended_at = codec.run_end(end)[1]
        # The journal's end, to the millisecond a Neptune datetime keeps.
        assert abs(fields["loggerhub/ended_at"]["value"] / 1000 - ended_at) < 0.001
        assert fields["loggerhub/started_at"]["type"] == "datetime"


def explode(message: str) -> None:
    raise FloatingPointError(message)


def test_token_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import loggerhub

    token = "tok-" + os.urandom(8).hex()
    monkeypatch.setenv("NEPTUNE_API_TOKEN", token)
    options = {"mode": "offline", "data_dir": str(tmp_path / "neptune")}
    with loggerhub.init(project="p", name="secret", dir=tmp_path / "runs", backends=["neptune"],
                        options={"neptune": options}, drain_timeout=120) as run:
        run.log_metrics({"x": 1.0}, step=0)
    assert run.summary["trackers"]["neptune"]["undelivered"] == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("neptune" in p.parts for p in files)
    assert not [p for p in files if token.encode() in p.read_bytes()]
