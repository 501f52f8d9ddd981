"""``loggerhub import comet`` on crafted archives (issue 15): a real archive written by comet_ml in
offline mode, then mutated. Nothing outside the store may change, nothing the import did not
write may be deleted or replaced, memory stays bounded, and every refused item is reported."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader
from loggerhub_hookspecs.importers import ImportRefused, Limits, source_run_id

MiB = 1 << 20

SCRIPT = """
import os, sys
os.environ["COMET_ERROR_TRACKING_ENABLE"] = "0"
import comet_ml

out, weights = sys.argv[1], sys.argv[2]
experiment = comet_ml.OfflineExperiment(project_name="crafted", offline_directory=out)
experiment.set_name("source")
experiment.log_parameters({"lr": 0.01, "batch": 32})
for step in range(3):
    experiment.log_metric("loss", 1.0 / (step + 1), step=step)
experiment.log_asset(weights, file_name="weights.bin", step=2)
experiment.log_model("mymodel", weights)
experiment.end()
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One archive as comet_ml 3 writes it offline."""
    tmp = tmp_path_factory.mktemp("comet-real")
    weights = tmp / "weights.bin"
    weights.write_bytes(b"\x00\x01" * 64)
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp / "out"), str(weights)], check=True,
                   capture_output=True, cwd=tmp, timeout=300)
    (found,) = (tmp / "out").glob("*.zip")
    return found


def read(archive: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]]:
    with zipfile.ZipFile(archive) as opened:
        experiment = json.loads(opened.read("experiment.json"))
        messages = [json.loads(line) for line in opened.read("messages.json").splitlines() if line.strip()]
        members = {n: opened.read(n) for n in opened.namelist() if n not in ("experiment.json", "messages.json")}
    return experiment, messages, members


def write(target: Path, experiment: Any, messages: list[Any] | bytes, members: dict[str, bytes]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("experiment.json", json.dumps(experiment))
        if isinstance(messages, bytes):
            out.writestr("messages.json", messages)
        else:
            out.writestr("messages.json", "".join(json.dumps(m) + "\n" for m in messages))
        for name, data in members.items():
            out.writestr(name, data)
    return target


def crafted(archive: Path, target: Path, change: Callable[[dict[str, Any], list[Any], dict[str, bytes]], Any]) -> Path:
    experiment, messages, members = read(archive)
    result = change(experiment, messages, members)
    return write(target, result if result is not None and not isinstance(result, list) else experiment,
                 result if isinstance(result, list) else messages, members)


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry under ``folder``: files by content hash, symlinks by target, folders by name."""
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


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def runs(store: Path) -> list[Path]:
    return sorted(p.parent for p in store.glob("*/*/journal"))


def entries(run_dir: Path) -> list[dict[str, Any]]:
    return [e.data for e in JournalReader(run_dir).entries()]


def metric_message(messages: list[dict[str, Any]], **metric: Any) -> dict[str, Any]:
    base = next(m for m in messages if m["type"] == "metric_msg")
    return {**base, "payload": {**base["payload"], "metric": {**base["payload"]["metric"], **metric}}}


def uploads(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "file_upload" and m["payload"]["upload_type"] == kind]


# --------------------------------------------------------------------------- defect 1


def test_an_archive_never_deletes_earlier_imports(archive: Path, tmp_path: Path) -> None:
    store, folder = tmp_path / "store", tmp_path / "archives"
    for key in ("first", "second"):  # no project: both land in the project "comet"
        crafted(archive, folder / f"{key}.zip", lambda e, m, f, key=key: {**e, "offline_id": key, "project_name": None})
        import_runs("comet", str(folder / f"{key}.zip"), dir=store)
    before = snapshot(store)
    assert [r.parent.name for r in runs(store)] == ["comet", "comet"]  # what the old target removed whole
    # Before the fix: the project became "" and the run id "comet": <store>/comet, removed whole.
    evil = crafted(archive, folder / "evil.zip", lambda e, m, f: {**e, "offline_id": "", "project_name": ".."})
    report = import_runs("comet", str(evil), dir=store)
    assert report.imported == [] and snapshot(store) == before
    assert any("offline_id" in line for line in report.problems), report.problems
    # A non-empty id of nothing but separators, in project "..": a new run, inside the store.
    dashes = crafted(archive, folder / "dashes.zip", lambda e, m, f: {**e, "offline_id": "-", "project_name": ".."})
    (run_dir,) = import_runs("comet", str(dashes), dir=store).imported
    assert run_dir.parent.parent == store and run_dir.parent.name == "comet"
    after = snapshot(store)
    assert {k: v for k, v in after.items() if k in before} == before


def test_a_logged_run_is_never_replaced_by_an_import(archive: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    mine = store / "crafted" / "comet-demo"  # the user's own run, named like an old import id
    (mine / "journal").mkdir(parents=True)
    (mine / "journal" / "000000000000.jsonl").write_text('{"type": "run_start"}\n')
    (mine / "run.json").write_text('{"run_id": "comet-demo"}')
    before = snapshot(store)
    demo = crafted(archive, tmp_path / "demo.zip", lambda e, m, f: {**e, "offline_id": "demo"})
    (run_dir,) = import_runs("comet", str(demo), dir=store).imported
    assert run_dir.name == source_run_id("comet", "demo") != mine.name
    assert {k: v for k, v in snapshot(store).items() if k in before} == before


def test_distinct_ids_never_collide(archive: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    long = "x" * 130
    ids = ["exp/1", "exp 1", long + "a", long + "b"]
    for index, key in enumerate(ids):
        crafted(archive, tmp_path / "a" / f"{index}.zip", lambda e, m, f, key=key: {**e, "offline_id": key})
    report = import_runs("comet", str(tmp_path / "a"), dir=store)
    assert len(report.imported) == 4 and report.skipped == []
    assert sorted(entries(r)[0]["tags"]["source_run_id"] for r in report.imported) == sorted(ids)


# --------------------------------------------------------------------------- defect 2


def test_upload_names_never_leave_the_run(archive: Path, tmp_path: Path) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")

    def change(experiment: dict[str, Any], messages: list[Any], members: dict[str, bytes]) -> list[Any]:
        model = uploads(messages, "model-element")[0]
        asset = uploads(messages, "asset")[0]
        evil = []
        for name in (str(outside / "abs.bin"), "../" * 12 + str(outside.relative_to("/")) + "/dots.bin"):
            evil.append({**model, "payload": {**model["payload"], "additional_params": {
                **model["payload"]["additional_params"], "fileName": name, "groupingName": "evil"}}})
        for name in ("d/../../../../escape.bin", ".."):
            evil.append({**asset, "payload": {**asset["payload"], "additional_params": {
                **asset["payload"]["additional_params"], "fileName": name}}})
        return messages + evil

    before = snapshot(tmp_path / "outside")
    report = import_runs("comet", str(crafted(archive, tmp_path / "evil.zip", change)), dir=store)
    assert snapshot(tmp_path / "outside") == before
    assert not list(tmp_path.rglob("*escape.bin")) and not (outside / "abs.bin").exists()
    (run_dir,) = report.imported  # the run is whole: its other records are there
    names = {e["name"] for e in entries(run_dir) if e["type"] == "artifact"}
    assert "weights.bin" in names and "mymodel" in names
    assert sum("skipped: evil.zip/messages.json:" in line for line in report.problems) >= 3, report.problems


# --------------------------------------------------------------------------- defect 3


def test_a_decompression_bomb_is_refused_in_bounded_memory(archive: Path, tmp_path: Path) -> None:
    def change(experiment: dict[str, Any], messages: list[Any], members: dict[str, bytes]) -> None:
        asset = uploads(messages, "asset")[0]
        members[asset["payload"]["file_path"]] = bytes(64 * MiB)  # ~64 KiB deflated

    bomb = crafted(archive, tmp_path / "bomb.zip", change)
    assert bomb.stat().st_size < 1 * MiB
    tracemalloc.start()
    try:
        report = import_runs("comet", str(bomb), dir=tmp_path / "store")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak  # before: the member was read whole, 64 MiB and more
    assert any("decompression bomb" in line for line in report.problems), report.problems
    assert max(p.stat().st_size for p in (tmp_path / "store").rglob("*") if p.is_file()) < MiB


def test_a_huge_line_of_blanks_costs_only_the_line_limit(archive: Path, tmp_path: Path) -> None:
    _, messages, members = read(archive)
    body = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    blanks = write(tmp_path / "blanks.zip", read(archive)[0], body + b" " * (24 * MiB) + b"\n", members)
    tracemalloc.start()
    try:
        report = import_runs("comet", str(blanks), dir=tmp_path / "store", limits=Limits(item_bytes=1 * MiB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak
    assert any("longer than 1048576 bytes" in line for line in report.problems), report.problems
    assert len(report.imported) == 1


def test_free_space_and_total_are_checked_before_writing(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(ImportRefused, match="more than 10 bytes"):
        import_runs("comet", str(archive), dir=tmp_path / "store", limits=Limits(total_bytes=10))
    assert runs(tmp_path / "store") == [] and not any((tmp_path / "store" / ".staging").iterdir())


# --------------------------------------------------------------------------- defects 5, 6, 7


def test_malformed_messages_are_skipped_and_reported(archive: Path, tmp_path: Path) -> None:
    secret = "sk-live-" + "9" * 24

    def change(experiment: dict[str, Any], messages: list[Any], members: dict[str, bytes]) -> list[Any]:
        bad = [metric_message(messages, metricValue={"x": 1}), metric_message(messages, metricName=None),
               ["a", "list"], metric_message(messages, step="ten"), metric_message(messages, step=1.5),
               metric_message(messages, metricName="api_key", metricValue=secret),
               {**metric_message(messages), "payload": {**metric_message(messages)["payload"],
                                                        "local_timestamp": "noon"}},
               {"type": "\x1b[31mred\x1b[0m", "payload": {}}]
        return messages[:2] + bad + messages[2:]

    report = import_runs("comet", str(crafted(archive, tmp_path / "bad.zip", change)), dir=tmp_path / "store")
    (run_dir,) = report.imported
    values = sorted(v for e in entries(run_dir) if e["type"] == "metrics" for v in e["values"].values())
    assert values == sorted(1.0 / (s + 1) for s in range(3))  # every good point, none rounded
    skipped = [line for line in report.problems if line.startswith("skipped: bad.zip/messages.json:")]
    assert len(skipped) == 7, report.problems
    assert any("step 1.5 is not an integer" in line for line in skipped)
    summary = report.summary()
    assert secret not in summary and "\x1b" not in summary and "?[31mred" in summary


def test_an_experiment_json_that_is_not_an_object(archive: Path, tmp_path: Path) -> None:
    listed = crafted(archive, tmp_path / "list.zip", lambda e, m, f: None)
    experiment, messages, members = read(listed)
    write(listed, [experiment], messages, members)
    report = import_runs("comet", str(listed), dir=tmp_path / "store")
    assert report.imported == [] and runs(tmp_path / "store") == []
    assert report.problems == ["skipped: list.zip/experiment.json: not an object with a non-empty offline_id; "
                               "the archive is skipped"]


def test_a_long_key_costs_only_itself(archive: Path, tmp_path: Path) -> None:
    def change(experiment: dict[str, Any], messages: list[Any], members: dict[str, bytes]) -> list[Any]:
        first = metric_message(messages)  # the same step and time as a good point
        param = next(m for m in messages if m["type"] == "parameter_msg")
        long_param = {**param, "payload": {**param["payload"], "param": {
            **(param["payload"].get("param") or {}), "paramName": "p" * 5000}}}
        return messages + [metric_message(messages, metricName="k" * 5000, step=first["payload"]["metric"]["step"]),
                           long_param]

    report = import_runs("comet", str(crafted(archive, tmp_path / "long.zip", change)), dir=tmp_path / "store")
    (run_dir,) = report.imported
    start, *rest = entries(run_dir)
    assert {"lr", "batch"} <= set(start["config"])
    assert len([e for e in rest if e["type"] == "metrics"]) == 3
    assert sum("'kkkk" in line for line in report.problems) == 1
    assert sum("'pppp" in line for line in report.problems) == 1


# --------------------------------------------------------------------------- property test

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, Any]]:
    kinds = st.sampled_from(["field", "experiment", "bytes", "truncate", "line", "zip"])
    return draw(st.lists(st.tuples(kinds, JSON), min_size=1, max_size=4))


def mutate(archive: Path, target: Path, steps: list[tuple[str, Any]], rng: Any) -> Path:
    experiment, messages, members = read(archive)
    raw: bytes | None = None
    for kind, value in steps:
        if kind == "field" and messages:
            message = messages[rng.randrange(len(messages))]
            payload = message.get("payload") if isinstance(message, dict) else None
            if isinstance(payload, dict) and payload:
                inner = payload[rng.choice(sorted(payload))]
                if isinstance(inner, dict) and inner:
                    inner[rng.choice(sorted(inner))] = value
                else:
                    payload[rng.choice(sorted(payload))] = value
        elif kind == "experiment":
            experiment[rng.choice(sorted(experiment))] = value
        elif kind == "line":
            messages.insert(rng.randrange(len(messages) + 1), value)
        elif kind in ("bytes", "truncate"):
            raw = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
            cut = rng.randrange(len(raw))
            raw = raw[:cut] if kind == "truncate" else raw[:cut] + bytes([rng.randrange(256)]) + raw[cut + 1:]
    written = write(target, experiment, raw if raw is not None else messages, members)
    for kind, _ in steps:
        if kind == "zip":  # a byte of the archive itself: headers, deflated data, directory
            data = bytearray(written.read_bytes())
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            written.write_bytes(bytes(data))
    return written


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=mutations(), seed=st.integers(0, 2**16))
def test_any_mutated_archive(archive: Path, tmp_path_factory: pytest.TempPathFactory,
                             steps: list[tuple[str, Any]], seed: int) -> None:
    """Memory bound: the process's peak RSS grows by less than 64 MiB (the archive is a few KiB;
    tracemalloc would make the examples several times slower)."""
    import random

    tmp = tmp_path_factory.mktemp("mutated")
    sibling = tmp / "sibling"
    sibling.mkdir()
    (sibling / "keep.txt").write_text("precious")
    source = mutate(archive, tmp / "src" / "run.zip", steps, random.Random(seed))
    before_outside = snapshot(sibling), snapshot(source.parent)
    peak = peak_rss()
    try:
        import_runs("comet", str(source), dir=tmp / "store")
    except (ImportRefused, FileNotFoundError):
        pass
    assert peak_rss() - peak < 64 * MiB
    assert (snapshot(sibling), snapshot(source.parent)) == before_outside
    store = snapshot(tmp / "store")
    try:
        again = import_runs("comet", str(source), dir=tmp / "store")
        assert again.imported == []
    except (ImportRefused, FileNotFoundError):
        pass
    assert snapshot(tmp / "store") == store
