"""What a real TensorBoard server (its default, Rust data server) shows for a delivered run.

The EventAccumulator in the other tests is TensorBoard's Python loader; the server that
``tensorboard --logdir`` starts by default reads with ``tensorboard-data-server`` instead, which
differs (it drops float64 scalars, for one). The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from loggerhub_tensorboard import TensorBoardBackend
from PIL import Image

from loggerhub_hookspecs import Box, ImageRecord, MetricPoint, RunInfo, Status, TableRecord, TextRecord

T0 = 1_700_000_000.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_server = pytest.importorskip("tensorboard_data_server")
    if data_server.server_binary() is None:
        pytest.skip("no tensorboard-data-server binary for this platform")
    tmp = tmp_path_factory.mktemp("server")
    png = tmp / "image.png"
    Image.fromarray(np.full((32, 48, 3), 200, dtype=np.uint8)).save(png)
    run = RunInfo("r1", "p", "n", tmp / "run", {"lr": 0.1, "epochs": 3}, T0,
                  options={"logdir": str(tmp / "logs" / "{run_id}")})
    backend, state = TensorBoardBackend(), {}
    backend.loggerhub_run_start(run=run, state=state)
    backend.loggerhub_log_params(params=run.config)
    values = [1.0, math.nan, math.inf, 0.333333]
    backend.loggerhub_log_metrics(points=[MetricPoint(key, v, step, T0 + step)
                                          for step, v in enumerate(values)
                                          for key in ("train/loss", "odd key:#%@!")])
    backend.loggerhub_log_text(text=TextRecord("notes", "hello *markdown*", 1, T0 + 1))
    backend.loggerhub_log_table(table=TableRecord("table", ("a", "b|c"), ((1, "x"),), 1, T0 + 1))
    backend.loggerhub_log_image(image=ImageRecord("samples/boxes", png, 48, 32, 2, T0 + 2,
                                                  boxes=(Box(2, 2, 20, 20, "cat", 0.9, 0),)))
    backend.loggerhub_run_end(run=run, status=Status.KILLED, ended_at=T0 + 3, error=None)

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp / "logs"), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast=true", "--reload_interval", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                # Wait until the data server has loaded the whole file (the status text is last).
                if "_loggerhub_/status" in json.dumps(_get(base, "/data/plugin/text/tags")):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                errors = process.stderr.read() if process.stderr else ""
                raise RuntimeError(f"tensorboard did not come up: {errors}")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(30)


def _get(base: str, path: str, **query: str) -> Any:
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=30) as response:  # 127.0.0.1 only
        return json.loads(response.read())


def test_scalars_are_float32_with_nan_and_inf(server: str) -> None:
    tags = _get(server, "/data/plugin/scalars/tags")
    assert set(tags["r1"]) == {"train/loss", "odd key:#%@!"}
    for tag in ("train/loss", "odd key:#%@!"):
        series = _get(server, "/data/plugin/scalars/scalars", run="r1", tag=tag)
        assert series == [[T0, 0, 1.0], [T0 + 1, 1, "NaN"], [T0 + 2, 2, "Infinity"],
                          [T0 + 3, 3, float(np.float32(0.333333))]]


def test_text_and_tables(server: str) -> None:
    tags = set(_get(server, "/data/plugin/text/tags")["r1"])
    assert {"notes", "table", "_loggerhub_/status", "_loggerhub_/annotations/samples/boxes"} <= tags
    notes = _get(server, "/data/plugin/text/text", run="r1", tag="notes")
    assert notes[0]["text"] == "<p>hello <em>markdown</em></p>"
    table = _get(server, "/data/plugin/text/text", run="r1", tag="table")[0]["text"]
    assert "<th>b|c</th>" in table and "<td>x</td>" in table
    status = _get(server, "/data/plugin/text/text", run="r1", tag="_loggerhub_/status")
    assert [entry["text"] for entry in status] == ["<p>KILLED</p>"]


def test_images(server: str) -> None:
    tags = _get(server, "/data/plugin/images/tags")
    assert tags["r1"]["samples/boxes"]["samples"] == 1


def test_hparams_session(server: str) -> None:
    request = {"startIndex": 0, "sliceSize": 10,
               "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
               "colParams": [{"hparam": "lr"}, {"metric": {"tag": "train/loss", "group": ""}}]}
    groups = _get(server, "/data/plugin/hparams/session_groups", request=json.dumps(request))["sessionGroups"]
    assert len(groups) == 1
    assert groups[0]["hparams"] == {"lr": 0.1, "epochs": 3}
    session = groups[0]["sessions"][0]
    assert session["status"] == "STATUS_FAILURE"  # KILLED: TensorBoard has no "aborted"
    last = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
    assert last["train/loss"] == float(np.float32(0.333333))
