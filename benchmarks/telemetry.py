"""What telemetry (docs/telemetry.md) costs the training loop, side by side with the floor.

    .venv/bin/python benchmarks/telemetry.py [--n 1000000] [--repeat 3]

Each case runs in its own process:

* ``floor``: ``deque.append`` of one float, the least a logging call can cost;
* ``off`` / ``on``: ``run.log_metrics({"train/loss": x}, step=i)`` with all telemetry switched off,
  and with all of it on (context, console tee, a system sample every 0.5 s: twenty times the
  default rate, so that samples do land during the loop);
* ``sampler``: seconds per system sample (psutil, and NVML where present), taken 50 times;
* ``init``: ``loggerhub.init(...).finish()`` with the context captured and without (the context
  is the one part that runs in the caller's thread, once).

The per-call figures of ``off`` and ``on`` are the median over every block of 50,000 calls of
``--repeat`` runs (a shared machine's pauses fall on a few blocks), the floor's the best run;
nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BLOCK = 50_000
SWITCHES = ("LOGGERHUB_SYSTEM_METRICS", "LOGGERHUB_CONSOLE", "LOGGERHUB_CAPTURE_CONTEXT")


def case(name: str, n: int, workdir: Path) -> dict[str, Any]:
    if name == "floor":
        queue: collections.deque[Any] = collections.deque()
        append = queue.append
        started = time.perf_counter()
        for _ in range(n):
            append(0.5)
        return {"seconds": time.perf_counter() - started}
    if name == "sampler":
        from loggerhub.telemetry.system import SystemSampler

        sampler = SystemSampler(workdir)
        times = []
        for _ in range(50):
            time.sleep(0.02)
            started = time.perf_counter()
            values = sampler.sample()
            times.append(time.perf_counter() - started)
        sampler.close()
        return {"seconds": sorted(times)[len(times) // 2], "series": len(values)}
    import loggerhub

    if name in ("init_on", "init_off"):
        on = name == "init_on"
        started = time.perf_counter()
        loggerhub.init(project="bench", dir=workdir / name, capture_context=on, console=False,
                       system_metrics=False).finish()
        return {"seconds": time.perf_counter() - started}
    on = name == "on"
    run = loggerhub.init(project="bench", dir=workdir / name, capture_context=on, console=on,
                         system_metrics=on, system_metrics_interval=0.5)
    log = run.log_metrics
    # Timed in blocks below the journal's queue limit, flushed in between (not timed): the calls'
    # own cost, not the writer's throughput (back-pressure), over seconds of samples and tee.
    blocks = []
    for block in range(0, n, BLOCK):
        started = time.perf_counter()
        for i in range(block, block + BLOCK):
            log({"train/loss": 0.5}, step=i)
        blocks.append((time.perf_counter() - started) / BLOCK)
        run.flush()
    samples = len(run._telemetry.sample_seconds) if run._telemetry is not None else 0
    run.finish()
    return {"seconds": sum(blocks) * BLOCK, "blocks": blocks, "samples_during_loop": samples}


def measure(name: str, n: int, workdir: Path) -> dict[str, Any]:
    env = {**os.environ, **dict.fromkeys(SWITCHES, "0")}
    out = subprocess.run([sys.executable, __file__, "--case", name, "--n", str(n), "--workdir", str(workdir)],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case")
    parser.add_argument("--n", type=int, default=1_000_000, help="calls per loop, a multiple of 50,000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.n, args.workdir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        best: dict[str, dict[str, Any]] = {}
        blocks: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.repeat):
            for name in ("floor", "off", "on", "init_off", "init_on"):
                result = measure(name, args.n, workdir)
                blocks.get(name, []).extend(result.get("blocks", ()))
                if name not in best or result["seconds"] < best[name]["seconds"]:
                    best[name] = result
        sampler = measure("sampler", 0, workdir)
    # The loops' median block (of BLOCK calls): a shared machine's pauses fall on a few blocks.
    per_call = {"floor": best["floor"]["seconds"] / args.n * 1e9,
                **{name: statistics.median(times) * 1e9 for name, times in blocks.items()}}
    print(f"one scalar per call, n={args.n:,} in blocks of {BLOCK:,}, {args.repeat} runs each:")
    print(f"  floor (deque.append, best)            {per_call['floor']:8.1f} ns/call")
    print(f"  log_metrics, telemetry off (median)   {per_call['off']:8.1f} ns/call")
    print(f"  log_metrics, telemetry on (median)    {per_call['on']:8.1f} ns/call  "
          f"({best['on']['samples_during_loop']} system samples during the best loop)")
    print(f"  on vs off                             {100 * (per_call['on'] / per_call['off'] - 1):+8.1f} %")
    print(f"system sample: {sampler['seconds'] * 1e3:.2f} ms each (median of 50), {sampler['series']} series, "
          "in the telemetry thread")
    print(f"init + finish: {best['init_off']['seconds'] * 1e3:.0f} ms without the context, "
          f"{best['init_on']['seconds'] * 1e3:.0f} ms with it (packages, git; best of {args.repeat})")


if __name__ == "__main__":
    main()
