"""Console output and run context, in the places MLflow's own client uses for them.

Imported only by the delivery process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path
from typing import Any

from loggerhub_hookspecs import ConsoleRecord, RunContext

CONSOLE_FOLDER = "console"
CONTEXT_FOLDER = "context"
REQUIREMENTS_FILE = "requirements.txt"
DIFF_FILE = "git.diff"
CONTEXT_FILE = "context.json"
#: A console artifact is uploaded whole after every record (MLflow replaces artifacts, it does
#: not append), so the text is split in parts of at most this size: a long run re-uploads one
#: part, never all of its output. Parts: ``stdout.log``, ``stdout-2.log``, ``stdout-3.log``, ...
CONSOLE_PART_BYTES = 1 << 20

MAX_TAG_VALUE_LENGTH = 8000

#: MLflow's own tag names (``mlflow.utils.mlflow_tags``), as its run context providers set them.
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_BRANCH_TAG = "mlflow.source.git.branch"
GIT_REPO_URL_TAG = "mlflow.source.git.repoURL"
GIT_DIRTY_TAG = "mlflow.source.git.dirty"
HOST_TAG = "loggerhub.host"
OS_TAG = "loggerhub.os"
PYTHON_TAG = "loggerhub.python"
PYTHON_EXECUTABLE_TAG = "loggerhub.python_executable"
CPU_TAG = "loggerhub.cpu"
CPU_COUNT_TAG = "loggerhub.cpu_count"
GPUS_TAG = "loggerhub.gpus"


def context_tags(context: RunContext) -> dict[str, str]:
    """MLflow's source and git tags, and the host fields as ``loggerhub.*`` tags."""
    tags = {
        SOURCE_NAME_TAG: shlex.join(context.command),
        # What MLflow's default context provider sets for a script run on this machine.
        SOURCE_TYPE_TAG: "LOCAL",
        HOST_TAG: context.hostname,
        OS_TAG: context.os,
        PYTHON_TAG: context.python_version,
        PYTHON_EXECUTABLE_TAG: context.python_executable,
        CPU_TAG: context.cpu,
        CPU_COUNT_TAG: "" if context.cpu_count is None else str(context.cpu_count),
        GPUS_TAG: ", ".join(context.gpus),
    }
    git = context.git
    if git is not None:
        tags[GIT_COMMIT_TAG] = git.commit
        tags[GIT_BRANCH_TAG] = git.branch or ""
        tags[GIT_REPO_URL_TAG] = git.remote or ""
        tags[GIT_DIRTY_TAG] = str(git.dirty).lower()
    return {name: value[:MAX_TAG_VALUE_LENGTH] for name, value in tags.items() if value}


def context_document(context: RunContext) -> dict[str, Any]:
    """The whole context, for ``context/context.json``: what no tag holds (packages, the
    allow-listed environment, untracked files) included."""
    git = context.git
    return {
        "command": list(context.command), "python_version": context.python_version,
        "python_executable": context.python_executable, "hostname": context.hostname,
        "os": context.os, "cpu": context.cpu, "cpu_count": context.cpu_count, "gpus": list(context.gpus),
        "packages": dict(context.packages), "environment": dict(context.environment),
        "timestamp": context.timestamp,
        "git": None if git is None else {
            "commit": git.commit, "branch": git.branch, "remote": git.remote, "dirty": git.dirty,
            "untracked": list(git.untracked), "diff_truncated": git.diff_truncated,
            "diff_file": f"{CONTEXT_FOLDER}/{DIFF_FILE}" if git.diff_path is not None else None,
        },
    }


class ConsoleCopy:
    """The console output delivered so far, one file per stream part, kept beside the journal.

    The copy is what gets uploaded, so a redelivered record must not reach it twice. Records of
    one stream arrive in journal order, and a redelivery repeats the last ones first, so the
    copy remembers the newest record's time and the digests of the records at that time. The
    file's length before each append is remembered too: a process that died after appending but
    before remembering cuts the file back first, and appends once.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def append(self, record: ConsoleRecord) -> Path:
        """Append ``record`` (unless the copy holds it already); returns the part to upload."""
        self.folder.mkdir(parents=True, exist_ok=True)
        marks_file = self.folder / f"{record.stream}.json"
        try:
            marks = json.loads(marks_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            marks = {"part": 1, "size": 0, "ts": None, "digests": []}
        part = self._part(record.stream, marks["part"])
        digest = hashlib.sha256("\n".join(record.lines).encode("utf-8", "surrogatepass")).hexdigest()
        if marks["ts"] is not None and (record.timestamp < marks["ts"] or
                                        (record.timestamp == marks["ts"] and digest in marks["digests"])):
            return part
        text = "".join(line + "\n" for line in record.lines).encode("utf-8", "surrogateescape")
        if marks["size"] and marks["size"] + len(text) > CONSOLE_PART_BYTES:
            marks.update(part=marks["part"] + 1, size=0)
            part = self._part(record.stream, marks["part"])
        with open(part, "ab") as handle:
            handle.truncate(marks["size"])
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        digests = marks["digests"] if record.timestamp == marks["ts"] else []
        marks.update(size=marks["size"] + len(text), ts=record.timestamp, digests=[*digests, digest])
        tmp = marks_file.with_name(marks_file.name + ".tmp")
        tmp.write_text(json.dumps(marks), encoding="utf-8")
        os.replace(tmp, marks_file)
        return part

    def _part(self, stream: str, number: int) -> Path:
        return self.folder / (f"{stream}.log" if number == 1 else f"{stream}-{number}.log")
