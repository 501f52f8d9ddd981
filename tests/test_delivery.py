"""Delivery: every hook reached in journal order, retries, rejections, isolation, sync, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from recording_plugin import HOOK_NAMES, RecordingPlugin, read_calls

import loggerhub
from loggerhub import codec
from loggerhub import journal as j
from loggerhub.delivery import DISPATCH, Consumer, ConsumerStatus, supported_records, sync
from loggerhub_hookspecs import ImageRecord, MetricPoint, Phase, RunInfo, Status, Unsupported, hookimpl


def _full_scenario(run, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"w1")
    run.log_event("train_start", step=0)
    for epoch in range(2):
        run.log_event("epoch_start", epoch=epoch)
        for step in range(epoch * 3, epoch * 3 + 3):
            run.log_event("step_start", step=step)
            run.log_metrics({"loss": 1 / (step + 1)}, step=step, epoch=epoch)
            run.log_event("step_end", step=step)
        run.log_event("validation_end", epoch=epoch)
        run.log_checkpoint(weights, name=f"e{epoch}.pt")
        run.log_event("epoch_end", epoch=epoch)
    run.log_params({"late": 1})
    run.log_image("img", np.zeros((4, 4), np.uint8), boxes=[{"box": [0, 0, 1, 1]}])
    figure, _ = plt.subplots()
    run.log_figure("fig", figure)
    plt.close(figure)
    run.log_artifact(weights, kind="model")
    run.log_text("t", "x")
    run.log_table("tab", ["a"], [[1]])
    run.log_event("train_end")


def test_every_hook_is_delivered_in_journal_order(plugin_site: Path, runs_dir: Path, tmp_path: Path) -> None:
    calls_file = tmp_path / "calls.jsonl"
    # Telemetry on (the suite turns it off, see conftest.py): the context, a console line and the
    # system sample every run ends with are what reach the three telemetry hooks.
    with loggerhub.init(project="p", dir=runs_dir, backends=["recorder"], config={"lr": 0.1},
                        options={"recorder": {"record_to": str(calls_file)}},
                        capture_context=True, console=True, system_metrics=True) as run:
        _full_scenario(run, tmp_path)
        os.write(1, b"a line for the console hook\n")  # fd 1: pytest swaps sys.stdout, not the fd
    calls = read_calls(calls_file)
    hooks = [c["hook"] for c in calls]
    assert hooks.index("loggerhub_log_context") == 2  # right after run_start (and its params)
    console = [c["output"] for c in calls if c["hook"] == "loggerhub_log_console"]
    assert any("a line for the console hook" in output["lines"] for output in console)
    # client_version is called by `loggerhub backends`, run_resume by resume: tested elsewhere.
    assert set(hooks) == set(HOOK_NAMES) - {"loggerhub_client_version", "loggerhub_run_resume"}
    assert hooks[:2] == ["loggerhub_run_start", "loggerhub_log_params"]
    assert calls[1]["params"] == {"lr": 0.1}
    assert hooks[-1] == "loggerhub_run_end" and calls[-1]["status"] == "FINISHED"
    steps = [p["step"] for c in calls if c["hook"] == "loggerhub_log_metrics" for p in c["points"]]
    assert steps == list(range(6))
    checkpoints = [c for c in calls if c["hook"] == "loggerhub_checkpoint_saved"]
    assert [c["checkpoint"]["name"] for c in checkpoints] == ["e0.pt", "e1.pt"]
    assert checkpoints[0]["content"] == b"w1".hex()
    assert not [c for c in calls if c["hook"] == "loggerhub_log_artifact" and c["artifact"]["name"].startswith("e")]
    figure = next(c for c in calls if c["hook"] == "loggerhub_log_figure")
    assert figure["has_figure"] is True


def test_transient_errors_are_retried_and_counted(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        for step in range(5):
            run.log_metrics({"x": step}, step=step)
    plugin = RecordingPlugin()
    messages: list[str] = []
    consumer = Consumer(run.dir, "recorder", plugin=plugin, backoff=(0.01, 0.02), log=messages.append)
    # Fail the first two metric batches, after the plugin configured itself in run_start.
    original = plugin._configure

    def configure(info):
        original(info)
        plugin.fail = {"loggerhub_log_metrics": 2}

    plugin._configure = configure
    status = consumer.run()
    delivered = [p["value"] for h, c in plugin.calls if h == "loggerhub_log_metrics" for p in c["points"]]
    assert delivered == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert status.errors == 2 and status.finished and status.offset == j.JournalReader(run.dir).last_seq()
    assert len([m for m in messages if "delivery failed" in m]) == 1
    assert any("recovered after 2 failed attempts" in m for m in messages)


def test_rejected_records_go_to_the_dead_letter_file(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_text("t", "refused")
        run.log_metrics({"x": 1.0}, step=0)
    plugin = RecordingPlugin()
    original = plugin._configure
    plugin._configure = lambda info: (original(info), setattr(plugin, "fail", {"loggerhub_log_text": "reject"}))
    status = Consumer(run.dir, "recorder", plugin=plugin, log=lambda m: None).run()
    assert status.rejected == 1 and status.finished
    dead = [json.loads(line) for line in (run.dir / "consumers" / "recorder.rejected.jsonl").read_text().splitlines()]
    assert dead == [{"seq": 1, "reason": "loggerhub_log_text refused by the test"}]
    assert [h for h, _ in plugin.calls][-2:] == ["loggerhub_log_metrics", "loggerhub_run_end"]


def test_failing_tracker_does_not_hold_up_training_or_others(plugin_site: Path, runs_dir: Path,
                                                             tmp_path: Path, capfd) -> None:
    """One tracker's client raises on every call: training finishes at once, the other tracker
    gets everything, and there is one clear error naming the tracker and the fix, without the
    secret the client put in its message."""
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    site = plugin_site
    (site / "recording_plugin_b.py").write_text((site / "recording_plugin.py").read_text())
    dist = site / "loggerhub_recorder2-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: loggerhub-recorder2\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[loggerhub]\nbroken_tracker = recording_plugin_b:RecordingPlugin\n")
    os.environ["SERVICE_API_TOKEN"] = "sk-test-secret-123456"
    try:
        started = time.perf_counter()
        run = loggerhub.init(project="p", dir=runs_dir, backends=["recorder", "broken_tracker"], options={
            "recorder": {"record_to": str(good)},
            "broken_tracker": {"record_to": str(bad), "fail": {"loggerhub_log_metrics": "always"}},
        })
        for step in range(2000):
            run.log_metrics({"loss": 1.0, "acc": 0.5}, step=step)
        logging_time = time.perf_counter() - started
        run.finish(timeout=5)
    finally:
        del os.environ["SERVICE_API_TOKEN"]
    assert logging_time < 5  # nowhere near the tracker's endless retries
    good_points = sum(len(c["points"]) for c in read_calls(good) if c["hook"] == "loggerhub_log_metrics")
    assert good_points == 4000
    report = run.summary["trackers"]
    assert report["recorder"]["undelivered"] == 0
    assert report["broken_tracker"]["undelivered"] > 0 and report["broken_tracker"]["errors"] >= 1
    err = capfd.readouterr().err
    assert err.count("loggerhub[broken_tracker]: delivery failed") == 1
    assert f"loggerhub sync {run.dir} --to broken_tracker" in err
    assert "sk-test-secret-123456" not in err
    assert "sk-test-secret-123456" not in (run.dir / "consumers" / "broken_tracker.json").read_text()


def test_sync_after_sigkill_delivers_everything_once(plugin_site: Path, runs_dir: Path, tmp_path: Path) -> None:
    """Kill the training process mid-run; `loggerhub sync` ends the run KILLED and delivers every
    journaled point exactly once."""
    calls_file = tmp_path / "calls.jsonl"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, loggerhub
        run = loggerhub.init(project="p", name="victim", dir={str(runs_dir)!r}, backends=["recorder"],
                             options={{"recorder": {{"record_to": {str(calls_file)!r}}}}}, flush_interval=0.05)
        step = 0
        while True:
            run.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
            step += 1
            if step == 3000:
                run.flush()
                print("ready", flush=True)
            time.sleep(0.0001)
    """))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run_dir = next((runs_dir / "p").iterdir())
    journaled = [e.data["step"] for e in j.JournalReader(run_dir).entries() if e.type == codec.METRICS]
    assert len(journaled) >= 3000 and journaled == list(range(len(journaled)))
    # The orphaned delivery process notices the dead trainer and stops by itself.
    deadline = time.time() + 20
    while time.time() < deadline:
        if not (run_dir / "consumers" / "recorder.lock").exists() or _consumer_idle(run_dir):
            break
        time.sleep(0.2)
    result = subprocess.run([sys.executable, "-m", "loggerhub.cli", "sync", str(run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "recorder: delivered" in result.stdout
    calls = read_calls(calls_file)
    steps = [p["step"] for c in calls if c["hook"] == "loggerhub_log_metrics" for p in c["points"]]
    assert steps == journaled  # every journaled point, once, in order
    assert calls[-1] == {"hook": "loggerhub_run_end", "status": "KILLED"}
    assert [c["hook"] for c in calls].count("loggerhub_run_start") == 1
    # A second sync has nothing left to do and duplicates nothing.
    subprocess.run([sys.executable, "-m", "loggerhub.cli", "sync", str(run_dir)], check=True,
                   capture_output=True, timeout=120)
    assert read_calls(calls_file) == calls


def _consumer_idle(run_dir: Path) -> bool:
    import fcntl

    fd = os.open(run_dir / "consumers" / "recorder.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_sync_to_a_tracker_added_later(plugin_site: Path, runs_dir: Path, tmp_path: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_metrics({"x": 1.0}, step=0)
    calls_file = tmp_path / "late.jsonl"
    results = sync(run.dir, ["recorder"], options={"recorder": {"record_to": str(calls_file)}})
    assert results["recorder"].finished
    assert [c["hook"] for c in read_calls(calls_file)] == [
        "loggerhub_run_start", "loggerhub_log_metrics", "loggerhub_run_end"]
    assert ConsumerStatus.load(run.dir / "consumers" / "recorder.json").state == {
        "tracker_run": f"tracked-{run.id}"}


def test_resume_reattaches_to_the_same_tracker_run(plugin_site: Path, runs_dir: Path, tmp_path: Path) -> None:
    calls_file = tmp_path / "calls.jsonl"
    options = {"recorder": {"record_to": str(calls_file)}}
    with loggerhub.init(project="p", dir=runs_dir, backends=["recorder"], options=options) as run:
        run.log_metrics({"x": 1.0}, step=0)
    with loggerhub.init(project="p", dir=runs_dir, resume=run.dir, backends=["recorder"], options=options) as again:
        again.log_metrics({"x": 2.0})
    calls = read_calls(calls_file)
    assert [c["hook"] for c in calls] == [
        "loggerhub_run_start", "loggerhub_log_metrics", "loggerhub_run_end",
        "loggerhub_run_resume", "loggerhub_log_metrics", "loggerhub_run_end"]
    assert calls[3]["state"] == {"tracker_run": f"tracked-{run.id}"}
    assert calls[4]["points"][0]["step"] == 1


def test_logging_from_threads_is_safe(runs_dir: Path) -> None:
    import threading

    with loggerhub.init(project="p", dir=runs_dir) as run:
        def worker(index: int) -> None:
            for _ in range(2000):
                run.log_metrics({f"t{index}": 1.0})

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    records = [e for e in j.JournalReader(run.dir).entries() if e.type == codec.METRICS]
    assert len(records) == 8000
    assert sorted(r.data["step"] for r in records) == list(range(8000))  # auto steps never collide


def test_fork_neither_deadlocks_nor_duplicates(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir, flush_interval=5) as run:
        run.log_metrics({"before_fork": 1.0}, step=0)  # still queued in memory at the fork
        pid = os.fork()
        if pid == 0:  # the child: a DataLoader worker, say
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run.log_metrics({"from_child": 1.0}, step=1)
                run.flush(timeout=1)
                run.finish()
            os._exit(0)
        _, code = os.waitpid(pid, 0)
        assert code == 0
    metrics = [e.data["values"] for e in j.JournalReader(run.dir).entries() if e.type == codec.METRICS]
    assert metrics == [{"before_fork": 1.0}]
    assert [e.type for e in j.JournalReader(run.dir).entries()].count("run_end") == 1


def test_sigterm_ends_the_run_killed_and_drained(plugin_site: Path, runs_dir: Path, tmp_path: Path) -> None:
    calls_file = tmp_path / "calls.jsonl"
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import time, loggerhub
        with loggerhub.init(project="p", dir={str(runs_dir)!r}, backends=["recorder"],
                            options={{"recorder": {{"record_to": {str(calls_file)!r}}}}}) as run:
            for step in range(10**9):
                run.log_metrics({{"loss": 1.0}}, step=step)
                if step == 100:
                    print("ready", flush=True)
                time.sleep(0.001)
    """))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    run_dir = next((runs_dir / "p").iterdir())
    entries = list(j.JournalReader(run_dir).entries())
    assert entries[-1].type == "run_end" and entries[-1].data["status"] == "KILLED"
    journaled = sum(1 for e in entries if e.type == codec.METRICS)
    calls = read_calls(calls_file)
    assert sum(len(c["points"]) for c in calls if c["hook"] == "loggerhub_log_metrics") == journaled
    assert calls[-1] == {"hook": "loggerhub_run_end", "status": "KILLED"}


def test_every_journal_record_type_has_one_route() -> None:
    """The dispatch table covers every data and lifecycle record the codec knows."""
    run_records = {codec.RUN_START, codec.RUN_RESUME, codec.RUN_END, codec.REJECTED, codec.EVENT}
    # The codec's other text constants: where a context's diff goes, the mark of a cut console line.
    other = {codec.DIFF_FILE, codec.CUT_MARK}
    record_types = {value for name, value in vars(codec).items()
                    if name.isupper() and not name.startswith("_") and isinstance(value, str)} - other
    phases = {phase.value for phase in Phase}
    assert set(DISPATCH) == (record_types - run_records) | phases


class TextlessPlugin:
    """A real, minimal tracker: a list of what it stored. It has no hook for texts, tables or
    lifecycle events, and takes images only without boxes."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, Any]] = []

    @hookimpl
    def loggerhub_run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        self.stored.append(("start", run.run_id))

    @hookimpl
    def loggerhub_log_params(self, params: Mapping[str, Any]) -> None:
        self.stored.append(("params", dict(params)))

    @hookimpl
    def loggerhub_log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self.stored.extend(("metric", (p.key, p.step)) for p in points)

    @hookimpl
    def loggerhub_log_image(self, image: ImageRecord) -> None:
        if image.boxes:
            raise Unsupported("boxes")
        self.stored.append(("image", image.key))

    @hookimpl
    def loggerhub_run_end(self, run: RunInfo, status: Status) -> None:
        self.stored.append(("end", status.value))


def test_a_kind_without_a_hook_is_counted_as_skipped_not_delivered(runs_dir: Path) -> None:
    with loggerhub.init(project="p", dir=runs_dir, config={"lr": 0.1}) as run:
        run.log_event("epoch_start", epoch=0)
        run.log_metrics({"x": 1.0, "y": 2.0}, step=0)
        run.log_text("t", "dropped by this tracker")
        run.log_text("t", "and again")
        run.log_table("tab", ["a"], [[1]])
        run.log_image("plain", np.zeros((4, 4), np.uint8))
        run.log_image("boxed", np.zeros((4, 4), np.uint8), boxes=[{"box": [0, 0, 1, 1]}])
        run.log_event("epoch_end", epoch=0)
    plugin = TextlessPlugin()
    status = Consumer(run.dir, "textless", plugin=plugin, log=lambda m: None).run()
    assert status.skipped == {"epoch_start": 1, "text": 2, "table": 1, "image": 1, "epoch_end": 1}
    assert status.delivered == 2 + 1 + 2  # points, the plain image, run_start and run_end: no skip
    assert status.errors == 0 and status.rejected == 0 and status.finished
    assert plugin.stored == [("start", run.id), ("params", {"lr": 0.1}), ("metric", ("x", 0)),
                             ("metric", ("y", 0)), ("image", "plain"), ("end", "FINISHED")]
    stored = ConsumerStatus.load(run.dir / "consumers" / "textless.json")
    assert stored.skipped == status.skipped
    assert supported_records(plugin) == {"params", "metrics", "image"}


def test_skipped_kinds_show_in_the_run_summary(plugin_site: Path, runs_dir: Path, tmp_path: Path, capfd) -> None:
    options = {"recorder": {"record_to": str(tmp_path / "calls.jsonl"),
                            "fail": {"loggerhub_log_text": "unsupported", "loggerhub_log_table": "unsupported"}}}
    with loggerhub.init(project="p", dir=runs_dir, backends=["recorder"], options=options) as run:
        run.log_text("t", "a")
        run.log_text("t", "b")
        run.log_table("tab", ["a"], [[1]])
        run.log_metrics({"x": 1.0}, step=0)
    report = run.summary["trackers"]["recorder"]
    assert report["skipped"] == {"text": 2, "table": 1} and report["undelivered"] == 0
    assert "loggerhub: recorder: skipped records it has no place for: table 1, text 2" in capfd.readouterr().err


def test_a_very_long_outage_keeps_retrying(runs_dir: Path) -> None:
    """The 1,030th retry (over 8 hours at the 30 s backoff) must not overflow the backoff computation."""
    with loggerhub.init(project="p", dir=runs_dir) as run:
        run.log_metrics({"x": 1.0}, step=0)
    plugin = RecordingPlugin()
    original = plugin._configure
    plugin._configure = lambda info: (original(info), setattr(plugin, "fail", {"loggerhub_log_metrics": 1030}))
    status = Consumer(run.dir, "recorder", plugin=plugin, backoff=(1e-9, 1e-9), log=lambda m: None).run()
    assert status.errors == 1030 and status.finished
    assert [h for h, _ in plugin.calls] == ["loggerhub_run_start", "loggerhub_log_metrics", "loggerhub_run_end"]
