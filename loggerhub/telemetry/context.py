"""The code and environment that produced a run, captured once at ``init``: the ``context`` record.

Everything here may fail without failing the run: a missing ``git`` binary, a directory that is
not a repository, a hung ``git`` (each call has a timeout) or an unreadable package leave that part
out (``git: null``, an empty ``cpu``), never an exception.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from loggerhub import _normalize as norm
from loggerhub import codec

#: The only environment variables recorded: what placed the process (devices, ranks, scheduler
#: job) and what changes numerics or threading. Any other variable, and any of these whose name
#: looks like a credential, stays out.
ENVIRONMENT = (
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION",
    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES", "SLURM_NTASKS",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF", "NCCL_DEBUG", "TF_CPP_MIN_LOG_LEVEL",
    "TF_FORCE_GPU_ALLOW_GROWTH", "XLA_PYTHON_CLIENT_PREALLOCATE", "VIRTUAL_ENV", "CONDA_DEFAULT_ENV",
)
GIT_TIMEOUT = 5.0
# An option whose name looks like a credential: its value (``--token=x`` or the next argument) is
# redacted from the recorded command line, whatever the environment holds.
_SECRET_OPTION = re.compile(r"^-{1,2}[\w.-]*(token|secret|passw(or)?d|api[_-]?key|apikey|credential|auth)[\w.-]*",
                            re.IGNORECASE)


def capture(run_dir: Path, redactor: norm.Redactor, cwd: Path | None = None) -> dict[str, Any]:
    """The ``context`` record's fields (see :func:`loggerhub.codec.context_fields`); the git diff,
    when the working tree is dirty, is written into ``run_dir``."""
    host = _host()
    return codec.context_fields(
        command=command_line(), python_version=platform.python_version(), python_executable=sys.executable,
        hostname=host["hostname"], os=host["os"], cpu=host["cpu"], cpu_count=host["cpu_count"],
        gpus=host["gpus"], packages=packages(), environment=environment(),
        git=git_state(Path.cwd() if cwd is None else cwd, run_dir, redactor), redactor=redactor)


def command_line() -> list[str]:
    """The command as typed (``sys.orig_argv``: the interpreter and its flags too), with the values
    of credential-like options replaced."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    cleaned, hide_next = [], False
    for arg in argv:
        match = _SECRET_OPTION.match(arg)
        if hide_next and not arg.startswith("-"):
            cleaned.append(norm.REDACTED)
        elif match and "=" in arg:
            cleaned.append(f"{arg.split('=', 1)[0]}={norm.REDACTED}")
        else:
            cleaned.append(arg)
        hide_next = bool(match) and "=" not in arg
    return cleaned


def environment() -> dict[str, str]:
    return {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}


@functools.lru_cache(maxsize=1)
def packages() -> dict[str, str]:
    """Installed distributions, as ``pip freeze`` lists them (the first of a name on ``sys.path``
    wins, as for imports). Read once per process."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        try:
            name, version = _name_and_version(dist)
        except Exception:  # noqa: BLE001, S112 - a broken .dist-info must not fail the run
            continue
        if name and version and name not in found:
            found[name] = version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _name_and_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    """The ``Name`` and ``Version`` fields of the metadata's header. ``dist.metadata`` runs the
    email parser over each whole file: ten times slower, over a second in ``init`` for a few
    hundred packages, for the same two fields (the header is ``Key: value`` lines, and these two
    never continue on a next line)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.split("\n\n", 1)[0].splitlines():
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
    return name, version


@functools.lru_cache(maxsize=1)
def _host() -> dict[str, Any]:
    from loggerhub.telemetry.system import gpu_names

    return {"hostname": socket.gethostname(), "os": platform.platform(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "gpus": gpu_names()}


def cpu_model() -> str:
    """The CPU's model name. ``platform.processor()`` has it on macOS and Windows; on Linux it is
    empty or the architecture, and the kernel's ``/proc/cpuinfo`` names the model."""
    name = platform.processor()
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
                for line in info:
                    key, _, value = line.partition(":")
                    if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                        return value.strip()
        except OSError:
            pass
    return name or platform.machine()


def _git(args: list[str], cwd: Path, limit: int | None = None) -> bytes | None:
    """One git command's output, or None when git is missing, fails, or outlives its timeout.
    ``limit``: read at most this many bytes (and one more, to tell a cut)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    command = ["git", "--no-pager", *args]
    try:
        if limit is None:
            done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, timeout=GIT_TIMEOUT, check=False)
            return done.stdout if done.returncode == 0 else None
        # A diff can be huge: read what is kept and stop git, rather than buffer all of it.
        with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as process:
            assert process.stdout is not None
            data = _read_with_timeout(process, limit + 1)
            process.kill()
            return data
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _read_with_timeout(process: subprocess.Popen[bytes], limit: int) -> bytes | None:
    import threading

    chunks: list[bytes] = []

    def read() -> None:
        assert process.stdout is not None
        size = 0
        while size < limit and (chunk := process.stdout.read(min(65536, limit - size))):
            chunks.append(chunk)
            size += len(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(GIT_TIMEOUT)
    if reader.is_alive():
        process.kill()
        return None
    return b"".join(chunks)


def git_state(cwd: Path, run_dir: Path, redactor: norm.Redactor) -> dict[str, Any] | None:
    """The git checkout ``cwd`` is in: commit, branch, remote (credentials stripped), dirty flag,
    untracked files, and ``git diff HEAD`` written into ``run_dir`` when dirty; None outside a
    repository, before its first commit, or without git."""
    status = _git(["status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"], cwd)
    if status is None:
        return None
    commit, branch, dirty, untracked = None, None, False, []
    for item in status.decode("utf-8", "surrogateescape").split("\0"):
        if item.startswith("# branch.oid "):
            commit = item.split(" ", 2)[2]
        elif item.startswith("# branch.head "):
            head = item.split(" ", 2)[2]
            branch = None if head == "(detached)" else head
        elif item.startswith("? "):
            untracked.append(item[2:])
        elif item[:2] in ("1 ", "2 ", "u "):
            dirty = True
    if commit is None or not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        return None  # "(initial)": no commit yet
    state: dict[str, Any] = {"commit": commit, "branch": branch, "remote": _remote(cwd),
                             "dirty": dirty or bool(untracked), "untracked": untracked[:codec.MAX_UNTRACKED],
                             "diff_file": None, "diff_truncated": False}
    if dirty:
        diff = _git(["diff", "HEAD", "--no-color", "--no-ext-diff"], cwd, limit=codec.MAX_DIFF_BYTES)
        if diff:
            try:
                state["diff_file"], state["diff_truncated"] = codec.write_diff(run_dir, diff, redactor)
            except OSError:
                pass  # the diff is a bonus; the commit and the dirty flag are recorded anyway
    return state


def _remote(cwd: Path) -> str | None:
    listing = _git(["remote"], cwd)
    names = listing.decode("utf-8", "replace").split() if listing else []
    if not names:
        return None
    url = _git(["remote", "get-url", "origin" if "origin" in names else names[0]], cwd)
    return codec.strip_userinfo(url.decode("utf-8", "replace").strip()) if url else None
