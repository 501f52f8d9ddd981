"""``loggerhub import tensorboard`` on crafted event files (issue 15): a logdir written by
TensorBoard's own event writer and by loggerhub's TensorBoard backend, then mutated. Nothing
outside the store may change or be read, memory stays bounded, and every refused record is
reported with its file and record number."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loggerhub
from loggerhub.importing import import_runs
from loggerhub.journal import JournalReader
from loggerhub_hookspecs.importers import ImportRefused

MiB = 1 << 20
SECRET = b"the content of a file outside the logdir"
#: write_events' scalars as TensorBoard keeps them (float32, shortest round-trip decimal).
LOSSES = [0.33333334, 0.5, 1.0]


def write_events(folder: Path, steps: int = 3) -> Path:
    """A run as TensorBoard's own EventFileWriter writes it: scalars and a text summary."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.text import summary_v2 as text_summary  # noqa: F401 - the plugin's proto shape
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    folder.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder))
    for step in range(steps):
        value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
        writer.add_event(event_pb2.Event(wall_time=1_700_000_000.0 + step, step=step,
                                         summary=summary_pb2.Summary(value=[value])))
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    text = summary_pb2.Summary.Value(tag="notes", metadata=metadata,
                                     tensor=tensor_util.make_tensor_proto(["hello"]))
    writer.add_event(event_pb2.Event(wall_time=1_700_000_010.0, step=1, summary=summary_pb2.Summary(value=[text])))
    writer.close()
    (found,) = folder.glob("*tfevents*")
    return found


def record(data: bytes) -> bytes:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


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


def entries(run_dir: Path) -> list[dict[str, Any]]:
    return [e.data for e in JournalReader(run_dir).entries()]


def losses(run_dir: Path) -> list[float]:
    return sorted(v for e in entries(run_dir) if e["type"] == "metrics" for v in e["values"].values())


# --------------------------------------------------------------------------- defect 5


@pytest.mark.parametrize("bad, reason", [
    (record(b"\xff\xfe garbage that is no Event"), "an unreadable event: DecodeError"),
    (struct.pack("<Q", 2**62) + b"\x00" * 8, "a record longer than"),
], ids=["garbage with a valid CRC", "length 2**62"])
def test_a_bad_record_is_skipped_and_reported(tmp_path: Path, bad: bytes, reason: str) -> None:
    events = write_events(tmp_path / "logs" / "run")
    with events.open("ab") as out:
        out.write(bad)
    report = import_runs("tensorboard", str(tmp_path / "logs"), dir=tmp_path / "store")
    (run_dir,) = report.imported
    assert losses(run_dir) == LOSSES
    assert any(line.startswith(f"skipped: run/{events.name}:6: {reason}") for line in report.problems), \
        report.problems


def test_a_huge_tensor_of_a_tiny_file_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    events = write_events(tmp_path / "logs" / "run")
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=10**8)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[b"x"])
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    event = event_pb2.Event(wall_time=1_700_000_020.0, step=2, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag="bomb", metadata=metadata, tensor=tensor)]))
    data = event.SerializeToString()
    assert len(data) < 200
    with events.open("ab") as out:
        out.write(record(data))
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = import_runs("tensorboard", str(tmp_path / "logs"), dir=tmp_path / "store")
    # Before: TensorBoard decoded it to 1e8 strings, past 3 GB.
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) * 1024 < 256 * MiB
    (run_dir,) = report.imported
    assert losses(run_dir) == LOSSES
    assert [e["text"] for e in entries(run_dir) if e["type"] == "text"] == ["hello"]
    assert any("a tensor of more than" in line for line in report.problems), report.problems


# --------------------------------------------------------------------------- defect 4


def test_symlinks_out_of_the_logdir_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    files = tmp_path / "files"
    files.mkdir()
    (files / "model.bin").write_bytes(b"weights")
    (files / "notes.txt").write_bytes(b"notes")
    logdir = tmp_path / "logs"
    with loggerhub.init(project="p", name="linked", dir=tmp_path / "runs", backends=["tensorboard"],
                        options={"tensorboard": {"logdir": str(logdir / "{run_id}")}}, drain_timeout=120) as run:
        run.log_metrics({"loss": 1.0}, step=0)
        run.log_artifact(files / "model.bin")
        run.log_artifact(files / "notes.txt")
    (folder,) = [p for p in logdir.iterdir() if p.is_dir()]
    copy = folder / "artifacts" / "notes.txt"
    assert copy.is_file()
    copy.unlink()
    copy.symlink_to(outside / "secret.txt")
    (folder / "elsewhere.tfevents.1.x").symlink_to(outside / "secret.txt")  # an "event file" outside
    report = import_runs("tensorboard", str(logdir), dir=tmp_path / "store")
    store = tmp_path / "store"
    assert not any(SECRET in p.read_bytes() for p in store.rglob("*") if p.is_file() and not p.is_symlink())
    (run_dir,) = report.imported
    assert [e["name"] for e in entries(run_dir) if e["type"] == "artifact"] == ["model.bin"]
    assert sum(": OutsideSource: " in line or "not read: " in line for line in report.problems) == 2, \
        report.problems


# --------------------------------------------------------------------------- property test


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_events(tmp_path_factory.mktemp("tb-real") / "logs" / "run", steps=5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "length"]), st.binary(max_size=40)),
                      min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_any_mutated_event_file(events: Path, tmp_path_factory: pytest.TempPathFactory,
                                steps: list[tuple[str, bytes]], seed: int) -> None:
    """Memory bound: the process's peak RSS grows by less than 64 MiB (the file is a few hundred bytes)."""
    import resource

    rng = random.Random(seed)
    tmp = tmp_path_factory.mktemp("mutated")
    sibling = tmp / "sibling"
    sibling.mkdir()
    (sibling / "keep.txt").write_text("precious")
    logdir = tmp / "logs"
    shutil.copytree(events.parent.parent, logdir)
    target = logdir / "run" / events.name
    data = bytearray(target.read_bytes())
    for kind, payload in steps:
        at = rng.randrange(len(data) + 1)
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = record(payload)
        elif kind == "length":
            data[at:at] = struct.pack("<Q", rng.choice([2**62, 2**31, 10**9])) + payload[:4]
    target.write_bytes(bytes(data))
    before = snapshot(sibling), snapshot(logdir)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        import_runs("tensorboard", str(logdir), dir=tmp / "store")
    except (ImportRefused, FileNotFoundError):
        pass
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) * 1024 < 64 * MiB
    assert (snapshot(sibling), snapshot(logdir)) == before
    store = snapshot(tmp / "store")
    try:
        assert import_runs("tensorboard", str(logdir), dir=tmp / "store").imported == []
    except (ImportRefused, FileNotFoundError):
        pass
    assert snapshot(tmp / "store") == store
