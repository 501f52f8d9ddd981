"""The offline reader on hand-written containers (the format neptune 1.14 writes, see offline.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from loggerhub_neptune import offline


def write(folder: Path, name: str, ops: list[dict[str, Any]], first_version: int = 1) -> None:
    lines = [json.dumps({"obj": op, "version": first_version + i, "at": 1.0}) for i, op in enumerate(ops)]
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def container(tmp_path: Path, cid: str = "c1") -> Path:
    folder = tmp_path / ".neptune" / "offline" / f"run__{cid}__1__abc"
    (folder / "upload_path").mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"containerId": cid, "createdAt": cid}))
    return folder


def test_replay(tmp_path: Path) -> None:
    folder = container(tmp_path)
    png = base64.b64encode(b"png").decode()
    write(folder, "data-1.log", [
        {"type": "AssignInt", "path": ["parameters", "lr"], "value": 1},
        {"type": "LogFloats", "path": ["loss"], "values": [{"value": 1.0, "step": 0, "ts": 5.0}]},
        {"type": "LogImages", "path": ["img"],
         "values": [{"value": {"data": png, "name": "n", "description": None}, "step": 1, "ts": 6.0}]},
        {"type": "AddStrings", "path": ["sys", "tags"], "values": ["b", "a"]},
        {"type": "UploadFileSet", "path": ["set"], "file_globs": ["/x/*"], "reset": "False"},
    ])
    # A second log file continues the versions; the last line was cut off by a crash.
    write(folder, "data-6.log", [
        {"type": "DeleteAttribute", "path": ["parameters", "lr"]},
        {"type": "AssignFloat", "path": ["parameters", "lr"], "value": 0.5},
        {"type": "LogFloats", "path": ["loss"], "values": [{"value": 0.5, "step": 1, "ts": 7.0}]},
        {"type": "UploadFileSet", "path": ["set"], "file_globs": ["/y"], "reset": "True"},
        {"type": "RemoveStrings", "path": ["sys", "tags"], "values": ["b"]},
        {"type": "UploadFile", "path": ["f"], "ext": "csv", "file_path": None, "tmp_file_name": "t.csv"},
        {"type": "SomethingNew", "path": ["new"]},
    ], first_version=6)
    with (folder / "data-6.log").open("a") as log:
        log.write('{"obj": {"type": "AssignInt", "pa')
    (folder / "data-10.log").write_text("")  # sorted numerically, not as text

    fields = offline.read_container(folder)["fields"]
    assert fields["parameters/lr"] == {"type": "float", "value": 0.5}
    assert fields["loss"]["values"] == [
        {"step": 0, "ts": 5.0, "value": 1.0}, {"step": 1, "ts": 7.0, "value": 0.5}]
    assert fields["img"]["values"] == [
        {"step": 1, "ts": 6.0, "name": "n", "description": None, "data": b"png"}]
    assert fields["sys/tags"] == {"type": "string_set", "values": ["a"]}
    assert fields["set"] == {"type": "file_set", "globs": ["/y"]}
    assert fields["f"] == {"type": "file", "ext": "csv", "path": str(folder / "upload_path" / "t.csv")}
    assert fields["new"]["type"] == "unknown"
    assert [op["version"] for op in offline.read_operations(folder)] == list(range(1, 13))


def test_runs_and_parts(tmp_path: Path) -> None:
    for cid, run_id, part, step in [("c1", "r", 1, 0), ("c2", "other", 1, 0), ("c3", "r", 2, 1)]:
        write(container(tmp_path, cid), "data-1.log", [
            {"type": "AssignString", "path": ["loggerhub", "run_id"], "value": run_id},
            {"type": "AssignInt", "path": ["loggerhub", "part"], "value": part},
            {"type": "LogFloats", "path": ["x"], "values": [{"value": 1.0, "step": step, "ts": 1.0}]},
        ])
    assert [offline.container_id(c) for c in offline.find_containers(tmp_path)] == ["c1", "c2", "c3"]
    assert offline.find_containers(tmp_path / ".neptune") == offline.find_containers(tmp_path)
    parts = offline.read_run(tmp_path, "r")
    assert [p["container_id"] for p in parts] == ["c1", "c3"]
    assert [v["step"] for v in offline.merge_parts(parts)["x"]["values"]] == [0, 1]
    assert offline.find_containers(tmp_path / "missing") == []


def test_file_set_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / "sub" / "b.txt").write_text("b")
    files = offline.file_set_files({"type": "file_set", "globs": [str(tmp_path / "d")]})
    assert sorted(files) == ["a.txt", "sub/b.txt"]
    files = offline.file_set_files({"type": "file_set", "globs": [str(tmp_path / "d" / "**" / "*.txt")]})
    assert sorted(files) == ["a.txt", "sub/b.txt"]
