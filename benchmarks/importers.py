"""Importers on hostile input: peak memory and time of a decompression bomb and of size limits.

    .venv/bin/python benchmarks/importers.py             # the section of docs/performance.md
    .venv/bin/python benchmarks/importers.py --tree DIR  # the same cases against another checkout
                                                          # (e.g. `git archive HEAD | tar -x -C DIR`)

Each case imports in its own process and reports that process's peak resident memory (``ru_maxrss``)
and the memory it had before the import (the interpreter and its modules), the time, and what it
wrote. The anchor is an ordinary archive of the same run, imported in the same way.
``benchmarks/run.py`` calls :func:`section`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
BOMB_BYTES = 1096 * MiB  # 1.07 GiB of zeros: about 1.1 MB deflated

SOURCE_SCRIPT = """
import os, sys
os.environ["COMET_ERROR_TRACKING_ENABLE"] = "0"
import comet_ml
out, weights = sys.argv[1], sys.argv[2]
experiment = comet_ml.OfflineExperiment(project_name="bench", offline_directory=out)
for step in range(100):
    experiment.log_metric("loss", 1.0 / (step + 1), step=step)
experiment.log_asset(weights, file_name="weights.bin", step=1)
experiment.end()
"""


def make_archives(workdir: Path) -> dict[str, Path]:
    """A real comet_ml archive, and two crafted from it: a bomb asset, and a messages.json of blanks."""
    weights = workdir / "weights.bin"
    weights.write_bytes(os.urandom(4096))
    subprocess.run([sys.executable, "-c", SOURCE_SCRIPT, str(workdir / "real"), str(weights)], check=True,
                   capture_output=True, timeout=600)
    (real,) = (workdir / "real").glob("*.zip")
    with zipfile.ZipFile(real) as opened:
        members = {name: opened.read(name) for name in opened.namelist()}
    messages = [json.loads(line) for line in members["messages.json"].splitlines() if line.strip()]
    asset = next(m for m in messages if m["type"] == "file_upload")["payload"]["file_path"]
    archives = {"ordinary": real}
    for name, replace in (("bomb", asset), ("blanks", "messages.json")):
        target = workdir / name / real.name
        target.parent.mkdir()
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
            for member, data in members.items():
                if member == replace:
                    with out.open(member, "w", force_zip64=True) as stream:
                        if name == "blanks":
                            stream.write(data)
                        block = (b" " if name == "blanks" else b"\0") * MiB
                        for _ in range(BOMB_BYTES // MiB):
                            stream.write(block)
                else:
                    out.writestr(member, data)
        archives[name] = target
    return archives


def run_case(archive: Path, store: Path, limits: list[str]) -> None:
    """In the child: import, then print the measurements as one JSON line."""
    import loggerhub.importing as importing

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    outcome = "imported"
    kwargs: dict[str, Any] = {}
    if limits:
        from loggerhub_hookspecs.importers import Limits

        kwargs["limits"] = Limits.parse(limits)
    try:
        report = importing.import_runs("comet", str(archive), dir=store, **kwargs)
        problems = getattr(report, "problems", [])
        if problems:
            outcome = problems[-1][:110]
    except Exception as error:  # noqa: BLE001 - a benchmark reports what happened
        outcome = f"{type(error).__name__}: {str(error)[:100]}"
    seconds = time.perf_counter() - start
    written = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "base_mb": before, "written_mb": written / MiB, "outcome": outcome}))


def measure(archive: Path, workdir: Path, label: str, limits: list[str], tree: Path | None) -> dict[str, Any]:
    store = Path(tempfile.mkdtemp(prefix=f"store-{label}-", dir=workdir))
    env = dict(os.environ)
    if tree is not None:  # another checkout: its packages first on the path
        paths = [tree, tree / "hookspecs" / "src", *(tree / "backends").glob("*/src")]
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    command = [sys.executable, str(HERE / "importers.py"), "case", str(archive), str(store), *limits]
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env, check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return {"label": label, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return {"label": label, **json.loads(out.stdout.strip().splitlines()[-1])}


def section(workdir: Path, tree: Path | None = None) -> str:
    archives = make_archives(workdir)
    rows = []
    for label, archive, limits in (
            ("ordinary archive (anchor)", archives["ordinary"], []),
            ("bomb: 1.1 MB zip, asset of 1.07 GiB", archives["bomb"], []),
            ("bomb, `--limit ratio=100000` (streamed)", archives["bomb"], ["ratio=100000"]),
            ("messages.json of 1.07 GiB of blanks", archives["blanks"], []),
            ("blanks, `--limit item_bytes=1M`", archives["blanks"], ["item_bytes=1M"])):
        if tree is not None and limits:
            continue  # another checkout may have no limits to raise
        result = measure(archive, workdir, label.split(":")[0].split(",")[0], limits, tree)
        if "error" in result:
            rows.append(f"| {label} | error: {result['error'][:80]} | | | | |")
            continue
        rows.append(f"| {label} | {archive.stat().st_size / MiB:.1f} | {result['peak_mb']:.0f} "
                    f"({result['peak_mb'] - result['base_mb']:+.0f}) | {result['seconds']:.1f} | "
                    f"{result['written_mb']:.1f} | {result['outcome'].replace('|', '/')} |")
    return (
        "\n## Importers on hostile input\n\n"
        "`loggerhub import comet` of a real comet_ml offline archive, and of two archives crafted from it "
        "(`benchmarks/importers.py`). Peak memory is the importing process's `ru_maxrss` (in brackets: "
        "above what it held before the import). Targets: memory bounded by `item_bytes` (64 MiB) whatever "
        "the input; a bomb refused before it is written.\n\n"
        "| input | archive MB | peak MB | seconds | written MB | outcome |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "case":
        run_case(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, default=None, help="measure another checkout's importer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loggerhub-bench-import-") as workdir:
        print(section(Path(workdir), args.tree))


if __name__ == "__main__":
    main()
