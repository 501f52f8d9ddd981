"""The run index (loggerhub/index.py): a cache of the run store that must never be wrong.

Everything here uses real run directories (written by ``loggerhub.init`` in this process or in
real child processes) and a real sqlite file; timing targets live in benchmarks/store.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loggerhub
from loggerhub.cli import main
from loggerhub.index import INDEX_DIR, RunIndex
from loggerhub.store import RunNotFound, find_run, iter_runs


def make_runs(root: Path, count: int, project: str = "p") -> list[Path]:
    dirs = []
    for index in range(count):
        with loggerhub.init(project=project, name=f"run{index}", dir=root, backends=["local"]) as run:
            run.log_metrics({"loss": 1.0 / (index + 1), "acc": 0.5}, step=0)
            run.log_metrics({"loss": 0.1}, step=1)
        dirs.append(run.dir)
    return dirs


def index_file(root: Path) -> Path:
    (found,) = (root / INDEX_DIR).glob("*.sqlite")
    return found


def listed(root: Path) -> list[tuple[str, str, int]]:
    return [(run.dir.name, run.status, run.points) for run in RunIndex(root).runs()]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    make_runs(root, 3)
    return root


def test_lists_runs_oldest_first_with_their_journal_summary(store: Path) -> None:
    runs = RunIndex(store).runs()
    assert [run.name for run in runs] == ["run0", "run1", "run2"]
    assert {(run.status, run.points, run.project) for run in runs} == {("FINISHED", 3, "p")}
    assert all(run.ended_at is not None and run.ended_at >= run.started_at for run in runs)
    assert list(iter_runs(store)) == [run.dir for run in runs]
    with sqlite3.connect(index_file(store)) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3


@pytest.mark.parametrize("damage", ["delete", "empty", "half", "garbage", "other schema"])
def test_a_missing_or_damaged_index_is_rebuilt(store: Path, damage: str) -> None:
    before = listed(store)
    path = index_file(store)
    if damage == "delete":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "half":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE runs (path TEXT, status TEXT)")
            db.execute("INSERT INTO runs VALUES ('p/nonexistent', 'FINISHED')")
    index = RunIndex(store)
    assert listed(store) == before
    assert [run.name for run in index.runs()] == ["run0", "run1", "run2"]
    assert not index.in_memory  # rebuilt in the file, not merely listed from a scan
    with sqlite3.connect(index_file(store)) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3


def test_runs_added_removed_or_replaced_after_indexing_are_seen(store: Path) -> None:
    listed(store)
    (new,) = make_runs(store, 1, project="q")
    first = RunIndex(store).runs()[0].dir
    shutil.rmtree(first)
    names = [name for name, _, _ in listed(store)]
    assert new.name in names and first.name not in names and len(names) == 3
    # A directory replaced by another run under the same name: read again from its start, not
    # continued from where the old journal's row stopped.
    victim = RunIndex(store).runs()[0].dir
    with loggerhub.init(project="tmp", name="other", dir=store, backends=["local"]) as other:
        other.log_metrics({"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}, step=0)
        other.log_metrics({"x": 1.0}, step=1)
    shutil.rmtree(victim)
    os.rename(other.dir, victim)
    shutil.rmtree(other.dir.parent)
    (row,) = [run for run in RunIndex(store).runs() if run.dir == victim]
    assert row.points == 5 and row.name == "other"


def test_a_run_finished_after_indexing_shows_its_new_status(tmp_path: Path) -> None:
    root = tmp_path / "store"
    run = loggerhub.init(project="p", name="live", dir=root, backends=["local"])
    run.log_metrics({"loss": 1.0}, step=0)
    assert run.flush()
    assert listed(root) == [(run.dir.name, "RUNNING", 1)]
    run.log_metrics({"loss": 0.5, "acc": 0.9}, step=1)
    assert run.flush()
    assert listed(root) == [(run.dir.name, "RUNNING", 3)]  # read on from where it stopped
    run.finish("FAILED")
    (row,) = RunIndex(root).runs()
    assert (row.status, row.points) == ("FAILED", 3) and row.ended_at is not None
    assert listed(root) == [(run.dir.name, "FAILED", 3)]


CRASH = textwrap.dedent("""
    import os, sys
    import loggerhub
    run = loggerhub.init(project="p", name="crash", dir=sys.argv[1], backends=["local"])
    run.log_metrics({"loss": 1.0}, step=0)
    run.flush()
    print(run.dir, flush=True)
    os.kill(os.getpid(), 9)
""")


def test_a_crashed_run_is_listed_crashed_and_killed_once_sync_ends_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    out = subprocess.run([sys.executable, "-c", CRASH, str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    run_dir = Path(out.stdout.strip())
    assert listed(root) == [(run_dir.name, "CRASHED", 1)]
    assert main(["sync", run_dir.name, "--dir", str(root)]) == 0
    (row,) = RunIndex(root).runs()
    assert (row.status, row.points) == ("KILLED", 1)


def write_run(root: Path, project: str, run_id: str, *, group: str | None = None, rank: int | None = None,
              ts: float = 1.7e9) -> Path:
    """A run directory as ``loggerhub.init`` leaves one (run_start, metrics, run_end, run.json):
    written directly, to give it a group before the ranks code writes one itself."""
    run_dir = root / project / run_id
    (run_dir / "journal").mkdir(parents=True)
    start = {"run_id": run_id, "project": project, "name": run_id, "config": {}, "tags": {}, "backends": ["local"],
             "options": {}, "journal_version": 1, "host": "h", "pid": 1, "seq": 0, "type": "run_start", "ts": ts}
    if group is not None:
        start.update(group=group, rank=rank, world_size=2)
    lines = [start, {"step": 0, "epoch": None, "values": {"loss": 1.0}, "seq": 1, "type": "metrics", "ts": ts},
             {"status": "FINISHED", "error": None, "lost": 0, "seq": 2, "type": "run_end", "ts": ts + 1}]
    (run_dir / "journal" / "000000000000.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "status": "FINISHED", "started_at": ts}))
    return run_dir


def test_runs_filter_by_project_and_group(tmp_path: Path) -> None:
    root = tmp_path / "store"
    write_run(root, "p", "job-rank0", group="job", rank=0, ts=1.7e9)
    write_run(root, "p", "job-rank1", group="job", rank=1, ts=1.7e9 + 1)
    write_run(root, "q", "alone", ts=1.7e9 + 2)
    index = RunIndex(root)
    assert [(r.run_id, r.group, r.rank) for r in index.runs(group="job")] == [
        ("job-rank0", "job", 0), ("job-rank1", "job", 1)]
    assert [r.run_id for r in index.runs(project="q")] == ["alone"]
    assert index.runs(group="other") == [] and index.runs(project="p", group="job")[1].rank == 1
    assert [r.group for r in index.runs()] == ["job", "job", None]


def test_lookup_by_id_prefix_and_latest(store: Path) -> None:
    runs = RunIndex(store).runs()
    assert find_run(runs[1].run_id, store) == runs[1].dir
    assert find_run(runs[2].run_id[:6], store) == runs[2].dir  # "run2-2" is unique
    assert find_run("latest", store) == runs[-1].dir
    with pytest.raises(RunNotFound, match="several runs"):
        find_run("run", store)
    with pytest.raises(RunNotFound, match="no run"):
        find_run("nope", store)
    (store / "p" / "not-a-run").mkdir()  # no journal folder: never a match
    with pytest.raises(RunNotFound, match="no run"):
        find_run("not-a-run", store)


# --------------------------------------------------------------------------- many processes


CREATE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import loggerhub
    root, go, worker, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    (go.parent / f"ready-{worker}").touch()
    while not go.exists():  # every process starts creating at the same moment
        time.sleep(0.001)
    for k in range(count):
        # One name for all: the same id prefix, within the same second.
        with loggerhub.init(project="team", name="same", dir=root, backends=["local"],
                            config={"worker": worker, "k": k}) as run:
            run.log_metrics({"loss": 1.0}, step=0)
""")

LIST = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from loggerhub.index import RunIndex
    root, done = sys.argv[1], Path(sys.argv[2])
    seen, listings = set(), 0
    while True:
        finished = done.exists()
        runs = RunIndex(root).runs()
        dirs = {str(run.dir) for run in runs}
        assert len(dirs) == len(runs), "a run listed twice"
        assert seen <= dirs, f"runs disappeared: {seen - dirs}"
        seen, listings = dirs, listings + 1
        if finished:
            break
    print(json.dumps({"listings": listings, "runs": len(runs),
                      "statuses": sorted({run.status for run in runs})}))
""")

WORKERS = 16
RUNS_EACH = 3


def start(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def release(go: Path, workers: int) -> None:
    """Start every worker at once, when all have imported loggerhub."""
    deadline = time.monotonic() + 120
    while len(list(go.parent.glob("ready-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()


def finish(process: subprocess.Popen[str], timeout: float = 300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def check_store(root: Path, expected: int) -> None:
    """No lost run, no id or directory used twice, and the index file agrees with the store."""
    dirs = sorted(p.parent for p in root.glob("team/*/journal"))
    assert len(dirs) == expected
    starts = [json.loads((d / "journal" / "000000000000.jsonl").read_text().splitlines()[0]) for d in dirs]
    assert [s["run_id"] for s in starts] == [d.name for d in dirs]  # each journal in its own directory
    assert len({s["run_id"] for s in starts}) == expected
    made = sorted((s["config"]["worker"], s["config"]["k"]) for s in starts)
    assert made == sorted((w, k) for w in range(WORKERS) for k in range(RUNS_EACH))
    runs = RunIndex(root).runs()
    assert sorted(run.dir for run in runs) == dirs
    assert {(run.status, run.points) for run in runs} == {("FINISHED", 1)}
    with sqlite3.connect(index_file(root)) as db:
        rows = db.execute("SELECT path, status, points FROM runs ORDER BY path").fetchall()
    assert rows == [(f"team/{d.name}", "FINISHED", 1) for d in dirs]


@pytest.mark.slow
def test_concurrent_creation_by_many_processes(tmp_path: Path) -> None:
    root, go = tmp_path / "store", tmp_path / "go"
    creators = [start(CREATE, root, go, worker, RUNS_EACH) for worker in range(WORKERS)]
    release(go, WORKERS)
    for process in creators:
        finish(process)
    check_store(root, WORKERS * RUNS_EACH)


@pytest.mark.slow
def test_listing_while_many_processes_create_runs(tmp_path: Path) -> None:
    root, go, done = tmp_path / "store", tmp_path / "go", tmp_path / "done"
    root.mkdir()
    listers = [start(LIST, root, done) for _ in range(3)]
    creators = [start(CREATE, root, go, worker, RUNS_EACH) for worker in range(WORKERS)]
    release(go, WORKERS)
    for process in creators:
        finish(process)
    done.touch()
    for process in listers:
        result = json.loads(finish(process).splitlines()[-1])
        assert result["listings"] >= 2
        # The last listing began after every creator had exited.
        assert result["runs"] == WORKERS * RUNS_EACH and result["statuses"] == ["FINISHED"]
    check_store(root, WORKERS * RUNS_EACH)


CLAIM = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from loggerhub.store import claim_run_dir
    parent, go = Path(sys.argv[1]), Path(sys.argv[2])
    ids = iter(f"same-{n}" for n in range(1000))  # every process tries the same ids in turn
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.001)
    run_dir = claim_run_dir(parent, lambda: next(ids))
    (run_dir / "owner").write_text(str(os.getpid()))
    print(run_dir.name)
""")


def test_claiming_a_run_directory_gives_each_process_its_own(tmp_path: Path) -> None:
    parent, go = tmp_path / "store" / "team", tmp_path / "go"
    processes = [start(CLAIM, parent, go) for _ in range(WORKERS)]
    release(go, WORKERS)
    names = [finish(process).strip() for process in processes]
    assert sorted(names) == sorted(f"same-{n}" for n in range(WORKERS))  # no id twice, none skipped
    owners = {(parent / name / "owner").read_text() for name in names}
    assert owners == {str(process.pid) for process in processes}


SAME_ID = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import loggerhub, loggerhub.run
    root, go, worker = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    ids = iter(f"same-{n}" for n in range(1000))
    loggerhub.run._new_run_id = lambda name: next(ids)  # what an unlucky draw of the id would give
    (go.parent / f"ready-{worker}").touch()
    while not go.exists():
        time.sleep(0.001)
    with loggerhub.init(project="team", name="same", dir=root, backends=["local"],
                        config={"worker": worker, "k": 0}) as run:
        run.log_metrics({"loss": 1.0}, step=0)
""")


def test_processes_that_draw_the_same_run_id_still_get_one_run_each(tmp_path: Path) -> None:
    root, go = tmp_path / "store", tmp_path / "go"
    processes = [start(SAME_ID, root, go, worker) for worker in range(4)]
    release(go, 4)
    failures = []
    for process in processes:
        process.communicate(timeout=120)
        failures += [process.returncode] if process.returncode else []
    assert not failures
    dirs = sorted(p.parent for p in root.glob("team/*/journal"))
    assert [d.name for d in dirs] == [f"same-{n}" for n in range(4)]
    journals = [[json.loads(line) for line in (d / "journal" / "000000000000.jsonl").read_text().splitlines()]
                for d in dirs]
    # One run per directory: one run_start (naming that directory) and one run_end in each journal.
    assert [[r["run_id"] for r in records if r["type"] == "run_start"] for records in journals] == [
        [d.name] for d in dirs]
    assert all([r["type"] for r in records].count("run_end") == 1 for records in journals)
    assert sorted(records[0]["config"]["worker"] for records in journals) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- a read-only store


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another user can reach (pytest's own tmp folder is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="loggerhub-index-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def _list_as_another_user(root: Path, sender: Any) -> None:
    if os.geteuid() == 0:  # root writes anywhere, whatever the modes: list as an unprivileged user
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    index = RunIndex(root)
    runs = index.runs()
    sender.send(([(run.status, run.points) for run in runs], index.in_memory))


@pytest.mark.parametrize("with_index", [False, True])
def test_a_store_that_cannot_be_written_is_listed_from_a_scan(shared_tmp: Path, with_index: bool) -> None:
    root = shared_tmp / "store"
    make_runs(root, 2)
    if with_index:
        listed(root)
        make_runs(root, 1, project="later")  # after the index was written: it is stale
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    # A forked child, so that it can drop root without needing to execute anything.
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_list_as_another_user, args=(root, sender))
    child.start()
    assert receiver.poll(60)
    runs, in_memory = receiver.recv()
    child.join(60)
    assert child.exitcode == 0
    assert runs == [("FINISHED", 3)] * (3 if with_index else 2)
    assert in_memory  # nothing could be written: listed from a scan
    assert (root / INDEX_DIR).exists() == with_index


def test_a_run_that_finish_ended_is_indexed_from_its_run_json(store: Path) -> None:
    """A first listing takes an ended run's counts from run.json, which finish() writes after the
    journal's last record, instead of reading the journal; a run ended any other way, or whose
    run.json lacks the counts, is read from its journal."""
    first, second, _third = sorted(p for p in (store / "p").iterdir() if p.is_dir())
    summary = json.loads((first / "run.json").read_text())
    assert summary["points"] == 3 and summary["counts"]["metrics"] == 2
    # The journal is not read: a count only run.json has shows in the listing.
    summary["points"] = 999
    (first / "run.json").write_text(json.dumps(summary))
    other = json.loads((second / "run.json").read_text())
    del other["points"]  # as an older version wrote it: read from the journal
    (second / "run.json").write_text(json.dumps(other))
    points = {run.dir.name: run.points for run in RunIndex(store).runs()}
    assert points[first.name] == 999 and points[second.name] == 3
