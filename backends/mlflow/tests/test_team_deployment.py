"""A team's MLflow deployment, for real: ``mlflow server`` on PostgreSQL, artifacts in S3 (moto).

Sixteen training processes log at once while the server is SIGKILLed and restarted and the
database restarted; every point must arrive once, every file byte for byte, no trainer may wait on
the outage, and no credential may reach a journal, a status file or an output stream.
See docs/deployment.md for the set-up these tests stand up.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from teamstack import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    PG_PASSWORD,
    MotoS3,
    PostgresCluster,
    mlflow_server,
    require_services,
)

TOKEN = "mlflow-token-Kd93jfQw71"
SECRETS = (TOKEN, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, PG_PASSWORD)

TRAINERS = 16
STEPS_BEFORE, STEPS_DURING = 100, 100  # before the outage, and while the server is down
KEYS = ("train/loss", "train/acc", "lr")
IMAGE_EVERY = 25
CHECKPOINT_BYTES = 20 * 2**20

# One training process: it logs until the outage file appears (phase A), then logs the rest while
# the server is down (phase B), timing phase B. The sleep stands in for a training step.
TRAINER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import numpy as np
    import loggerhub

    index, work, uri = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    before, during, keys, image_every = json.loads(sys.argv[4])
    checkpoint = work / f"checkpoint-{index}.pt"
    notes = work / f"notes-{index}.txt"
    run = loggerhub.init("team", f"trainer-{index}", backends=["mlflow"], dir=work / "runs",
                         options={"mlflow": {"tracking_uri": uri}}, config={"index": index, "lr": 0.01})

    def step(s):
        run.log_metrics({key: index + s / (k + 1) for k, key in enumerate(keys)}, step=s)
        if s % image_every == 0:
            run.log_image("samples/input", np.full((24, 32, 3), (index * 7 + s) % 256, np.uint8), step=s)
        time.sleep(0.02)

    for s in range(before):
        step(s)
    run.log_checkpoint(checkpoint, step=before - 1)
    (work / f"before-{index}").touch()
    while not (work / "outage").exists():
        time.sleep(0.05)
    started = time.time()
    for s in range(before, before + during):
        step(s)
    run.log_artifact(notes, name="notes.txt")
    ended = time.time()
    (work / f"during-{index}.json").write_text(json.dumps({"started": started, "ended": ended}))
    run.finish(timeout=900)
    print(json.dumps({"run_id": run.id, "summary": run.summary}, default=str))
    """
)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresCluster, MotoS3]]:
    require_services()
    with PostgresCluster() as pg, MotoS3(tmp_path_factory.mktemp("moto")) as s3:
        yield pg, s3


def _mlflow_env(monkeypatch: pytest.MonkeyPatch, s3: MotoS3) -> dict[str, str]:
    """The training machine's environment: the token and the S3 keys, as a team would set them."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**s3.env, "MLFLOW_TRACKING_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def _wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _assert_no_secrets(where: dict[str, bytes]) -> None:
    for name, content in where.items():
        for secret in SECRETS:
            assert secret.encode() not in content, f"a credential ({secret[:8]}...) is in {name}"


def _delivered(work: Path) -> dict[str, int]:
    """Records and points delivered so far, by run (from their consumer status files)."""
    found = {}
    for path in work.glob("runs/*/*/consumers/mlflow.json"):
        try:
            found[path.parent.parent.name] = int(json.loads(path.read_text())["delivered"])
        except (OSError, ValueError, KeyError):
            pass  # being replaced right now
    return found


def _behind(work: Path) -> int:
    """How many runs have journaled records their delivery has not acknowledged yet."""
    from loggerhub.journal import JournalReader

    count = 0
    for path in work.glob("runs/*/*/consumers/mlflow.json"):
        offset = json.loads(path.read_text())["offset"]
        count += JournalReader(path.parent.parent).last_seq() > offset
    return count


def _run_files(root: Path) -> dict[str, bytes]:
    """Every file loggerhub wrote for the runs (journals, consumer status, rejected lists, run.json,
    context), except its copies of the logged files and images (``artifacts/``, ``media/``)."""
    return {str(p): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not {"artifacts", "media"} & set(p.relative_to(root).parts[2:3])}


def _mlflow_runs(uri: str, experiment: str) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.search_experiments(filter_string=f"name = '{experiment}'")
    assert len(found) == 1
    runs = client.search_runs([found[0].experiment_id], max_results=1000)
    by_loggerhub_id: dict[str, object] = {}
    for run in runs:
        loggerhub_id = run.data.tags["loggerhub.run_id"]
        assert loggerhub_id not in by_loggerhub_id, f"two MLflow runs for {loggerhub_id}"
        by_loggerhub_id[loggerhub_id] = run
    return by_loggerhub_id


def _artifacts_in_bucket(s3: MotoS3, keys: list[str], run_id: str) -> dict[str, bytes]:
    """The run's files as the bucket holds them (read with boto3), by their MLflow artifact path."""
    marker = f"/{run_id}/artifacts/"
    return {key.split(marker, 1)[1]: s3.read(key) for key in keys if marker in key}


def _pixels(png: bytes) -> tuple[tuple[int, int], set[object]]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        return rgb.size, {color for _, color in rgb.getcolors(maxcolors=rgb.width * rgb.height) or ()}


@pytest.mark.slow
def test_sixteen_trainers_through_a_server_kill_and_a_database_restart(
        services: tuple[PostgresCluster, MotoS3], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pg, s3 = services
    env = _mlflow_env(monkeypatch, s3)
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    checkpoints, notes = {}, {}
    for index in range(TRAINERS):
        data = os.urandom(CHECKPOINT_BYTES)
        (work / f"checkpoint-{index}.pt").write_bytes(data)
        checkpoints[index] = hashlib.sha256(data).hexdigest()
        notes[index] = f"trainer {index}: notes written before the outage\n".encode()
        (work / f"notes-{index}.txt").write_bytes(notes[index])
    plan = json.dumps([STEPS_BEFORE, STEPS_DURING, list(KEYS), IMAGE_EVERY])
    with mlflow_server(tmp_path / "mlflow", pg, s3, proxied=True) as server:
        started = time.monotonic()
        trainers = []
        for index in range(TRAINERS):
            out = (tmp_path / f"trainer-{index}.out").open("wb")
            err = (tmp_path / f"trainer-{index}.err").open("wb")
            trainers.append((subprocess.Popen(
                [sys.executable, str(script), str(index), str(work), server.uri, plan],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL), out, err))
        try:
            _wait_for(lambda: all((work / f"before-{i}").exists() for i in range(TRAINERS)), 600,
                      "every trainer to log its first steps and its checkpoint")
            # Mid-way: every run exists in MLflow and is being delivered; some deliveries are still
            # sending the first steps or the checkpoint, the others wait for the rest of the run.
            _wait_for(lambda: sum(n > 0 for n in _delivered(work).values()) == TRAINERS, 600,
                      "every run's delivery to start")
            behind = _behind(work)
            killed_at = time.time()
            server.kill()
            (work / "outage").touch()
            _wait_for(lambda: all((work / f"during-{i}.json").exists() for i in range(TRAINERS)), 300,
                      "every trainer to log its remaining steps while the server is down")
            delivered_before = sum(_delivered(work).values())
            server.start()
            back_at = time.time()
            # The database goes down under a live server, once deliveries are flowing again: its
            # pooled connections die mid-delivery.
            _wait_for(lambda: sum(_delivered(work).values()) > delivered_before, 120, "deliveries to resume")
            pg.restart()
            for process, _, _ in trainers:
                process.wait(timeout=900)
            drained_at = time.time()
        finally:
            for process, out, err in trainers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                out.close()
                err.close()
        elapsed = time.monotonic() - started
        outputs = {str(p): p.read_bytes() for p in tmp_path.glob("trainer-*.*") if p.suffix in {".out", ".err"}}
        for process, _, _ in trainers:
            assert process.returncode == 0, outputs

        # No trainer waited: each logged its whole phase B while the server was down.
        last_logged = 0.0
        for index in range(TRAINERS):
            during = json.loads((work / f"during-{index}.json").read_text())
            assert killed_at <= during["started"] <= during["ended"] < back_at
            last_logged = max(last_logged, during["ended"])

        results = [json.loads(outputs[str(tmp_path / f"trainer-{i}.out")].decode().strip().splitlines()[-1])
                   for i in range(TRAINERS)]
        for result in results:
            assert result["summary"]["trackers"]["mlflow"]["undelivered"] == 0, result
        # The outage reached every delivery: each failed at least once and retried.
        failed = [result["summary"]["trackers"]["mlflow"]["errors"] for result in results]
        assert min(failed) > 0, failed
        failed_attempts = sum(failed)
        # The delivery processes write to the trainers' streams, so the credential search below
        # covers their error messages too.
        for index in range(TRAINERS):
            assert b"loggerhub[mlflow]: delivery failed" in outputs[str(tmp_path / f"trainer-{index}.err")]

        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.uri)
        runs = _mlflow_runs(server.uri, "team")
        assert sorted(runs) == sorted(r["run_id"] for r in results)
        points = images = files = 0
        keys = s3.keys()
        for index, result in enumerate(results):
            run = runs[result["run_id"]]
            run_id = run.info.run_id  # type: ignore[attr-defined]
            assert run.info.status == "FINISHED"  # type: ignore[attr-defined]
            for k, key in enumerate(KEYS):
                history = client.get_metric_history(run_id, key)
                steps = sorted(m.step for m in history)
                assert steps == list(range(STEPS_BEFORE + STEPS_DURING)), (index, key, len(history))
                assert all(m.value == pytest.approx(index + m.step / (k + 1)) for m in history)
                points += len(history)
            bucket = _artifacts_in_bucket(s3, keys, run_id)
            checkpoint = bucket[f"models/checkpoint-{index}.pt"]
            assert hashlib.sha256(checkpoint).hexdigest() == checkpoints[index]
            assert bucket["notes.txt"] == notes[index]
            pngs = {path: body for path, body in bucket.items() if path.startswith("images/") and path.endswith(".png")}
            expected_steps = range(0, STEPS_BEFORE + STEPS_DURING, IMAGE_EVERY)
            assert sorted(int(path.split("+step+")[1].split("+")[0]) for path in pngs) == list(expected_steps)
            for path, body in pngs.items():
                step = int(path.split("+step+")[1].split("+")[0])
                assert _pixels(body) == ((32, 24), {((index * 7 + step) % 256,) * 3})
            images += len(pngs)
            files += len(pngs) + 2  # the images, the checkpoint and the notes

    _assert_no_secrets({**_run_files(work / "runs"), **outputs})
    print(f"\nteam deployment: {TRAINERS} trainers, {points} points, {images} images, "
          f"{TRAINERS} x {CHECKPOINT_BYTES >> 20} MB checkpoints, {files} files checked in the bucket; "
          f"server down {back_at - killed_at:.1f} s (trainers done logging {last_logged - killed_at:.1f} s "
          f"after the kill); every run delivered {drained_at - back_at:.0f} s after the restart; "
          f"{elapsed:.0f} s from the first trainer's start to the last one's exit; "
          f"{failed_attempts} failed delivery attempts retried; {behind} deliveries behind at the kill")


@pytest.mark.slow
def test_direct_to_s3_through_a_server_kill(services: tuple[PostgresCluster, MotoS3], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    """The other artifact mode: the server only records the artifact root, and the delivery
    process writes to the bucket itself with the training machine's AWS keys."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    import loggerhub

    pg, s3 = services
    _mlflow_env(monkeypatch, s3)
    checkpoint = tmp_path / "model.pt"
    data = os.urandom(CHECKPOINT_BYTES)
    checkpoint.write_bytes(data)
    with mlflow_server(tmp_path / "mlflow", pg, s3, proxied=False, prefix="direct") as server:
        run = loggerhub.init("team-direct", backends=["mlflow"], dir=tmp_path / "runs",
                             options={"mlflow": {"tracking_uri": server.uri}})
        for step in range(50):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
        run.log_image("frame", np.full((8, 8, 3), 200, np.uint8), step=0)
        run.log_checkpoint(checkpoint, step=49)
        server.kill()
        for step in range(50, 100):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
        status = run.dir / "consumers" / "mlflow.json"
        _wait_for(lambda: status.exists() and json.loads(status.read_text())["errors"] > 0, 300,
                  "the delivery to meet the outage")
        server.start()
        run.finish(timeout=600)
        assert run.summary["trackers"]["mlflow"]["undelivered"] == 0, run.summary
        (mlflow_run,) = _mlflow_runs(server.uri, "team-direct").values()
        run_id = mlflow_run.info.run_id  # type: ignore[attr-defined]
        assert mlflow_run.info.artifact_uri.startswith(f"s3://{s3.bucket}/direct/")  # type: ignore[attr-defined]
        history = MlflowClient(server.uri).get_metric_history(run_id, "loss")
        assert sorted(m.step for m in history) == list(range(100))
    bucket = _artifacts_in_bucket(s3, s3.keys(), run_id)
    assert bucket["models/model.pt"] == data
    assert [_pixels(body) for path, body in bucket.items() if path.endswith(".png")] == [((8, 8), {(200,) * 3})]
    captured = capfd.readouterr()
    assert "loggerhub[mlflow]: delivery failed" in captured.err  # the delivery's stream is the one searched
    _assert_no_secrets({**_run_files(tmp_path / "runs"), "stdout": captured.out.encode(),
                        "stderr": captured.err.encode()})


DEPLOYMENT_DOC = Path(__file__).parents[3] / "docs" / "deployment.md"


def test_the_deployment_page_commands_parse() -> None:
    """docs/deployment.md's shell blocks are valid bash, its ``mlflow server`` commands use only
    options that this MLflow's ``mlflow server`` has, and its store URI names a database MLflow
    takes. (The page's set-up itself is what the tests above stand up.)"""
    import re

    from mlflow.utils.uri import extract_db_type_from_uri

    blocks = re.findall(r"^```bash\n(.*?)^```", DEPLOYMENT_DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert blocks
    for block in blocks:
        checked = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert checked.returncode == 0, f"{block}\n{checked.stderr}"
    lines = [" ".join(line.split()) for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    commands = [line for line in lines if line.startswith("mlflow server")]
    assert len(commands) == 2
    usage = subprocess.run([sys.executable, "-m", "mlflow", "server", "--help"], capture_output=True,
                           text=True, check=True).stdout
    for command in commands:
        for option in re.findall(r"(--[a-z-]+)", command):
            assert option in usage, f"mlflow server has no {option}"
        store = re.search(r"--backend-store-uri (\S+)", command)
        assert store and extract_db_type_from_uri(store.group(1)) == "postgresql"
