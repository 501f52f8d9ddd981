"""``loggerhub import neptune`` on crafted input (issue 15): a real offline container written by the
neptune client, and a neptune-exporter-shaped Parquet export, then mutated. Nothing outside the
store may change or be read, nothing the import did not write may be deleted, memory stays
bounded, and every refused item is reported with its file and line."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loggerhub_neptune import offline

from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader
from loggerhub_hookspecs.importers import ImportRefused

MiB = 1 << 20
SECRET = b"the content of a file outside the source"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/.neptune/offline/run__...`` as neptune 1.x writes it, plus ``<root>/inside/w.bin``
    uploaded with File(path): a folder whose files are all inside it."""
    import neptune
    from neptune.types import File

    root = tmp_path_factory.mktemp("neptune-real") / "source"
    (root / "inside").mkdir(parents=True)
    (root / "inside" / "w.bin").write_bytes(b"weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEPTUNE_DATA_DIRECTORY", str(root / ".neptune"))
        run = neptune.init_run(mode="offline", name="source", capture_stdout=False, capture_stderr=False,
                               capture_traceback=False, capture_hardware_metrics=False, source_files=[],
                               git_ref=False)
        run["params"] = {"lr": 0.1, "batch": 8}
        for step in range(3):
            run["train/loss"].append(value=1.0 / (step + 1), step=step)
        run["notes"].append("hello", step=0)
        run["model/weights"].upload(File(str(root / "inside" / "w.bin")))
        run.stop()
    return root


def container(root: Path) -> Path:
    (found,) = offline.find_containers(root)
    return found


def copy_source(source: Path, target: Path) -> Path:
    """The source folder copied, with the File(path) upload pointed at the copy's own file."""
    shutil.copytree(source, target, symlinks=True)
    log = next(container(target).glob("data-*.log"))
    log.write_text(log.read_text().replace(str(source), str(target)))
    return target


def log_lines(root: Path) -> tuple[Path, list[str]]:
    log = next(container(root).glob("data-*.log"))
    return log, log.read_text().splitlines()


def op_line(path: list[Any], kind: str, version: int = 900, **fields: Any) -> str:
    return json.dumps({"obj": {"type": kind, "path": path, **fields}, "version": version, "at": 1_700_000_000.0})


def add_lines(root: Path, lines: list[str], at: int | None = None) -> Path:
    log, existing = log_lines(root)
    at = len(existing) if at is None else at
    log.write_text("\n".join(existing[:at] + lines + existing[at:]) + "\n")
    return log


def snapshot(folder: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[key] = "dir"
    return found


def store_holds(store: Path, data: bytes) -> bool:
    return any(data in p.read_bytes() for p in store.rglob("*") if p.is_file() and not p.is_symlink())


def entries(run_dir: Path) -> list[dict[str, Any]]:
    return [e.data for e in JournalReader(run_dir).entries()]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(SECRET)
    return folder


# --------------------------------------------------------------------------- defect 1


def test_crafted_run_ids_never_delete_earlier_imports(source: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name in ("a", "b"):
        import_runs("neptune", str(copy_source(source, tmp_path / name)), dir=store)
    before = snapshot(store)
    evil = copy_source(source, tmp_path / "evil")
    add_lines(evil, [op_line(["loggerhub", "run_id"], "AssignString", value="-"),
                     op_line(["loggerhub", "project"], "AssignString", value="..")])
    (run_dir,) = import_runs("neptune", str(evil), dir=store).imported
    assert run_dir.is_relative_to(store) and run_dir.parent != store and run_dir.parent.name not in ("", "..")
    assert {k: v for k, v in snapshot(store).items() if k in before} == before


# --------------------------------------------------------------------------- defect 4


def test_files_outside_the_source_are_not_read(source: Path, tmp_path: Path, outside: Path) -> None:
    evil = copy_source(source, tmp_path / "evil")
    upload_path = container(evil) / "upload_path"
    upload_path.mkdir(exist_ok=True)
    (upload_path / "link.bin").symlink_to(outside / "secret.txt")
    add_lines(evil, [
        op_line(["f", "absolute"], "UploadFile", file_path=str(outside / "secret.txt"), ext="txt"),
        op_line(["f", "dots"], "UploadFile", tmp_file_name="../" * 12 + str(outside.relative_to("/")) + "/secret.txt",
                ext="txt"),
        op_line(["f", "link"], "UploadFile", tmp_file_name="link.bin", ext="bin"),
        op_line(["f", "glob"], "UploadFileSet", file_globs=[str(outside / "secre*")], reset=False),
        op_line(["f", "root"], "UploadFileSet", file_globs=["/**"], reset=False),
    ])
    before = snapshot(outside)
    report = import_runs("neptune", str(evil), dir=tmp_path / "store")
    (run_dir,) = report.imported
    assert not store_holds(tmp_path / "store", SECRET)
    assert snapshot(outside) == before
    refused = [line for line in report.problems if ": OutsideSource: " in line]
    assert len(refused) == 5, "\n".join(report.problems)
    assert any(e["type"] == "artifact" and e["name"] == "model/weights.bin" for e in entries(run_dir))

    # Named explicitly, the folder may be read: reported.
    again = import_runs("neptune", str(evil), dir=tmp_path / "allowed", allow_read=[outside])
    assert store_holds(tmp_path / "allowed", SECRET)
    assert f"read outside the source (allowed by --allow-read {outside}): " in again.problems[0]


# --------------------------------------------------------------------------- defects 5, 6, 7


def test_malformed_lines_are_skipped_and_reported(source: Path, tmp_path: Path) -> None:
    evil = copy_source(source, tmp_path / "evil")
    secret = "sk-live-" + "7" * 24
    log, lines = log_lines(evil)
    bad = ['["a", "list"]', op_line(None, "AssignString", value="x"),  # type: ignore[arg-type]
           op_line(["m", "text"], "LogFloats", values=[{"value": "1.5", "step": 0, "ts": 1.0}]),
           op_line(["api_key"], "LogFloats", values=[{"value": secret, "step": 0, "ts": 1.0}]),
           op_line(["m", "ten"], "LogFloats", values=[{"value": 1.0, "step": "ten", "ts": 1.0}]),
           op_line(["m", "noon"], "LogFloats", values=[{"value": 1.0, "step": 1, "ts": "noon"}]),
           op_line(["sys", "\x1b[2Jclear"], "AssignString", value="x"),
           '{"obj": {"type": "LogFloats", "path": ["torn"], "val']  # a torn line in the middle
    log.write_text("\n".join(lines[:3] + bad + lines[3:]) + "\n")
    folder = container(evil)
    (folder / "metadata.json").write_text("[1, 2]")
    report = import_runs("neptune", str(evil), dir=tmp_path / "store")
    (run_dir,) = report.imported
    loss = sorted(v for e in entries(run_dir) if e["type"] == "metrics" for k, v in e["values"].items()
                  if k == "train/loss")
    assert loss == [1.0 / 3, 0.5, 1.0]
    skipped = [line for line in report.problems if line.startswith(f"skipped: {folder.name}/{log.name}:")]
    lines_reported = sorted(int(line.split(":")[2]) for line in skipped)
    assert lines_reported == [4, 5, 6, 7, 8, 9, 11], "\n".join(report.problems)
    summary = report.summary()
    assert secret not in summary and "\x1b" not in summary and "?[2Jclear" in summary


# --------------------------------------------------------------------------- Parquet


def write_parquet(path: Path, rows: list[dict[str, Any]], step_type: Any = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("project_id", pa.string()), ("run_id", pa.string()), ("attribute_path", pa.string()),
                        ("attribute_type", pa.string()), ("step", step_type or pa.decimal128(18, 6)),
                        ("timestamp", pa.timestamp("ms", tz="UTC")), ("float_value", pa.float64()),
                        ("string_value", pa.string()), ("int_value", pa.int64()),
                        ("file_value", pa.struct([("path", pa.string())]))])
    path.parent.mkdir(parents=True, exist_ok=True)
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path)


def test_parquet_rows_that_are_wrong_are_skipped(tmp_path: Path, outside: Path) -> None:
    import pyarrow as pa

    data = tmp_path / "exports" / "data"
    (tmp_path / "exports" / "files").mkdir(parents=True)
    at = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    base = {"project_id": "ws/p", "run_id": "P-1", "timestamp": at}
    good = [{**base, "attribute_path": "loss", "attribute_type": "float_series", "step": Decimal(s),
             "float_value": 1.0 / (s + 1)} for s in range(3)]
    files = [{**base, "attribute_path": "f/dots", "attribute_type": "file",
              "file_value": {"path": "../../outside/secret.txt"}},
             {**base, "attribute_path": "f/abs", "attribute_type": "file",
              "file_value": {"path": str(outside / "secret.txt")}},
             {**base, "attribute_path": None, "attribute_type": "string", "string_value": "x"}]
    write_parquet(data / "a.parquet", good + files)
    write_parquet(data / "b.parquet", [{**base, "attribute_path": "loss", "attribute_type": "float_series",
                                        "step": "ten", "float_value": 9.0}], step_type=pa.string())
    report = import_runs("neptune", str(data), dir=tmp_path / "store")
    (run_dir,) = report.imported
    assert not store_holds(tmp_path / "store", SECRET)
    loss = sorted(v for e in entries(run_dir) if e["type"] == "metrics" for v in e["values"].values())
    assert loss == [1.0 / 3, 0.5, 1.0]
    assert any(line.startswith("skipped: data/b.parquet:1: row 1: a step that is not a number")
               for line in report.problems), report.problems
    assert sum("a.parquet:" in line for line in report.problems) == 3, report.problems


# --------------------------------------------------------------------------- property test

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)


def mutate(root: Path, steps: list[tuple[str, Any]], rng: random.Random) -> None:
    log, lines = log_lines(root)
    for kind, value in steps:
        index = rng.randrange(len(lines))
        if kind == "field":
            try:
                entry = json.loads(lines[index])
                obj = entry["obj"]
                obj[rng.choice(sorted(obj))] = value
                lines[index] = json.dumps(entry)
            except (ValueError, KeyError, TypeError, IndexError):
                lines[index] = json.dumps(value)
        elif kind == "line":
            lines.insert(index, json.dumps(value))
        elif kind == "bytes" and lines[index]:
            cut = rng.randrange(len(lines[index]))
            lines[index] = lines[index][:cut] + chr(rng.randrange(32, 127)) + lines[index][cut + 1:]
        elif kind == "truncate":
            lines[index] = lines[index][: rng.randrange(len(lines[index]) + 1)]
    log.write_text("\n".join(lines) + "\n")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["field", "line", "bytes", "truncate"]), JSON), min_size=1,
                      max_size=4), seed=st.integers(0, 2**16))
def test_any_mutated_container(source: Path, tmp_path_factory: pytest.TempPathFactory,
                               steps: list[tuple[str, Any]], seed: int) -> None:
    """Memory bound: the process's peak RSS grows by less than 64 MiB (the container is a few KiB)."""
    import resource

    tmp = tmp_path_factory.mktemp("mutated")
    sibling = tmp / "sibling"
    sibling.mkdir()
    (sibling / "keep.txt").write_text("precious")
    root = copy_source(source, tmp / "src")
    mutate(root, steps, random.Random(seed))
    before = snapshot(sibling), snapshot(root)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        import_runs("neptune", str(root), dir=tmp / "store")
    except (ImportRefused, LookupError):
        pass
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) * 1024 < 64 * MiB
    assert (snapshot(sibling), snapshot(root)) == before
    store = snapshot(tmp / "store")
    try:
        assert import_runs("neptune", str(root), dir=tmp / "store").imported == []
    except (ImportRefused, LookupError):
        pass
    assert snapshot(tmp / "store") == store
