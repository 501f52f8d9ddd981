"""Every code block of README.md runs as written, or says why it cannot, right before it.

A block is skipped only when an HTML comment ``<!-- not-run: REASON -->`` is the line right before
it. The blocks run in order, in one temporary directory, as a new user pastes them: the python
blocks with this interpreter, the shell blocks with bash (``loggerhub`` on PATH), and each TOML
block as the ``loggerhub.toml`` it shows, loaded by loggerhub's own settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
RUNNABLE = {"python", "bash", "toml"}


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, when the block is marked not-run


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start, body = index, []
        index += 1
        while not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        skip = SKIP.match(lines[start - 1]) if start else None
        blocks.append(Block(start + 1, match.group(1), "\n".join(body) + "\n",
                            skip.group(1).strip() if skip else None))
        index += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_blocks_to_run() -> None:
    runnable = [b for b in BLOCKS if b.lang in RUNNABLE and b.skip is None]
    assert {b.lang for b in runnable} == RUNNABLE
    assert len(runnable) >= 4


def test_every_skip_has_a_reason_and_a_block() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    markers = [i for i, line in enumerate(lines) if "not-run" in line]
    assert markers, "the README marks its blocks that cannot run here"
    for i in markers:
        match = SKIP.match(lines[i])
        assert match and match.group(1).strip(), f"README.md:{i + 1}: a not-run marker needs a reason"
        assert FENCE.match(lines[i + 1]), f"README.md:{i + 1}: a not-run marker goes right before its block"


def test_every_block_is_run_or_skipped_for_a_reason() -> None:
    for block in BLOCKS:
        if block.lang in RUNNABLE or block.skip:
            continue
        # A block with no language is output shown to the reader (a message, a tree), never code.
        assert block.lang == "", f"README.md:{block.line}: a {block.lang} block is neither run nor marked not-run"


def _environment(tmp_path: Path) -> dict[str, str]:
    # A new user's shell: loggerhub's CLI on PATH, no settings or tracker credentials from this one.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOGGERHUB_", "MLFLOW_", "NEPTUNE_", "COMET_", "WANDB_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["HOME"] = str(tmp_path / "home")  # no ~/.comet.config or other per-user tracker settings
    (tmp_path / "home").mkdir()
    return env


def _run(block: Block, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if block.lang == "python":
        script = workdir / f"readme_block_{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, script.name]
    elif block.lang == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:  # toml: the loggerhub.toml it shows must load
        config = workdir / "toml" / str(block.line)
        config.mkdir(parents=True)
        (config / "loggerhub.toml").write_text(block.code, encoding="utf-8")
        command = [sys.executable, "-c", "from loggerhub.config import Settings; print(Settings())"]
        workdir = config
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def test_readme_blocks_run_in_order(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    ran = []
    for block in BLOCKS:
        if block.lang not in RUNNABLE or block.skip:
            continue
        result = _run(block, workdir, env)
        assert result.returncode == 0, (
            f"README.md:{block.line} ({block.lang}) failed with {result.returncode}:\n"
            f"{block.code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )
        ran.append(block.line)
    assert len(ran) >= 4
    # What the quickstart logged is what the CLI block browsed and plotted.
    assert (workdir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    runs = sorted(p.parent.name for p in (workdir / "loggerhub-runs").glob("*/*/journal"))
    assert any(name.startswith("exp-1-") for name in runs) and any(name.startswith("yolo-s-") for name in runs)


@pytest.mark.parametrize("text, reason", [
    ("<!-- not-run: needs an MLflow server -->\n```python\nx\n```\n", "needs an MLflow server"),
    ("```python\nx\n```\n", None),
])
def test_the_parser_reads_markers(text: str, reason: str | None) -> None:
    assert [(b.lang, b.code, b.skip) for b in readme_blocks(text)] == [("python", "x\n", reason)]
