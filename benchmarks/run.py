"""Run every benchmark case, side by side with its anchor, and write docs/performance.md.

    .venv/bin/python benchmarks/run.py            # everything (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # smaller counts, no Ultralytics

Each case runs in its own process (benchmarks/cases.py). Nothing here is a pass/fail test: the
targets are stated next to the measurements, with by how much a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "performance.md"
TRACKERS = ("neptune", "comet", "tensorboard", "mlflow")


def run_case(case: str, n: int, workdir: Path, **extra: str) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "cases.py"), case, "--n", str(n), "--workdir", str(workdir)]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", value]
    print(f"  {case} {' '.join(f'{k}={v}' for k, v in extra.items() if k != 'tracking_uri')} n={n}",
          file=sys.stderr, flush=True)
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"case": case, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def us(result: dict[str, Any], per: str = "n") -> str:
    if "error" in result:
        return f"error: {result['error'][:60]}"
    count = result.get(per, result["n"])
    return f"{result['seconds'] / count * 1e6:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-ultralytics", action="store_true")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    workdir = Path(tempfile.mkdtemp(prefix="loggerhub-bench-"))
    from loggerhub_mlflow.testing import MlflowServer

    sections: list[str] = []
    with MlflowServer(workdir / "mlflow-server") as server:
        uri = server.uri
        sections.append(call_cost(workdir, uri, scale))
        sections.append(per_scalar(workdir, uri, scale))
        rates: dict[tuple[str, int], float] = {}
        sections.append(throughput(workdir, uri, scale, rates))
        sections.append(drain(workdir, uri, scale, rates))
        sections.append(outage(workdir, scale))
        sections.append(queue_memory(workdir, scale))
        sections.append(finish_bound(workdir))
        sections.append(import_time(workdir))
        import store  # benchmarks/store.py: 10,000 runs in one store

        sections.append(store.run(workdir / "store", 10_000))
        import importers  # benchmarks/importers.py: hostile input to the importers

        sections.append(importers.section(workdir))
        if not (args.quick or args.no_ultralytics):
            sections.append(ultralytics(workdir, uri))
    header = (
        "# Performance\n\n"
        "Measured by `python benchmarks/run.py` in one run, on this project's CI machine "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}), "
        f"{time.strftime('%Y-%m-%d')}. Each case runs in its own process; the anchor it is compared "
        "with is measured in the same run. Numbers vary by a few percent between runs.\n"
    )
    text = header + _kept(args.output, *ANALYSIS) + "\n".join(sections) + _kept_report_section(args.output)
    args.output.write_text(text, encoding="utf-8")
    print(text)


#: The hand-written reading of the figures against the targets, kept across rewrites (it is
#: updated by hand from them).
ANALYSIS = ("<!-- analysis: start -->", "<!-- analysis: end -->")


def _kept(doc: Path, start_marker: str, end_marker: str) -> str:
    previous = doc.read_text(encoding="utf-8") if doc.exists() else ""
    start, end = previous.find(start_marker), previous.find(end_marker)
    return "\n" + previous[start:end + len(end_marker)] + "\n" if 0 <= start < end else ""


def _kept_report_section(doc: Path) -> str:
    """The report benchmark's section, as benchmarks/report.py last wrote it: it takes minutes
    (100 runs x 100,000 points), so it runs on its own and this rewrite keeps its figures."""
    from report import END, START  # benchmarks/report.py

    previous = doc.read_text(encoding="utf-8") if doc.exists() else ""
    start, end = previous.find(START), previous.find(END)
    return "\n" + previous[start:end + len(END)] + "\n" if 0 <= start < end else ""


#: The hot path, one row per configuration: (label, case, calls, scalars per call). Each runs in
#: its own process, which also times the floors, so every row has its own anchor. A new row is
#: one entry here plus its ``case_<name>`` in cases.py, returning what ``_loggerhub`` returns
#: (e.g. telemetry on and off).
CALL_ROWS: list[tuple[str, str, int, int]] = [
    ("local only, 1 scalar", "loggerhub_local", 200_000, 1),
    ("local only, 1 scalar, telemetry off", "loggerhub_local_no_telemetry", 200_000, 1),
    ("local only, 1 scalar, system metrics every 0.2 s", "loggerhub_local_sampling", 200_000, 1),
    ("local + 4 trackers, 1 scalar", "loggerhub_all", 200_000, 1),
    ("local only, 10 scalars", "loggerhub_local_10", 100_000, 10),
    ("local + 4 trackers, 10 scalars", "loggerhub_all_10", 100_000, 10),
]


def call_cost(workdir: Path, uri: str, scale: int) -> str:
    lines = [
        "\n## The hot path against the interpreter's floor\n",
        "A `log_metrics` call in a tight loop (µs per call; per scalar for ten scalars), beside the "
        "floors timed the same way in the same process just before: a `deque.append` and an empty "
        "method taking the same arguments. *Wall* is the loop's wall time over all calls, the "
        "journal writer thread's share of the GIL included; *CPU* is the main thread's CPU time, "
        "which leaves out the time other processes (the delivery processes, other work on the "
        "machine) held the core. Targets: 1 scalar ≤ 1 µs, 10 scalars ≤ 0.2 µs per scalar, with "
        "local + 4 trackers.\n",
        "| configuration | wall µs | CPU µs | `deque.append` µs | empty method µs | target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, case, calls, keys in CALL_ROWS:
        result = run_case(case, calls // scale, workdir, tracking_uri=uri)
        if "error" in result:
            lines.append(f"| {label} | error: {result['error'][:80]} | | | | |")
            continue
        per = result["n"] * keys
        target = 1.0 if keys == 1 else 0.2
        lines.append(f"| {label} | {result['seconds'] / per * 1e6:.2f} | {result['cpu_seconds'] / per * 1e6:.2f} "
                     f"| {result['deque_us']:.2f} | {result['empty_us']:.2f} | ≤ {target} |")
    return "\n".join(lines) + "\n"


def per_scalar(workdir: Path, uri: str, scale: int) -> str:
    rows = [
        ("`deque.append` (the floor)", run_case("deque", 1_000_000 // scale, workdir), "n"),
        ("TensorBoard event writer, `add_event`", run_case("tensorboard_native", 20_000 // scale, workdir), "n"),
        ("Neptune offline, `append`", run_case("neptune_native", 20_000 // scale, workdir), "n"),
        ("Comet offline, `log_metric`", run_case("comet_native", 20_000 // scale, workdir), "n"),
        ("MLflow `log_metric`, synchronous, local server",
         run_case("mlflow_sync", 200 // scale, workdir, tracking_uri=uri), "n"),
        ("MLflow `log_metric`, asynchronous, local server",
         run_case("mlflow_async", 5_000 // scale, workdir, tracking_uri=uri), "n"),
        ("loggerhub, local only, 1 scalar per call", run_case("loggerhub_local", 200_000 // scale, workdir), "scalars"),
        ("loggerhub, local only, 10 scalars per call",
         run_case("loggerhub_local_10", 100_000 // scale, workdir), "scalars"),
        ("loggerhub, local + 4 trackers, 1 scalar per call",
         run_case("loggerhub_all", 200_000 // scale, workdir, tracking_uri=uri), "scalars"),
        ("loggerhub, local + 4 trackers, 10 scalars per call",
         run_case("loggerhub_all_10", 100_000 // scale, workdir, tracking_uri=uri), "scalars"),
    ]
    lines = [
        "\n## Cost per scalar in the training loop\n",
        "Wall time of the logging call inside a tight loop, divided by the scalars it logged. "
        "Target: ≤ 2 µs per scalar with local plus four trackers attached.\n",
        "| what | µs per scalar | notes |", "|---|---:|---|",
    ]
    for label, result, per in rows:
        notes = ""
        if "drain_seconds" in result:
            notes = f"drained in {result['drain_seconds']:.1f} s after the loop"
            if any(result.get("undelivered", {}).values()):
                notes += f"; undelivered {result['undelivered']}"
        lines.append(f"| {label} | {us(result, per)} | {notes} |")
    return "\n".join(lines) + "\n"


def throughput(workdir: Path, uri: str, scale: int, rates: dict[tuple[str, int], float]) -> str:
    """Delivery against each tracker's own bulk API; the native rates go into ``rates``, keyed
    by (tracker, keys per step), for the drain section's ceilings."""
    steps = 20_000 // scale
    journal = run_case("journal", steps, workdir)
    lines = [
        "\n## Delivery throughput\n",
        f"A journal of {2 * steps:,} points (two keys over {steps:,} steps), delivered from offset -1 by "
        "the real consumer and plugin, against the same points written with the tracker's own bulk API "
        "(TensorBoard: one event per step; Neptune: `extend`; Comet: `log_metrics` per step; MLflow: "
        "`log_batch` of 1,000). Both include creating the tracker run and closing it; neither includes "
        "importing the SDK.\n",
        "| tracker | loggerhub points/s | native bulk points/s | ratio |", "|---|---:|---:|---:|",
    ]
    for tracker in TRACKERS:
        ours = run_case("deliver", steps, workdir, tracker=tracker, run_dir=journal.get("run_dir", ""),
                        tracking_uri=uri)
        native = run_case("bulk_native", steps, workdir, tracker=tracker, tracking_uri=uri)
        if "error" in ours or "error" in native:
            lines.append(f"| {tracker} | {ours.get('error', '')} | {native.get('error', '')} | |")
            continue
        a, b = ours["points"] / ours["seconds"], native["points"] / native["seconds"]
        rates[(tracker, 2)] = b
        lines.append(f"| {tracker} | {a:,.0f} | {b:,.0f} | {a / b:.2f} |")
    return "\n".join(lines) + "\n"


DRAIN_KEYS = 200
DRAIN_STEPS = 12_000


def drain(workdir: Path, uri: str, scale: int, rates: dict[tuple[str, int], float]) -> str:
    """The realistic run's drain, against each tracker's ceiling: its points over the rate of the
    tracker's own bulk API on the same shape (200 keys per step), measured here."""
    steps = DRAIN_STEPS // scale
    rate_steps = max(steps // 10, 100)  # enough for a steady rate, in a tenth of the time
    for tracker in TRACKERS:
        native = run_case("bulk_native", rate_steps, workdir, tracker=tracker, tracking_uri=uri,
                          keys=str(DRAIN_KEYS))
        if "error" not in native:
            rates[(tracker, DRAIN_KEYS)] = native["points"] / native["seconds"]
    result = run_case("drain", steps, workdir, tracking_uri=uri, keys=str(DRAIN_KEYS))
    if "error" in result:
        return f"\n## Drain of a realistic run\n\nerror: {result['error']}\n"
    points = result["points"]
    lines = [
        "\n## Drain of a realistic run\n",
        f"{DRAIN_KEYS} scalars per step for {steps:,} steps ({points:,} points: "
        f"{steps / 20 / 60:.1f} minutes at 20 steps/s), logged to local + 4 trackers as fast as the "
        f"loop goes ({result['seconds']:.1f} s), so that delivery is all left for `finish()`, which "
        f"waited **{result['finish_seconds']:.1f} s**. The four delivery processes share the machine's "
        f"cores. *Ceiling* is the time the tracker's own bulk API (as in the table above) takes for "
        f"these points alone, at its rate measured here on the same shape ({DRAIN_KEYS} keys per step, "
        f"{rate_steps:,} steps).\n",
        "| tracker | delivered, s after the loop | ceiling s | native bulk points/s | ratio | undelivered |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tracker in TRACKERS:
        took = result["tracker_seconds"].get(tracker)
        rate = rates.get((tracker, DRAIN_KEYS))
        ceiling = points / rate if rate else None
        cells = [f"{took:.1f}" if took is not None else "?", f"{ceiling:.1f}" if ceiling else "?",
                 f"{rate:,.0f}" if rate else "?", f"{took / ceiling:.2f}" if took and ceiling else "?"]
        lines.append(f"| {tracker} | {' | '.join(cells)} | {result['undelivered'].get(tracker)} |")
    return "\n".join(lines) + "\n"


def outage(workdir: Path, scale: int) -> str:
    result = run_case("outage", 600_000 // scale, workdir)
    if "error" in result:
        return f"\n## Memory through a tracker outage\n\nerror: {result['error']}\n"
    trainer, delivery = result["trainer_rss_mb"], result["delivery_rss_mb"]
    return "\n".join([
        "\n## Memory through a tracker outage\n",
        f"The MLflow server is down (connection refused) while the loop logs {result['scalars']:,} "
        f"scalars, what 10 minutes of training at 1,000 scalars/s log, compressed into "
        f"{result['seconds']:.1f} s. The backlog is the journal on disk ({result['journal_mb']:.0f} MB), "
        f"not memory. Then the server starts and the same delivery process catches up from its offset "
        f"in {result['catch_up_seconds']:.0f} s ({result['undelivered']} records left undelivered). "
        "RSS is sampled every 250 ms, from the moment the delivery process has imported MLflow and met "
        "the outage.\n",
        "| process | RSS at outage start (MB) | peak in outage (MB) | at outage end (MB) | peak in catch-up (MB) |",
        "|---|---:|---:|---:|---:|",
        f"| trainer | {trainer[0]:.0f} | {trainer[1]:.0f} | {trainer[2]:.0f} | {trainer[3]:.0f} |",
        f"| MLflow delivery process | {delivery[0]:.0f} | {delivery[1]:.0f} | {delivery[2]:.0f} | "
        f"{delivery[3]:.0f} |",
    ]) + "\n"


def queue_memory(workdir: Path, scale: int) -> str:
    n = 1_000_000 // scale
    rows = [("plain `deque`, never drained (anchor: an unbounded queue)", run_case("queue_memory_anchor", n, workdir)),
            ("loggerhub, local only", run_case("queue_memory", n, workdir))]
    lines = [
        "\n## Memory of the journal queue\n",
        f"{n:,} one-scalar `log_metrics` calls as fast as the loop runs, then `finish()`; the trainer's "
        "RSS sampled every 20 ms. The writer drains in chunks of `WRITE_CHUNK` records and `log_*` waits "
        "for it when more than `QUEUE_LIMIT` records are queued (docs/journal.md), so the queue, not the "
        "rate, bounds memory. Target: flat, whatever the rate.\n",
        "| what | RSS before (MB) | peak in loop (MB) | at loop end (MB) | peak in finish (MB) | loop s | finish s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        if "error" in r:
            lines.append(f"| {label} | error: {r['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {label} | {r['rss_start_mb']:.0f} | {r['rss_loop_peak_mb']:.0f} | {r['rss_loop_end_mb']:.0f} "
                     f"| {r['rss_finish_peak_mb']:.0f} | {r['seconds']:.2f} | {r['finish_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def finish_bound(workdir: Path) -> str:
    result = run_case("finish_hung", 3, workdir)
    if "error" in result:
        return f"\n## finish() with a hung tracker\n\nerror: {result['error']}\n"
    return (
        "\n## finish() with a hung tracker\n\n"
        "MLflow's tracking URI is a socket that accepts connections and never answers; `drain_timeout=3`. "
        f"`finish()` returned in **{result['seconds']:.1f} s**; the anchor is the documented bound, "
        f"`drain_timeout` + the shared 5 s grace = {result['drain_timeout'] + 5:.0f} s (late delivery processes "
        "get SIGTERM together at the deadline and are killed after the grace).\n"
    )


def import_time(workdir: Path) -> str:
    result = run_case("import", 7, workdir)
    if "error" in result:
        return f"\n## Import time\n\nerror: {result['error']}\n"
    return (
        "\n## Import time\n\n"
        f"`import loggerhub`: **{result['seconds'] * 1000:.1f} ms** (best of 7 fresh interpreters; "
        "target ≤ 100 ms). It imports no tracker SDK, numpy or pydantic; "
        f"`init` + `finish` of a local run, imports included: {result['init_seconds'] * 1000:.0f} ms.\n"
    )


def ultralytics(workdir: Path, uri: str) -> str:
    rows = []
    for case, label in (("yolo_none", "no logging"),
                        ("yolo_builtin", "Ultralytics' own Comet, MLflow and TensorBoard callbacks"),
                        ("yolo_loggerhub", "loggerhub: local + Neptune, Comet, TensorBoard, MLflow")):
        rows.append((label, run_case(case, 4, workdir, tracking_uri=uri)))
    base = rows[0][1]
    lines = [
        "\n## Ultralytics training overhead\n",
        "YOLO11n from `yolo11n.yaml`, a synthetic dataset of 16 training and 8 validation images, "
        "6 epochs at imgsz 64 on the CPU; median of 4 trainings each after one warm-up. *Whole training* "
        "is the wall time of `model.train()` (for loggerhub, `attach` and the final drain are outside "
        "it); *steady epoch* is the median time of epochs 2-6, after the trackers' clients have started. "
        "The MLflow server runs on the same 2 cores. Target: loggerhub ≤ 1 % over no logging.\n",
        "| configuration | whole training (s) | overhead | steady epoch (s) | overhead |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, result in rows:
        if "error" in result or "error" in base:
            lines.append(f"| {label} | error: {result.get('error', base.get('error', ''))[:80]} | | | |")
            continue
        whole = (result["seconds"] / base["seconds"] - 1) * 100
        epoch = (result["epoch_seconds"] / base["epoch_seconds"] - 1) * 100
        lines.append(f"| {label} | {result['seconds']:.2f} | {whole:+.1f} % | "
                     f"{result['epoch_seconds']:.3f} | {epoch:+.1f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
