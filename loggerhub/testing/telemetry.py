"""A finished run whose journal holds every telemetry record with known values, for a backend's
tests of where system metrics, console lines and the run context land in its tracker.

The run's own producers are off and the records are put with the codec's builders, as the
producers put them: the producers sample the real machine on timers, and such a test needs exact
values to compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import loggerhub
from loggerhub import codec
from loggerhub.run import Run

#: The wall time of the records: the context at T0, sample i at T0 + 10 (i + 1), the console
#: lines at T0 + 11 (stdout, step 1) and T0 + 12 (stderr, step 1).
T0 = 1.7e9
REQUIREMENTS = {"numpy": "2.1.0", "torch": "2.5.1"}
DIFF = "diff --git a/train.py b/train.py\n+print('changed')\n"
STDOUT = ["epoch 1", "loss 0.5"]
STDERR = ["warning: slow"]


def put_telemetry(run: Run, samples: Sequence[Mapping[str, float]]) -> None:
    """Journal a context with a dirty git checkout, ``samples`` as system metrics (sample i at
    step i), and console lines of both streams."""
    context = codec.context_fields(
        command=["train.py", "--lr", "0.1"], python_version="3.11.9", python_executable="/usr/bin/python3",
        hostname="node-7", os="Linux-6.1-x86_64", cpu="x86_64", cpu_count=8, gpus=["NVIDIA A100"],
        packages=REQUIREMENTS, environment={"CUDA_VISIBLE_DEVICES": "0"},
        git={"commit": "a" * 40, "branch": "main", "remote": "https://example.org/team/repo.git",
             "dirty": True, "untracked": ["notes.txt"], "diff_file": None, "diff_truncated": False},
        redactor=run._redactor)
    diff_file, truncated = codec.write_diff(run.dir, DIFF, run._redactor)
    context["git"].update(diff_file=diff_file, diff_truncated=truncated)
    run._put((codec.CONTEXT, T0, context))
    for i, values in enumerate(samples):
        run._put((codec.SYSTEM_METRICS, T0 + 10 * (i + 1), codec.system_fields(values, i)))
    run._put((codec.CONSOLE, T0 + 11, codec.console_fields("stdout", STDOUT, 1, run._redactor)))
    run._put((codec.CONSOLE, T0 + 12, codec.console_fields("stderr", STDERR, 1, run._redactor)))


def telemetry_run(root: Path, samples: Sequence[Mapping[str, float]], **init: Any) -> Run:
    """A finished run under ``root`` (local backend only) holding :func:`put_telemetry`'s records;
    ``init``: more ``loggerhub.init`` arguments (``per_rank``, ``group``, ...)."""
    with loggerhub.init(project="telemetry", name="tele", dir=root, backends=["local"],
                        system_metrics=False, console=False, capture_context=False, **init) as run:
        put_telemetry(run, samples)
    return run
