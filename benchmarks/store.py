"""A store of 10,000 runs: ``loggerhub runs`` and run lookup, with and without the run index.

    .venv/bin/python benchmarks/store.py               # prints the section, updates docs/performance.md
    .venv/bin/python benchmarks/store.py --runs 1000 --no-write    # a quick look

The store is made from one real run (``loggerhub.init``, a few metrics, finished), cloned 10,000
times over four projects with its ids and times rewritten: each clone is what a real run leaves
(journal segment, run.json, run.lock, media/, artifacts/, consumers/). Ten clones have no run_end
(their process died), to be ended later as ``loggerhub sync`` ends them.

Measured in one run, each command in its own process as a user runs it (interpreter start
included): the anchors (a plain ``os.scandir`` of the store and of each project, and the
interpreter starting and importing ``loggerhub.cli``), ``loggerhub runs`` cold (no index), warm
(index present), and after 10 runs changed; a lookup by id and by ``latest`` (``loggerhub show``);
and, for comparison, reading every journal, which is what ``loggerhub runs`` did before the index.
Target: ``loggerhub runs`` and a lookup under 1 s with 10,000 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "performance.md"
START, END = "<!-- store benchmark: start -->", "<!-- store benchmark: end -->"
PROJECTS = ("vision", "nlp", "speech", "rl")
CRASHED = 10
REPEATS = 3


def make_store(root: Path, runs: int) -> list[Path]:
    """``runs`` run directories cloned from one real run; returns them, oldest first."""
    import loggerhub

    template_root = root.parent / "template"
    with loggerhub.init(project="t", name="template", dir=template_root, backends=["local"],
                        config={"lr": 0.001, "batch_size": 64}) as run:
        for step in range(20):
            run.log_metrics({"train/loss": 1.0 / (step + 1), "train/acc": step / 20}, step=step)
    segment, = (run.dir / "journal").glob("*.jsonl")
    records = [json.loads(line) for line in segment.read_text(encoding="utf-8").splitlines()]
    summary = json.loads((run.dir / "run.json").read_text(encoding="utf-8"))
    middle = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records[1:-1])
    start, end = records[0], records[-1]
    assert start["type"] == "run_start" and end["type"] == "run_end"
    base = time.time() - runs
    dirs = []
    for index in range(runs):
        project = PROJECTS[index % len(PROJECTS)]
        run_id = f"exp{index:05d}-20261130-120000-{index:06x}"
        ts = base + index
        run_dir = root / project / run_id
        for folder in ("journal", "media", "artifacts", "consumers"):
            (run_dir / folder).mkdir(parents=True)
        lines = [json.dumps(dict(start, run_id=run_id, project=project, name=f"exp{index:05d}", ts=ts)) + "\n", middle]
        crashed = index >= runs - CRASHED
        if not crashed:
            lines.append(json.dumps(dict(end, ts=ts + 0.5)) + "\n")
        (run_dir / "journal" / segment.name).write_text("".join(lines), encoding="utf-8")
        fields = dict(summary, run_id=run_id, project=project, name=f"exp{index:05d}", started_at=ts)
        if crashed:
            fields.update(status="RUNNING", ended_at=None)
        else:
            fields.update(ended_at=ts + 0.5)
        (run_dir / "run.json").write_text(json.dumps(fields, indent=1, sort_keys=True), encoding="utf-8")
        (run_dir / "run.lock").write_text("1")
        dirs.append(run_dir)
    shutil.rmtree(template_root)
    return dirs


def end_crashed(dirs: list[Path]) -> None:
    """What ``loggerhub sync`` does to a run whose process died: a run_end KILLED and run.json."""
    from loggerhub.delivery import sync

    for run_dir in dirs:
        sync(run_dir, to=[])


def timed(command: list[str], repeats: int = 1) -> tuple[float, float]:
    """Median wall time and CPU time (user + system) of a command, in seconds; its output goes
    nowhere. The CPU time says what the command costs on a machine busy with other work."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        begin = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - begin)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


SCANDIR = """
import os, sys, time
root = sys.argv[1]
begin, cpu = time.perf_counter(), time.process_time()
count = 0
with os.scandir(root) as projects:
    for project in projects:
        if project.is_dir():
            with os.scandir(project.path) as runs:
                count += sum(1 for _ in runs)
print(time.perf_counter() - begin, time.process_time() - cpu, count)
"""

OLD_WAY = """
import sys, time, warnings
from pathlib import Path
from loggerhub.store import summarise
root = Path(sys.argv[1])
begin, cpu = time.perf_counter(), time.process_time()
found = [summarise(p.parent) for p in root.glob("*/*/journal")]
print(time.perf_counter() - begin, time.process_time() - cpu, len(found))
"""

IN_PROCESS = """
import sys, time
from loggerhub.index import RunIndex
index = RunIndex(sys.argv[1])
begin, cpu = time.perf_counter(), time.process_time()
runs = index.runs()
print(time.perf_counter() - begin, time.process_time() - cpu, len(runs))
"""


def measure(workdir: Path, runs: int) -> dict[str, Any]:
    root = workdir / "store"
    if root.exists():
        shutil.rmtree(root)
    begin = time.perf_counter()
    dirs = make_store(root, runs)
    made = time.perf_counter() - begin
    python = sys.executable
    cli = [python, "-m", "loggerhub.cli", "--dir", str(root)]
    records = sum(len(f.read_bytes().splitlines()) for f in (dirs[0] / "journal").iterdir())
    results: dict[str, Any] = {"runs": runs, "made": made, "load": os.getloadavg()[0], "cores": os.cpu_count(),
                               "records": records}

    def in_process(code: str) -> tuple[tuple[float, float], int]:
        out = subprocess.run([python, "-c", code, str(root)], capture_output=True, text=True, check=True)
        wall, cpu, count = out.stdout.split()
        return (float(wall), float(cpu)), int(count)

    results["scandir"], listed = min((in_process(SCANDIR) for _ in range(REPEATS)), key=lambda r: r[0])
    assert listed == runs
    empty = workdir / "empty"
    empty.mkdir(exist_ok=True)
    results["startup"] = timed([python, "-m", "loggerhub.cli", "--dir", str(empty), "runs"], REPEATS)
    index = root / ".loggerhub-index"
    shutil.rmtree(index, ignore_errors=True)
    results["cold"] = timed([*cli, "runs"])
    results["warm"] = timed([*cli, "runs"], REPEATS)
    results["warm_in_process"], listed = in_process(IN_PROCESS)
    assert listed == runs
    end_crashed(dirs[-CRASHED:])
    results["changed"] = timed([*cli, "runs"])
    out = subprocess.run([*cli, "runs"], capture_output=True, text=True, check=True).stdout
    assert len(out.splitlines()) == runs + 1 and out.count("KILLED") == CRASHED, out[-2000:]
    results["show_id"] = timed([*cli, "show", dirs[runs // 2].name], REPEATS)
    results["show_prefix"] = timed([*cli, "show", dirs[runs // 3].name[:8]], REPEATS)
    results["show_latest"] = timed([*cli, "show", "latest"], REPEATS)
    results["old_way"], listed = in_process(OLD_WAY)
    assert listed == runs
    results["index_bytes"] = sum(f.stat().st_size for f in index.iterdir())
    results["load"] = max(results["load"], os.getloadavg()[0])
    return results


def section(results: dict[str, Any]) -> str:
    runs = results["runs"]
    target = 1.0

    def row(label: str, seconds: tuple[float, float], note: str = "") -> str:
        wall, cpu = seconds
        return f"| {label} | {wall * 1000:,.0f} | {cpu * 1000:,.0f} | {note} |"

    def verdict(seconds: tuple[float, float]) -> str:
        wall, cpu = seconds
        if wall < target:
            return "target met"
        if cpu < target:
            return "target met in CPU time; the wall time is the machine's load (above)"
        return f"target missed by {wall - target:.2f} s"

    return "\n".join([
        START,
        f"## A store of {runs:,} runs",
        "",
        f"`python benchmarks/store.py`: {runs:,} runs over {len(PROJECTS)} projects, each a clone of one real "
        f"finished run ({results['records']} records), {CRASHED} of them crashed (no run_end). Each command is a new "
        f"process, timed from start to exit (median of {REPEATS}, cold and after-changes once), wall and CPU time "
        f"(user + system); load average up to {results['load']:.1f} on {results['cores']} cores during the run. "
        "Target: `loggerhub runs` and a lookup under 1 s. The index is `<store>/.loggerhub-index/<host>.sqlite` "
        f"({results['index_bytes'] / 2**20:.1f} MiB here); see docs/journal.md, \"The run store\".",
        "",
        "| what | wall ms | CPU ms | notes |",
        "|---|---:|---:|---|",
        row("anchor: `os.scandir` of the store and of each project", results["scandir"],
            "inside one process (no start-up)"),
        row("anchor: `loggerhub runs` on an empty store", results["startup"],
            "interpreter start, imports, the command line: the floor of these commands"),
        row("`loggerhub runs`, cold (no index)", results["cold"],
            f"reads every journal once and writes the index; {verdict(results['cold'])}"),
        row("`loggerhub runs`, warm", results["warm"], verdict(results["warm"])),
        row("  of which listing the store (`RunIndex.runs()`)", results["warm_in_process"],
            "inside one process: scandir, a stat of each run.json, the sqlite rows"),
        row(f"`loggerhub runs` after {CRASHED} runs changed", results["changed"],
            f"{CRASHED} crashed runs ended by `sync` since the last listing; {verdict(results['changed'])}"),
        row("`loggerhub show RUN_ID`", results["show_id"], f"lookup by id; {verdict(results['show_id'])}"),
        row("`loggerhub show PREFIX`", results["show_prefix"], f"unique prefix; {verdict(results['show_prefix'])}"),
        row("`loggerhub show latest`", results["show_latest"], f"through the index; {verdict(results['show_latest'])}"),
        row("reading every journal (what `runs` did before the index)", results["old_way"], "inside one process"),
        END,
    ]) + "\n"


def write_doc(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Performance\n"
    if START in doc:
        doc = re.sub(re.escape(START) + ".*?" + re.escape(END) + "\n?", lambda _: text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    DOC.write_text(doc, encoding="utf-8")


def run(workdir: Path, runs: int = 10_000) -> str:
    """The section for benchmarks/run.py: ``sections.append(store.run(workdir))``."""
    return section(measure(workdir, runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="loggerhub-store-bench-"))
    try:
        results = measure(workdir, args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = section(results)
    print(json.dumps(results), file=sys.stderr)
    print(text)
    if not args.no_write:
        write_doc(text)


if __name__ == "__main__":
    os.environ.setdefault("LOGGERHUB_BACKENDS", "local")
    main()
