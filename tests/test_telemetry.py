"""Run context and system telemetry (docs/telemetry.md): a real training process, its real console,
a real git checkout, psutil's and NVML's real readings.

The suite switches telemetry off (conftest.py); these tests switch it on through init's
arguments or, for subprocesses, their environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import loggerhub
from loggerhub import _normalize as norm
from loggerhub import codec
from loggerhub.journal import JournalReader
from loggerhub.telemetry import context as context_capture
from loggerhub.telemetry.system import Gpus, SystemSampler
from loggerhub_hookspecs.telemetry import GpuQuantity, SystemKey, gpu_key

SECRET = "wandb-secret-value-3141592653"
PASSWORD = "hunter2-not-shown"
ON = {"LOGGERHUB_SYSTEM_METRICS": "1", "LOGGERHUB_CONSOLE": "1", "LOGGERHUB_CAPTURE_CONTEXT": "1"}


def records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [entry.data for entry in JournalReader(run_dir).entries() if entry.type == kind]


def only_run(runs: Path) -> Path:
    (run_dir,) = [path.parent for path in runs.glob("*/*/journal")]
    return run_dir


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"})
    return done.stdout.strip()


def make_repo(repo: Path) -> str:
    """A git checkout as a user leaves it: one commit, a modified file, an untracked one."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "Test")
    (repo / "train.py").write_text("lr = 0.1\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", f"https://alice:{PASSWORD}@git.example.com/team/train.git")
    (repo / "train.py").write_text("lr = 0.2  # tuned\n")
    (repo / "notes.txt").write_text("untracked\n")
    return git(repo, "rev-parse", "HEAD")


TRAINING = """
import os, sys, time
import loggerhub
from tqdm import tqdm

run = loggerhub.init(project="p", dir={runs!r}, system_metrics_interval=1.0)
step = 0
deadline = time.time() + 2.5
while time.time() < deadline:
    run.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
    step += 1
    time.sleep(0.01)
before = step
# 200 MB, every page written (bytes * n fills it), held to the end.
held = b"\\x01" * (200 * 1024 * 1024)
step = 100_000
deadline = time.time() + 2.5
while time.time() < deadline:
    run.log_metrics({{"loss": 0.5}}, step=step)
    step += 1
    time.sleep(0.01)
print("hello from training", flush=True)
print("key is " + os.environ["WANDB_API_KEY"] + " and url https://bob:{password}@data.example.com/x", flush=True)
for _ in tqdm(range(20), mininterval=0, ascii=True):
    time.sleep(0.01)
os.system("echo from a child process")
raise RuntimeError("boom at the end")
"""


@pytest.mark.slow
def test_a_real_training_process(tmp_path: Path) -> None:
    """System series with plausible values (RSS grows by the 200 MB the script holds), the
    console with a print, a tqdm bar (last state only), a child's output and the traceback, all
    still on the terminal; the git checkout with its diff; secrets redacted; no GPU, no noise."""
    repo = tmp_path / "repo"
    commit = make_repo(repo)
    runs = tmp_path / "runs"
    script = repo / "train.py"
    script.write_text(TRAINING.format(runs=str(runs), password=PASSWORD))
    # Only the test's own allow-listed variable: earlier tests in this process may have set others
    # (the Keras tests set TF_CPP_MIN_LOG_LEVEL).
    from loggerhub.telemetry.context import ENVIRONMENT

    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env.update(ON, WANDB_API_KEY=SECRET, OMP_NUM_THREADS="3", MY_PRIVATE_THING="x")
    env.pop("PYTHONWARNINGS", None)
    # Bytes, decoded here: text=True would turn the bar's \r into newlines.
    raw = subprocess.run([sys.executable, str(script), f"--api-token={SECRET}x"], cwd=repo, env=env,
                         capture_output=True, timeout=300)
    done = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())
    assert done.returncode == 1, done.stderr[-3000:]
    run_dir = only_run(runs)

    # The terminal: everything, unchanged (the secret too: only the stored copy is redacted).
    assert "hello from training" in done.stdout and "from a child process" in done.stdout
    assert SECRET in done.stdout
    assert "20/20" in done.stderr and "\r" in done.stderr
    assert "RuntimeError: boom at the end" in done.stderr
    assert "nvml" not in done.stderr.lower() and "warning" not in done.stderr.lower(), done.stderr

    # System metrics: a sample about every second, wall time and training step attached.
    samples = records(run_dir, codec.SYSTEM_METRICS)
    assert len(samples) >= 4, samples
    for sample in samples:
        values = sample["values"]
        assert 0 <= values[SystemKey.CPU_PERCENT] <= 100
        assert 0 < values[SystemKey.MEMORY_PERCENT] <= 100
        assert values[SystemKey.MEMORY_USED_MB] > 0 and values[SystemKey.DISK_FREE_MB] > 0
        assert values[SystemKey.PROCESS_MEMORY_MB] > 10  # a Python process with numpy loaded
        assert not [key for key in values if key.startswith("system/gpu/")] or Gpus().handles
    assert max(s["values"][SystemKey.PROCESS_CPU_PERCENT] for s in samples) > 5  # it was busy
    before = [s["values"][SystemKey.PROCESS_MEMORY_MB] for s in samples if s["step"] < 100_000]
    after = [s["values"][SystemKey.PROCESS_MEMORY_MB] for s in samples if s["step"] > 100_000]
    assert before and after, [s["step"] for s in samples]
    assert max(after) - min(before) > 150, (before, after)

    # The console: complete lines per stream, cleaned and redacted.
    lines = {"stdout": [], "stderr": []}  # type: dict[str, list[str]]
    for record in records(run_dir, codec.CONSOLE):
        lines[record["stream"]].extend(record["lines"])
    assert "hello from training" in lines["stdout"]
    assert "from a child process" in lines["stdout"]
    bars = [line for line in lines["stderr"] if "/20 [" in line]
    assert len(bars) == 1 and "20/20" in bars[0] and "100%" in bars[0], bars
    assert "Traceback (most recent call last):" in lines["stderr"]
    assert "RuntimeError: boom at the end" in lines["stderr"]
    journal = "".join(path.read_text() for path in (run_dir / "journal").glob("*.jsonl"))
    assert SECRET not in journal and PASSWORD not in journal
    assert any(norm.REDACTED in line and "key is" in line for line in lines["stdout"])
    assert not any("\r" in line or "\x1b" in line for stream in lines.values() for line in stream)

    # The context, right after run_start.
    entries = list(JournalReader(run_dir).entries())
    assert [e.type for e in entries[:2]] == [codec.RUN_START, codec.CONTEXT]
    context = codec.run_context(entries[1].data, run_dir)
    assert context.command[-2:] == (str(script), f"--api-token={norm.REDACTED}")
    assert context.python_executable == sys.executable and context.hostname and context.cpu_count
    assert context.packages["psutil"] and "loggerhub" in {name.lower() for name in context.packages}
    assert context.environment == {"OMP_NUM_THREADS": "3"}
    assert context.git is not None
    assert context.git.commit == commit and context.git.branch == "main" and context.git.dirty
    assert context.git.remote == "https://git.example.com/team/train.git"
    assert context.git.untracked == ("notes.txt",)
    assert context.git.diff_path is not None and not context.git.diff_truncated
    diff = context.git.diff_path.read_text()  # the committed "lr = 0.1" replaced by the script
    assert "-lr = 0.1\n" in diff and '+raise RuntimeError("boom at the end")' in diff
    ends = records(run_dir, codec.RUN_END)
    assert ends[-1]["status"] == "FAILED" and "boom at the end" in ends[-1]["error"]["message"]


def test_switched_off_there_are_no_telemetry_records(tmp_path: Path) -> None:
    # The suite's environment has LOGGERHUB_SYSTEM_METRICS=0 etc. (conftest.py): the env switches.
    with loggerhub.init(project="p", dir=tmp_path / "env") as run:
        run.log_metrics({"x": 1.0}, step=0)
        os.write(1, b"not journaled\n")
    with loggerhub.init(project="p", dir=tmp_path / "args", capture_context=False, console=False,
                        system_metrics=False, flush_interval=0.05) as other:
        other.log_metrics({"x": 1.0}, step=0)
        os.write(2, b"not journaled either\n")
    for run_dir in (run.dir, other.dir):
        assert [e.type for e in JournalReader(run_dir).entries()] == ["run_start", "metrics", "run_end"]


def test_each_switch_alone(tmp_path: Path) -> None:
    with loggerhub.init(project="p", dir=tmp_path, capture_context=True) as run:
        pass
    assert {e.type for e in JournalReader(run.dir).entries()} == {"run_start", "context", "run_end"}
    with loggerhub.init(project="p", dir=tmp_path, system_metrics=True) as run:
        pass
    kinds = [e.type for e in JournalReader(run.dir).entries()]
    assert kinds == ["run_start", "system_metrics", "run_end"]  # the sample every run ends with
    with loggerhub.init(project="p", dir=tmp_path, console=True) as run:
        os.write(1, b"only this\n")
    assert [r["lines"] for r in records(run.dir, codec.CONSOLE)] == [["only this"]]


def test_resume_does_not_capture_the_context_again(tmp_path: Path) -> None:
    with loggerhub.init(project="p", dir=tmp_path, capture_context=True) as run:
        pass
    with loggerhub.init(project="p", dir=tmp_path, resume=run.dir, capture_context=True):
        pass
    assert len(records(run.dir, codec.CONTEXT)) == 1


def test_one_tee_per_process_and_fds_given_back(tmp_path: Path) -> None:
    before = [os.fstat(fd).st_ino for fd in (1, 2)]
    first = loggerhub.init(project="p", dir=tmp_path, console=True)
    assert [os.fstat(fd).st_ino for fd in (1, 2)] != before
    second = loggerhub.init(project="p", dir=tmp_path, console=True)
    os.write(1, b"seen once\n")
    second.finish()
    first.finish()
    assert [os.fstat(fd).st_ino for fd in (1, 2)] == before
    assert [r["lines"] for r in records(first.dir, codec.CONSOLE)] == [["seen once"]]
    assert records(second.dir, codec.CONSOLE) == []


STUCK = """
import os, sys, time, loggerhub
run = loggerhub.init(project="p", dir={runs!r})
# The journal stops taking anything (a hung disk, say): the console must still reach the terminal.
run._put = lambda item: time.sleep(3600)
for i in range(20000):
    print("line", i, "x" * 40)
sys.stdout.flush()
started = time.monotonic()
run.finish(timeout=0)
print("finished in", round(time.monotonic() - started), "s", file=sys.stderr)
"""


@pytest.mark.slow
def test_a_stuck_journal_never_stops_the_terminal(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(STUCK.format(runs=str(tmp_path / "runs")))
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, **ON}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.splitlines()
    assert len(printed) == 20000 and printed[-1].startswith("line 19999 ")  # all of it, in order
    assert "finished in" in done.stderr


def test_console_lines_are_cleaned() -> None:
    redactor = norm.Redactor({"SERVICE_TOKEN": "tok-123456789"})
    fields = codec.console_fields(
        "stderr",
        ["  0%|          | 0/3\r 33%|###       | 1/3\r100%|##########| 3/3",
         "\x1b[1;31merror\x1b[0m: bad \x1b]0;title\x07thing", "x" * 10_000, "two\nlines",
         "token tok-123456789 and postgres://u:pw@db/x"],
        4, redactor)
    assert fields["lines"][:2] == ["100%|##########| 3/3", "error: bad thing"]
    assert len(fields["lines"][2]) == codec.MAX_CONSOLE_LINE and fields["lines"][2].endswith(" [...]")
    assert fields["lines"][3:5] == ["two", "lines"]
    assert fields["lines"][5] == f"token {norm.REDACTED} and postgres://u:{norm.REDACTED}@db/x"
    with pytest.raises(norm.InvalidInput):
        codec.console_fields("stdin", ["x"], 0, redactor)


def test_context_fields_keep_secrets_out(tmp_path: Path) -> None:
    fields = codec.context_fields(
        command=["train.py"], python_version="3.11", python_executable="python", hostname="h", os="Linux",
        cpu="cpu", environment={"WORLD_SIZE": "2", "HF_TOKEN": "hf_abcdefgh"}, redactor=norm.Redactor({}),
        git={"commit": "a" * 40, "remote": "https://x-access-token:ghp_secret@github.com/o/r.git", "dirty": False})
    assert fields["environment"] == {"WORLD_SIZE": "2"}
    assert fields["git"]["remote"] == "https://github.com/o/r.git"
    assert codec.strip_userinfo("git@github.com:o/r.git") == "git@github.com:o/r.git"
    with pytest.raises(norm.InvalidInput):
        codec.context_fields(command=[], python_version="", python_executable="", hostname="", os="", cpu="",
                             git={"commit": "a" * 40, "diff_file": "../../etc/passwd"}, redactor=norm.Redactor({}))


def test_git_absent_or_no_repository_is_no_git_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert context_capture.git_state(tmp_path, tmp_path, norm.Redactor({})) is None  # not a repository
    repo = tmp_path / "repo"
    make_repo(repo)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git binary on PATH
    assert context_capture.git_state(repo, tmp_path, norm.Redactor({})) is None
    monkeypatch.undo()
    state = context_capture.git_state(repo, tmp_path / "run", norm.Redactor({}))
    assert state is not None and state["dirty"] and state["diff_file"] == codec.DIFF_FILE


def test_a_large_diff_is_cut(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    (repo / "train.py").write_text("".join(f"line {i} {'y' * 60}\n" for i in range(40_000)))
    state = context_capture.git_state(repo, tmp_path / "run", norm.Redactor({}))
    assert state is not None and state["diff_truncated"]
    diff = (tmp_path / "run" / codec.DIFF_FILE).read_bytes()
    assert len(diff) <= codec.MAX_DIFF_BYTES and diff.endswith(b"\n")


def test_without_nvml_there_are_no_gpu_series(tmp_path: Path) -> None:
    gpus = Gpus()
    if gpus.handles:
        pytest.skip("this machine has NVIDIA GPUs: test_gpu_series covers it")
    sampler = SystemSampler(tmp_path)
    time.sleep(0.2)
    values = sampler.sample()
    sampler.close()
    assert not [key for key in values if key.startswith("system/gpu/")]
    assert {SystemKey.CPU_PERCENT, SystemKey.PROCESS_MEMORY_MB, SystemKey.MEMORY_PERCENT} <= set(values)
    assert context_capture.capture(tmp_path, norm.Redactor({}), cwd=tmp_path)["gpus"] == []


def _nvml_reason() -> str | None:
    gpus = Gpus()
    try:
        return None if gpus.handles else "no NVIDIA GPU: NVML (nvidia-ml-py) did not load or found no device"
    finally:
        gpus.close()


@pytest.mark.gpu
def test_gpu_series(tmp_path: Path) -> None:
    reason = _nvml_reason()
    if reason:
        pytest.skip(reason)
    sampler = SystemSampler(tmp_path)
    values = sampler.sample()
    sampler.close()
    total = values[gpu_key(0, GpuQuantity.MEMORY_TOTAL_MB)]
    assert total > 1000  # MiB: every CUDA GPU has more than a GiB
    assert 0 <= values[gpu_key(0, GpuQuantity.MEMORY_USED_MB)] <= total
    assert 0 <= values[gpu_key(0, GpuQuantity.UTILIZATION_PERCENT)] <= 100
    assert 0 < values.get(gpu_key(0, GpuQuantity.TEMPERATURE_C), 50) < 120
    names = context_capture.capture(tmp_path, norm.Redactor({}), cwd=tmp_path)["gpus"]
    assert names and all(names)


def test_system_keys_must_be_under_system() -> None:
    assert codec.system_fields({"system/cpu_percent": 1}, 0) == {"values": {"system/cpu_percent": 1.0}, "step": 0}
    with pytest.raises(norm.InvalidInput):
        codec.system_fields({"cpu": 1.0}, 0)


def test_show_plot_and_the_report_read_the_telemetry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from loggerhub.cli import main
    from loggerhub.report.model import CONSOLE_KEY, RunData, build_model

    repo = tmp_path / "repo"
    commit = make_repo(repo)
    monkeypatch.chdir(repo)  # the context's git state is the working directory's
    with loggerhub.init(project="p", dir=tmp_path / "runs", capture_context=True, console=True,
                        system_metrics=True) as run:
        run.log_metrics({"loss": 0.5}, step=3)
        os.write(1, b"epoch 1 done\n")
    capsys.readouterr()
    assert main(["show", str(run.dir)]) == 0
    shown = capsys.readouterr().out
    assert f"git      {commit[:12]} on main, dirty, diff " in shown
    assert f"python   {sys.version.split()[0]}" in shown and "command  " in shown
    assert "console  1 stdout lines, 0 stderr lines" in shown and "out| epoch 1 done" in shown
    assert "system/process_memory_mb" in shown  # in the metrics table, like the loop's metrics
    assert main(["plot", str(run.dir), "system/cpu_percent", "-o", str(tmp_path / "cpu.png")]) == 0
    assert (tmp_path / "cpu.png").stat().st_size > 1000
    data = RunData(run.dir)
    data.update()
    model = build_model([data], lambda _run, _file: "")
    assert "system/memory_percent" in model["metrics"] and "loss" in model["metrics"]
    assert model["texts"][CONSOLE_KEY][run.dir.name][0]["text"] == "[stdout] epoch 1 done"


def test_an_adapter_run_carries_the_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters start their runs with loggerhub.init: the telemetry comes with it, no code of theirs."""
    pytest.importorskip("accelerate")
    from loggerhub.integrations.accelerate import LoggerhubTracker

    monkeypatch.setenv("LOGGERHUB_CAPTURE_CONTEXT", "1")
    monkeypatch.setenv("LOGGERHUB_SYSTEM_METRICS", "1")
    tracker = LoggerhubTracker(project="p", dir=tmp_path)
    tracker.start()
    tracker.log({"loss": 1.0}, step=0)
    tracker.finish()
    (run_dir,) = [path.parent for path in tmp_path.glob("*/*/journal")]
    kinds = [e.type for e in JournalReader(run_dir).entries()]
    assert kinds[:2] == ["run_start", "context"] and "system_metrics" in kinds


def test_run_builder_writes_the_telemetry_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What importers call: the same codec checks as the run's own telemetry, the diff written
    into the imported run, secrets kept out."""
    from loggerhub import importing
    from loggerhub_hookspecs.importers import Importer

    refused: list[str] = []

    class Telemetry(Importer):
        name = "telemetry"

        def read(self, source: Any, builder_factory: Any, options: Any) -> None:
            builder = builder_factory(source_id="r", name="r", started_at=1.0)
            with builder:
                builder.context(2.0, command=["train.py", "--lr", "0.1"], python_version="3.10.4",
                                hostname="node-1", environment={"WORLD_SIZE": "2", "WANDB_API_KEY": "k" * 20},
                                git={"commit": "b" * 40, "branch": "dev", "dirty": True,
                                     "remote": f"https://bob:{PASSWORD}@example.com/r.git"},
                                diff="--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
                builder.system_metrics({"system/cpu_percent": 50.0, "system/neptune_only_thing": 1.0}, 3, 3.0)
                builder.console("stdout", ["epoch 1\r", "done"], 3, 3.5)
                for bad in (lambda: builder.system_metrics({"cpu": 1.0}, 0, 1.0),
                            lambda: builder.console("stdin", ["x"], 0, 1.0),
                            lambda: builder.context(1.0, git={"commit": "not a hash"})):
                    with pytest.raises(norm.InvalidInput) as caught:
                        bad()
                    refused.append(str(caught.value))
                builder.end("FINISHED", 4.0)

    monkeypatch.setattr(importing, "_importer", lambda source: Telemetry())
    (run_dir,) = importing.import_runs("telemetry", str(tmp_path), dir=tmp_path / "store").imported
    assert len(refused) == 3
    entries = {e.type: e for e in JournalReader(run_dir).entries()}
    context = codec.run_context(entries[codec.CONTEXT].data, run_dir)
    assert context.environment == {"WORLD_SIZE": "2"} and context.hostname == "node-1"
    assert context.git is not None and context.git.remote == "https://example.com/r.git"
    assert context.git.diff_path is not None and context.git.diff_path.read_text().endswith("+b\n")
    assert codec.decode(entries[codec.CONSOLE], run_dir).lines == ("epoch 1", "done")
    points = codec.decode(entries[codec.SYSTEM_METRICS], run_dir)
    assert {(p.key, p.value, p.step, p.timestamp) for p in points} == {
        ("system/cpu_percent", 50.0, 3, 3.0), ("system/neptune_only_thing", 1.0, 3, 3.0)}


PTY_SCRIPT = """
import os, shutil, loggerhub
size = shutil.get_terminal_size()
run = loggerhub.init(project="p", dir={runs!r}, console=True)
during = (os.isatty(1), shutil.get_terminal_size() == size)
print("on the terminal")
run.finish()
print("RESULT", during, os.isatty(1), os.isatty(2), "COLUMNS" in os.environ)
"""


def test_on_a_real_terminal_the_size_is_kept_and_the_terminal_given_back(tmp_path: Path) -> None:
    """A pseudo-terminal, as an interactive shell has: while teed, fd 1 is a pipe but programs
    still find the terminal's width (tqdm's bars); after finish, fds 1 and 2 are the terminal again."""
    import pty

    script = tmp_path / "tty.py"
    script.write_text(PTY_SCRIPT.format(runs=str(tmp_path / "runs")))
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing of pytest runs here
        os.execve(sys.executable, [sys.executable, str(script)], {**os.environ, **ON})
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "on the terminal" in text
    assert "RESULT (False, True) True True False" in text, text
    (run_dir,) = [path.parent for path in (tmp_path / "runs").glob("*/*/journal")]
    assert [r["lines"] for r in records(run_dir, codec.CONSOLE)] == [["on the terminal"]]


def test_a_closed_stdout_is_not_teed(tmp_path: Path) -> None:
    script = tmp_path / "closed.py"
    script.write_text(textwrap.dedent(f"""
        import os, loggerhub
        os.close(1)
        with loggerhub.init(project="p", dir={str(tmp_path / "runs")!r}, console=True):
            os.write(2, b"to stderr\\n")
    """))
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, **ON}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "to stderr\n"
    run_dir = only_run(tmp_path / "runs")
    assert [(r["stream"], r["lines"]) for r in records(run_dir, codec.CONSOLE)] == [("stderr", ["to stderr"])]


SIGTERM_SCRIPT = """
import sys, time, loggerhub
run = loggerhub.init(project="p", dir={runs!r}, system_metrics_interval=0.5)
for step in range(10**9):
    run.log_metrics({{"loss": 1.0}}, step=step)
    if step == 50:
        print("ready", flush=True)
        print("partial line without a newline", end="", file=sys.stderr, flush=True)
    time.sleep(0.01)
"""


@pytest.mark.slow
def test_sigterm_ends_the_run_with_its_console_and_a_last_sample(tmp_path: Path) -> None:
    import signal

    script = tmp_path / "term.py"
    script.write_text(SIGTERM_SCRIPT.format(runs=str(tmp_path / "runs")))
    process = subprocess.Popen([sys.executable, str(script)], env={**os.environ, **ON}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(1.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    run_dir = only_run(tmp_path / "runs")
    entries = list(JournalReader(run_dir).entries())
    assert entries[-1].type == codec.RUN_END and entries[-1].data["status"] == "KILLED"
    assert entries[-2].type == codec.SYSTEM_METRICS  # the sample every run ends with, before run_end
    lines = [(r["stream"], line) for r in records(run_dir, codec.CONSOLE) for line in r["lines"]]
    assert ("stdout", "ready") in lines and ("stderr", "partial line without a newline") in lines
