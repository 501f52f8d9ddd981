"""The report and the UI at scale: 100 runs of 100,000 points each (10^7 points).

    .venv/bin/python benchmarks/report.py                 # prints the section, updates docs/performance.md
    .venv/bin/python benchmarks/report.py --runs 10 --points 10000 --no-write   # a quick look

Measures, in one run: writing the journals (through the real API), the anchor (reading every
journal line with ``json.loads``, the floor of any reader), ``loggerhub report`` (build time,
peak memory, file size), the report in headless Chromium (navigation to the first chart, and to
all charts), and ``loggerhub ui`` (the run table cold and warm, the view model of all runs, a
refresh, and the browser's time to the first chart). Needs chromium and chromedriver for the
browser figures (see scripts/setup.sh); without them those rows say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "performance.md"
START, END = "<!-- report benchmark: start -->", "<!-- report benchmark: end -->"

WRITE_RUNS = """
import math, sys
import loggerhub
root, first, last, points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for index in range(first, last):
    with loggerhub.init(project="bench", name=f"run-{index:03d}", dir=root,
                        config={"lr": 0.001 * (1 + index % 7), "seed": index, "batch_size": 64}) as run:
        log = run.log_metrics
        for step in range(points):
            value = math.exp(-step / (points / 5)) * (1 + 0.1 * math.sin(step / 50 + index)) + (index % 10) * 0.01
            if step == points // 2 + index:
                value = math.nan
            log({"train/loss": value}, step=step, epoch=step * 10 // points)
"""

BUILD = """
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from loggerhub.report.build import write_report
from loggerhub.report.model import select_runs
runs = select_runs([], Path(sys.argv[1]))
read = time.perf_counter() - start
write_report(runs, Path(sys.argv[2]))
total = time.perf_counter() - start
print(json.dumps({"read": read, "total": total, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

ANCHOR = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
lines = 0
for segment in Path(sys.argv[1]).glob("*/*/journal/*.jsonl"):
    with segment.open("rb") as handle:
        for line in handle:
            json.loads(line)
            lines += 1
print(json.dumps({"seconds": time.perf_counter() - start, "lines": lines}))
"""


def child(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_store(root: Path, runs: int, points: int) -> float:
    start = time.perf_counter()
    half = runs // 2
    # Two writer processes: the machine has two cores.
    procs = [subprocess.Popen([sys.executable, "-c", WRITE_RUNS, str(root), str(a), str(b), str(points)])
             for a, b in ((0, half), (half, runs)) if b > a]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("writing the runs failed")
    return time.perf_counter() - start


def browser_times(url: str, profile: Path, charts: int) -> dict[str, float] | str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not Path("/usr/bin/chromedriver").exists():
        return "no chromium here"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.set_page_load_timeout(600)
        driver.get(url)
        WebDriverWait(driver, 600).until(lambda d: d.execute_script(
            "return window.loggerhub && window.loggerhub.allChartsMs !== undefined"
            " && Object.keys(window.loggerhub.charts).length >= arguments[0]", charts))
        result = driver.execute_script(
            "const u = Object.values(window.loggerhub.charts)[0];"
            "return {first: window.loggerhub.firstChartMs, all: window.loggerhub.allChartsMs,"
            " series: u.series.length - 1, drawn: u.data.slice(1).reduce((n, s) => n + s[0].length, 0)}")
        # Responsiveness: redraw every chart for another x axis.
        result["toggle"] = driver.execute_script(
            "const t = performance.now(); const s = document.getElementById('xmode'); s.value = 'relative';"
            "s.dispatchEvent(new Event('change')); return performance.now() - t;")
        return dict(result)
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_get(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=3600) as response:  # noqa: S310 - our own local server
        size = len(response.read())
    return time.perf_counter() - start, size


def ui_times(root: Path, run_ids: list[str], profile: Path) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "loggerhub.cli", "ui", "--dir", str(root), "--port", str(port)],
                              stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        cold, _ = timed_get(base + "api/runs")
        warm, _ = timed_get(base + "api/runs")
        query = "&".join(f"run={run}" for run in run_ids)
        model, size = timed_get(base + "api/model?" + query)
        again, _ = timed_get(base + "api/model?" + query)
        rss = int(Path(f"/proc/{server.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
        browser = browser_times(base + "#" + "&".join(f"run={run}" for run in run_ids), profile, 1)
        return {"cold": cold, "warm": warm, "model": model, "model_size": size, "again": again, "rss": rss,
                "browser": browser}
    finally:
        server.terminate()
        server.wait(timeout=30)


def section(results: dict[str, Any]) -> str:
    runs, points = results["runs"], results["points"]
    build, anchor, report_browser, ui = results["build"], results["anchor"], results["browser"], results["ui"]

    def browser_row(label: str, b: dict[str, Any] | str) -> str:
        if isinstance(b, str):
            return f"| {label} | {b} | | |"
        return (f"| {label} | {b['first']:,.0f} | {b['all']:,.0f} | {b['series']} series, {b['drawn']:,} points drawn; "
                f"switching the x axis redraws in {b['toggle']:,.0f} ms |")

    return "\n".join([
        START,
        "## Report and UI: 100 runs × 100,000 points",
        "",
        f"`python benchmarks/report.py`: {runs} runs of {points:,} points each ({runs * points:,} points, one key, "
        f"a NaN in each), logged through the API; {platform.python_version()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}; load average {results['load'][0]:.1f} at the start, {results['load'][1]:.1f} at "
        "the end (the machine is shared: compare each figure with the anchor, measured in the same run). "
        "Series are downsampled by min/max per bucket "
        f"({results['buckets']} buckets per series for {runs} runs: every peak and trough kept).",
        "",
        "| what | seconds | notes |",
        "|---|---:|---|",
        f"| anchor: `json.loads` of every journal line | {anchor['seconds']:.1f} | "
        f"{anchor['lines']:,} lines: the floor of any reader of the journal |",
        f"| `loggerhub report` (all {runs} runs) | {build['total']:.1f} | reading the journals: {build['read']:.1f} s; "
        f"peak memory {build['rss']:,.0f} MB |",
        f"| `loggerhub ui`: run table, first request | {ui['cold']:.1f} | every journal read once |",
        f"| `loggerhub ui`: run table, later requests | {ui['warm']:.2f} | only what was appended is read |",
        f"| `loggerhub ui`: view model of all {runs} runs | {ui['model']:.2f} | "
        f"{ui['model_size'] / 1e6:.1f} MB of JSON; again: {ui['again']:.2f} s; server memory {ui['rss']:,.0f} MB |",
        "",
        f"**Report file size: {results['size'] / 1e6:.1f} MB** for {runs * points:,} points. The bound, whatever "
        "the number of points: at most `5 × buckets + 2` points per run and key (buckets = 100,000 / (2 × runs), "
        "kept within 200-1,000), about 45 bytes each, plus uPlot and the renderer (about 90 KB), plus at most 16 "
        "images per run and key, each at most 640 px on its longer side (see docs/report.md).",
        "",
        "Time to first chart in headless Chromium (ms from navigation start, 2 cores):",
        "",
        "| page | first chart (ms) | all charts (ms) | notes |",
        "|---|---:|---:|---|",
        browser_row("report, opened from file://", report_browser),
        browser_row(f"`loggerhub ui`, {runs} runs picked", ui["browser"]),
        END,
    ]) + "\n"


def write_doc(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    if START in doc:
        doc = re.sub(re.escape(START) + ".*?" + re.escape(END) + "\n?", lambda _: text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    DOC.write_text(doc, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--store", type=Path, default=None, help="reuse (or keep) the runs here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        root = args.store or work / "store"
        results: dict[str, Any] = {"runs": args.runs, "points": args.points, "load": [os.getloadavg()[0]]}
        if not any(root.glob("*/*/journal")):
            results["write"] = write_store(root, args.runs, args.points)
            print(f"wrote {args.runs} runs in {results['write']:.1f} s", file=sys.stderr)
        results["anchor"] = child(ANCHOR, str(root))
        report = work / "report.html"
        results["build"] = child(BUILD, str(root), str(report))
        results["size"] = report.stat().st_size
        from loggerhub.report.model import buckets_for

        results["buckets"] = buckets_for(args.runs)
        results["browser"] = browser_times(report.as_uri(), work / "profile-report", 1)
        run_ids = sorted(p.parent.name for p in root.glob("*/*/journal"))
        results["ui"] = ui_times(root, run_ids, work / "profile-ui")
        results["load"].append(os.getloadavg()[0])
        print(json.dumps(results, indent=1, default=str), file=sys.stderr)
        text = section(results)
        print(text)
        if not args.no_write:
            write_doc(text)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    main()
