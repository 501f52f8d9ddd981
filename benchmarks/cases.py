"""One benchmark case per process, so that no SDK's import or patching affects another case.

    python benchmarks/cases.py CASE --n N --workdir DIR [--tracking-uri URI]

prints one JSON object: {"case": ..., "n": ..., "seconds": ..., ...}. Run them all through
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TRACKERS = ("neptune", "comet", "tensorboard", "mlflow")


def tracker_options(workdir: Path, tracking_uri: str) -> dict[str, dict[str, Any]]:
    return {
        "neptune": {"mode": "offline", "data_dir": str(workdir / "neptune")},
        "comet": {"offline_dir": str(workdir / "comet")},
        "tensorboard": {"logdir": str(workdir / "tensorboard")},
        "mlflow": {"tracking_uri": tracking_uri},
    }


def timed_loop(n: int, body) -> float:
    started = time.perf_counter()
    for i in range(n):
        body(i)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- per scalar


def case_deque(args: argparse.Namespace) -> dict[str, Any]:
    queue: collections.deque[Any] = collections.deque()
    append = queue.append
    return {"seconds": timed_loop(args.n, lambda i: append(0.5))}


def case_tensorboard_native(args: argparse.Namespace) -> dict[str, Any]:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(args.workdir / "tb-native"))

    def body(i: int) -> None:
        summary = Summary(value=[Summary.Value(tag="train/loss", simple_value=0.5)])
        writer.add_event(Event(wall_time=time.time(), step=i, summary=summary))

    seconds = timed_loop(args.n, body)
    writer.close()
    return {"seconds": seconds}


def case_neptune_native(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["NEPTUNE_DATA_DIRECTORY"] = str(args.workdir / "neptune-native")
    import neptune

    run = neptune.init_run(mode="offline", capture_stdout=False, capture_stderr=False,
                           capture_hardware_metrics=False, capture_traceback=False, source_files=[])
    series = run["train/loss"]
    seconds = timed_loop(args.n, lambda i: series.append(0.5, step=i))
    run.stop()
    return {"seconds": seconds}


def case_comet_native(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["COMET_DISABLE_AUTO_LOGGING"] = "1"
    import comet_ml

    experiment = comet_ml.OfflineExperiment(
        offline_directory=str(args.workdir / "comet-native"), project_name="bench",
        auto_output_logging=False, auto_metric_logging=False, auto_param_logging=False,
        log_env_details=False, log_git_metadata=False, log_git_patch=False, log_env_gpu=False,
        log_env_host=False, log_env_cpu=False, log_code=False, display_summary_level=0)
    seconds = timed_loop(args.n, lambda i: experiment.log_metric("train/loss", 0.5, step=i))
    experiment.end()
    return {"seconds": seconds}


def _mlflow(args: argparse.Namespace) -> Any:
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("bench-native")
    return mlflow


def case_mlflow_sync(args: argparse.Namespace) -> dict[str, Any]:
    mlflow = _mlflow(args)
    with mlflow.start_run():
        seconds = timed_loop(args.n, lambda i: mlflow.log_metric("train/loss", 0.5, step=i))
    return {"seconds": seconds}


def case_mlflow_async(args: argparse.Namespace) -> dict[str, Any]:
    mlflow = _mlflow(args)
    with mlflow.start_run():
        seconds = timed_loop(args.n, lambda i: mlflow.log_metric("train/loss", 0.5, step=i, synchronous=False))
        mlflow.flush_async_logging()
    return {"seconds": seconds}


class _Empty:
    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        pass


def _floors(n: int, metrics: dict[str, float]) -> dict[str, float]:
    """The interpreter's floors, timed like the call in the same process: a ``deque.append`` and
    an empty method taking the same arguments as ``log_metrics`` (µs per call, best of 3)."""
    queue: collections.deque[Any] = collections.deque()
    append = queue.append
    empty = _Empty().log_metrics
    floors = {"deque_us": float("inf"), "empty_us": float("inf")}
    for _ in range(3):
        queue.clear()
        floors["deque_us"] = min(floors["deque_us"], timed_loop(n, lambda i: append(0.5)) / n * 1e6)
        floors["empty_us"] = min(floors["empty_us"], timed_loop(n, lambda i: empty(metrics, step=i)) / n * 1e6)
    return floors


def _loggerhub(args: argparse.Namespace, backends: list[str], keys: int, **telemetry: Any) -> dict[str, Any]:
    """n calls of ``keys`` scalars, as fast as the loop goes, then finish(). Wall time of the loop
    and the main thread's CPU time in it (what the call costs when no other process takes the
    core), and the floors timed the same way in the same process just before. ``telemetry``:
    ``init``'s telemetry switches (all on, at their defaults, when not given)."""
    import loggerhub

    run = loggerhub.init(project="bench", dir=args.workdir / "runs", backends=backends,
                         options=tracker_options(args.workdir, args.tracking_uri), drain_timeout=900,
                         **telemetry)
    metrics = {f"train/loss{k}": 0.5 for k in range(keys)}
    time.sleep(0.5 if backends == ["local"] else 8)  # let delivery processes finish importing
    floors = _floors(min(args.n, 200_000), metrics)
    log = run.log_metrics
    cpu = time.thread_time()
    seconds = timed_loop(args.n, lambda i: log(metrics, step=i))
    cpu = time.thread_time() - cpu
    started = time.perf_counter()
    run.finish()
    undelivered = {name: r["undelivered"] for name, r in run.summary["trackers"].items()}
    return {"seconds": seconds, "cpu_seconds": cpu, "scalars": args.n * keys, **floors,
            "drain_seconds": time.perf_counter() - started, "undelivered": undelivered}


def case_loggerhub_local(args: argparse.Namespace) -> dict[str, Any]:
    return _loggerhub(args, ["local"], 1)


def case_loggerhub_local_no_telemetry(args: argparse.Namespace) -> dict[str, Any]:
    return _loggerhub(args, ["local"], 1, system_metrics=False, console=False, capture_context=False)


def case_loggerhub_local_sampling(args: argparse.Namespace) -> dict[str, Any]:
    # A sample every 0.2 s, 50 times the default rate, so that samples land inside the loop.
    return _loggerhub(args, ["local"], 1, system_metrics_interval=0.2)


def case_loggerhub_local_10(args: argparse.Namespace) -> dict[str, Any]:
    return _loggerhub(args, ["local"], 10)


def case_loggerhub_all(args: argparse.Namespace) -> dict[str, Any]:
    return _loggerhub(args, ["local", *TRACKERS], 1)


def case_loggerhub_all_10(args: argparse.Namespace) -> dict[str, Any]:
    return _loggerhub(args, ["local", *TRACKERS], 10)


# --------------------------------------------------------------------------- delivery throughput


def _series(keys: int) -> list[str]:
    """The metric keys of the delivery cases: ``train/loss`` and ``lr``, or ``keys`` of them."""
    return ["train/loss", "lr"] if keys == 2 else [f"train/m{k:03d}" for k in range(keys)]


def case_journal(args: argparse.Namespace) -> dict[str, Any]:
    """Write the journal the delivery cases read: n steps of ``--keys`` keys (default two)."""
    import loggerhub

    names = _series(args.keys)
    with loggerhub.init(project="bench", name="throughput", dir=args.workdir / "journal-runs") as run:
        for i in range(args.n):
            run.log_metrics({name: 1.0 / (i + k + 1) for k, name in enumerate(names)}, step=i)
    return {"seconds": 0.0, "run_dir": str(run.dir)}


def case_deliver(args: argparse.Namespace) -> dict[str, Any]:
    """Deliver the whole journal to one tracker, from offset -1, with the real consumer."""
    import shutil

    from loggerhub import codec
    from loggerhub import journal as j
    from loggerhub.delivery import Consumer
    from loggerhub.plugins import get_plugin_manager, resolve

    source = Path(args.run_dir)
    copy = args.workdir / f"deliver-{args.tracker}" / "bench" / source.name
    shutil.copytree(source, copy)
    points = sum(len(e.data["values"]) for e in j.JournalReader(copy).entries() if e.type == codec.METRICS)
    options = tracker_options(args.workdir, args.tracking_uri)[args.tracker]
    plugin = resolve([args.tracker])[0].load()
    # Import the SDK before the clock starts, as the native case does: this measures delivery.
    get_plugin_manager({args.tracker: plugin}).hook.loggerhub_client_version()
    consumer = Consumer(copy, args.tracker, options=options, plugin=plugin)
    started = time.perf_counter()
    status = consumer.run()
    return {"seconds": time.perf_counter() - started, "points": points, "finished": status.finished}


def case_bulk_native(args: argparse.Namespace) -> dict[str, Any]:
    """The same points through the tracker's own bulk API, as a hand-written integration would."""
    steps = list(range(args.n))
    names = _series(args.keys)
    columns = {name: [1.0 / (i + k + 1) for i in steps] for k, name in enumerate(names)}
    tracker = args.tracker
    if tracker == "tensorboard":
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        started = time.perf_counter()
        writer = EventFileWriter(str(args.workdir / "tb-bulk"))
        now = time.time()
        for i in steps:
            summary = Summary(value=[Summary.Value(tag=name, simple_value=columns[name][i]) for name in names])
            writer.add_event(Event(wall_time=now, step=i, summary=summary))
        writer.close()
    elif tracker == "neptune":
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(args.workdir / "neptune-bulk")
        import neptune

        started = time.perf_counter()
        run = neptune.init_run(mode="offline", capture_stdout=False, capture_stderr=False,
                               capture_hardware_metrics=False, capture_traceback=False, source_files=[])
        for name in names:
            run[name].extend(columns[name], steps=steps)
        run.stop()
    elif tracker == "comet":
        os.environ["COMET_DISABLE_AUTO_LOGGING"] = "1"
        import comet_ml

        started = time.perf_counter()
        experiment = comet_ml.OfflineExperiment(
            offline_directory=str(args.workdir / "comet-bulk"), project_name="bench",
            auto_output_logging=False, auto_metric_logging=False, auto_param_logging=False,
            log_env_details=False, log_git_metadata=False, log_git_patch=False, log_env_gpu=False,
            log_env_host=False, log_env_cpu=False, log_code=False, display_summary_level=0)
        for i in steps:
            experiment.log_metrics({name: columns[name][i] for name in names}, step=i)
        experiment.end()
    elif tracker == "mlflow":
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(args.tracking_uri)
        started = time.perf_counter()
        experiment = client.get_experiment_by_name("bench-bulk") or client.get_experiment(
            client.create_experiment("bench-bulk"))
        run_id = client.create_run(experiment.experiment_id).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(name, columns[name][i], now, i) for i in steps for name in names]
        for chunk in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[chunk:chunk + 1000])
        client.set_terminated(run_id)
    else:
        raise SystemExit(f"unknown tracker {tracker}")
    return {"seconds": time.perf_counter() - started, "points": len(names) * args.n}


# --------------------------------------------------------------------------- realistic drain


def case_drain(args: argparse.Namespace) -> dict[str, Any]:
    """A realistic run, compressed: ``--keys`` scalars per step (200) for n steps (12,000 = 10
    minutes at 20 steps/s), logged as fast as the loop goes to local and the four trackers. Then
    finish(), timing how long after the loop each tracker's delivery process ends."""
    import loggerhub

    run = loggerhub.init(project="bench", name="drain", dir=args.workdir / "drain-runs",
                         backends=["local", *TRACKERS], drain_timeout=3600,
                         options=tracker_options(args.workdir / "drain", args.tracking_uri))
    names = _series(args.keys)
    metrics = dict.fromkeys(names, 0.5)
    time.sleep(8)  # the delivery processes import their SDKs, as in a real run's first minute
    log = run.log_metrics
    started = time.perf_counter()
    for i in range(args.n):
        for k, name in enumerate(names):
            metrics[name] = 1.0 / (i + k + 1)
        log(metrics, step=i)
    loop_seconds = time.perf_counter() - started
    workers = {w.backend: w.process for w in run._workers}
    ended: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and len(ended) < len(workers):
            for name, process in workers.items():
                if name not in ended and process.poll() is not None:
                    ended[name] = time.perf_counter() - started
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    finish_started = time.perf_counter()
    run.finish()
    finish_seconds = time.perf_counter() - finish_started
    stop.set()
    watcher.join()
    for name in workers:  # ended between the watcher's last look and finish() returning
        ended.setdefault(name, time.perf_counter() - started)
    return {"seconds": loop_seconds, "finish_seconds": finish_seconds, "points": args.n * len(names),
            "tracker_seconds": ended,
            "undelivered": {name: r["undelivered"] for name, r in run.summary["trackers"].items()}}


# --------------------------------------------------------------------------- outage memory


def case_outage(args: argparse.Namespace) -> dict[str, Any]:
    """A long outage, compressed: the MLflow server is down while the loop logs what 10 minutes
    of training at 1,000 scalars/s log (600,000 scalars), then it comes up and delivery catches
    up. RSS of the trainer and of the MLflow delivery process is sampled throughout."""
    from loggerhub_mlflow.testing import MlflowServer

    import loggerhub
    from loggerhub.delivery import ConsumerStatus

    server = MlflowServer(args.workdir / "outage-server")  # its port is chosen, nothing listens yet
    run = loggerhub.init(project="bench", name="outage", dir=args.workdir / "outage-runs", backends=["mlflow"],
                         options={"mlflow": {"tracking_uri": server.uri}}, drain_timeout=900)
    status_file = run.paths.consumer_file("mlflow")
    while ConsumerStatus.load(status_file).errors == 0:  # the client has started and met the outage
        time.sleep(0.1)
    consumer = run._workers[0].process.pid
    samples: list[tuple[str, int, int]] = []
    phase = ["outage"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((phase[0], _rss_kb(os.getpid()), _rss_kb(consumer)))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    metrics = {f"m{k}": 0.5 for k in range(10)}
    started = time.perf_counter()
    steps = args.n // 10
    for i in range(steps):
        run.log_metrics(metrics, step=i)
        if i % 10_000 == 0:
            run.flush()  # keep the in-memory tail at the flush interval, as a real loop's pace would
    seconds = time.perf_counter() - started
    run.flush()
    journal_bytes = sum(p.stat().st_size for p in (run.dir / "journal").iterdir())
    phase[0] = "catch-up"
    with server:
        caught_up = time.perf_counter()
        run.finish()
        catch_up_seconds = time.perf_counter() - caught_up
    stop.set()
    sampler.join()

    def mb(kind: int, when: str) -> list[float]:
        values = [s[kind] / 1024 for s in samples if s[0] == when and s[kind]]
        return [values[0], max(values), values[-1]] if values else [0.0, 0.0, 0.0]

    return {"seconds": seconds, "scalars": steps * 10, "journal_mb": journal_bytes / 2**20,
            "catch_up_seconds": catch_up_seconds,
            "trainer_rss_mb": mb(1, "outage") + mb(1, "catch-up")[1:2],
            "delivery_rss_mb": mb(2, "outage") + mb(2, "catch-up")[1:2],
            "undelivered": run.summary["trackers"]["mlflow"]["undelivered"]}


class _RssSampler:
    """Samples this process's RSS every 20 ms, labelled with the phase the case is in."""

    def __init__(self) -> None:
        self.phase = "start"
        self.samples: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((self.phase, _rss_kb(os.getpid())))
            self._stop.wait(0.02)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.phase, _rss_kb(os.getpid())))

        def peak(phase: str) -> float:
            return max((kb for p, kb in self.samples if p == phase), default=0) / 1024

        base = next(kb for p, kb in self.samples) / 1024
        return {"rss_start_mb": base, "rss_loop_peak_mb": peak("loop"),
                "rss_loop_end_mb": next((kb for p, kb in reversed(self.samples) if p == "loop"), 0) / 1024,
                "rss_finish_peak_mb": peak("finish")}


def case_queue_memory(args: argparse.Namespace) -> dict[str, Any]:
    """n one-scalar log_metrics calls as fast as the loop goes, local only, then finish():
    the trainer's RSS during the loop and during finish (the writer's queue and its drain)."""
    import loggerhub

    run = loggerhub.init(project="bench", name="queue", dir=args.workdir / "queue-runs")
    log = run.log_metrics
    metrics = {"loss": 0.5}
    sampler = _RssSampler()
    time.sleep(0.1)
    sampler.phase = "loop"
    seconds = timed_loop(args.n, lambda i: log(metrics, step=i))
    sampler.phase = "finish"
    started = time.perf_counter()
    run.finish()
    finish_seconds = time.perf_counter() - started
    return {"seconds": seconds, "finish_seconds": finish_seconds, **sampler.stop()}


def case_queue_memory_anchor(args: argparse.Namespace) -> dict[str, Any]:
    """The anchor: the same n records, as the writer's queue holds them, appended to a deque
    that nothing drains: what an unbounded queue costs when the writer falls behind."""
    queue: collections.deque[Any] = collections.deque()
    append = queue.append
    sampler = _RssSampler()
    time.sleep(0.1)
    sampler.phase = "loop"
    seconds = timed_loop(args.n, lambda i: append(("metrics", time.time(), (i, None, {"loss": 0.5}))))
    sampler.phase = "finish"
    queue.clear()
    return {"seconds": seconds, "finish_seconds": 0.0, **sampler.stop()}


def case_finish_hung(args: argparse.Namespace) -> dict[str, Any]:
    """finish() with drain_timeout=n seconds while the tracker hangs: MLflow's tracking URI is a
    socket that accepts connections and never answers, so the client blocks inside a call."""
    import socket

    import loggerhub

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
    run = loggerhub.init(project="bench", name="hung", dir=args.workdir / "hung-runs", backends=["mlflow"],
                         options={"mlflow": {"tracking_uri": uri}}, drain_timeout=args.n)
    for i in range(10):
        run.log_metrics({"loss": 0.5}, step=i)
    started = time.perf_counter()
    run.finish()
    seconds = time.perf_counter() - started
    listener.close()
    return {"seconds": seconds, "drain_timeout": args.n}


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- Ultralytics


EPOCHS = 6


def _yolo_train(args: argparse.Namespace, configure) -> dict[str, Any]:
    """Median wall time of ``args.n`` trainings of YOLO11n on a synthetic dataset, offline."""
    import statistics

    from loggerhub.testing.ultralytics import detect_dataset, offline_environment

    os.environ.update(offline_environment(args.workdir / "yolo-env"))
    data = detect_dataset(args.workdir / "yolo-data", train_images=16, val_images=8)
    from ultralytics import YOLO

    times, epoch_times = [], []
    for index in range(-1, args.n):  # -1: a warm-up training (caches, lazy imports), not counted
        model = YOLO("yolo11n.yaml")
        finish = configure(model, index)
        epoch_ends: list[float] = []
        model.add_callback("on_fit_epoch_end", lambda trainer, ends=epoch_ends: ends.append(time.perf_counter()))
        started = time.perf_counter()
        model.train(data=str(data), epochs=EPOCHS, imgsz=64, batch=8, workers=0, device="cpu", amp=False,
                    plots=True, project=str(args.workdir / "yolo-runs"), name=f"{args.case}-{index}",
                    exist_ok=True, verbose=False, seed=0, deterministic=True)
        if index >= 0:
            times.append(time.perf_counter() - started)
            # Epochs after the first: the steady state, once delivery processes have started.
            epoch_times += [b - a for a, b in zip(epoch_ends[:EPOCHS - 1], epoch_ends[1:EPOCHS], strict=True)]
        finish()
    return {"seconds": statistics.median(times), "all": times, "epoch_seconds": statistics.median(epoch_times)}


def case_yolo_none(args: argparse.Namespace) -> dict[str, Any]:
    from ultralytics.utils import SETTINGS

    SETTINGS.update({key: False for key in ("comet", "mlflow", "tensorboard", "wandb", "clearml",
                                            "dvc", "hub", "neptune", "raytune") if key in SETTINGS})
    return _yolo_train(args, lambda model, index: (lambda: None))


def case_yolo_builtin(args: argparse.Namespace) -> dict[str, Any]:
    """Ultralytics' own Comet (offline), MLflow (the local server) and TensorBoard callbacks."""
    os.environ.update({"COMET_MODE": "offline", "COMET_OFFLINE_DIRECTORY": str(args.workdir / "comet-builtin"),
                       "MLFLOW_TRACKING_URI": args.tracking_uri, "MLFLOW_EXPERIMENT_NAME": "yolo-builtin"})
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"comet": True, "mlflow": True, "tensorboard": True})
    return _yolo_train(args, lambda model, index: (lambda: None))


def case_yolo_loggerhub(args: argparse.Namespace) -> dict[str, Any]:
    from loggerhub.integrations.ultralytics import attach

    def configure(model: Any, index: int):
        run = attach(model, backends=["local", *TRACKERS], project="bench-yolo", name=f"yolo{index}",
                     dir=args.workdir / "yolo-lh-runs", options=tracker_options(args.workdir, args.tracking_uri))
        return lambda: run.finish()

    return _yolo_train(args, configure)


# --------------------------------------------------------------------------- import time


def case_import(args: argparse.Namespace) -> dict[str, Any]:
    def best_of(code: str) -> float:
        runs = []
        for _ in range(args.n):
            out = subprocess.run([sys.executable, "-c",
                                  f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"],
                                 capture_output=True, text=True, check=True)
            runs.append(float(out.stdout))
        return min(runs)

    return {"seconds": best_of("import loggerhub"), "init_seconds": best_of(
        "import loggerhub, tempfile; loggerhub.init(project='x', dir=tempfile.mkdtemp()).finish()")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tracking-uri", default="")
    parser.add_argument("--tracker", default="")
    parser.add_argument("--run-dir", default="")
    parser.add_argument("--keys", type=int, default=2)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    result = globals()[f"case_{args.case}"](args)
    print(json.dumps({"case": args.case, "n": args.n, **result}))


if __name__ == "__main__":
    main()
