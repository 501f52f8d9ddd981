"""docs/plugin-guide.md builds a working plugin: its files pass the conformance suite.

The guide's blocks titled with a path (```python title="src/...") are written into an empty
project folder. Instead of ``pip install -e .`` (slow, and it would change this virtualenv), the
project is registered the way pip registers it: a ``.dist-info`` with the entry points of the
guide's own pyproject.toml, and the project's ``src/`` on the path, like an editable install. The
guide's conformance subclass then runs under pytest in a subprocess (delivery processes inherit the
path), and the guide's usage example runs against the installed plugin.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

GUIDE = Path(__file__).parents[1] / "docs" / "plugin-guide.md"
BLOCK = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```$', re.MULTILINE | re.DOTALL)


def guide_blocks() -> list[tuple[str, str | None, str]]:
    """``(language, title, code)`` of every fenced block with a language, in order."""
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))]


def _project(root: Path) -> Path:
    project = root / "loggerhub-jsonl"
    for _lang, title, code in guide_blocks():
        if title:
            path = project / title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code, encoding="utf-8")
    return project


def _register(project: Path, site: Path) -> None:
    """What ``pip install -e project`` leaves in site-packages, from the project's own metadata."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist_info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n", encoding="utf-8")
    groups = meta.get("entry-points", {})
    (dist_info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
                for group, points in groups.items()),
        encoding="utf-8")
    (dist_info / "RECORD").write_text("", encoding="utf-8")


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = _project(tmp_path)
    site = tmp_path / "site"
    _register(project, site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGGERHUB_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(project / "src"), env.get("PYTHONPATH", "")])
    env["MPLBACKEND"] = "Agg"
    return project, env


def test_the_guide_has_every_file_of_the_project() -> None:
    titles = {title for _lang, title, _code in guide_blocks() if title}
    assert titles == {"pyproject.toml", "src/loggerhub_jsonl/__init__.py", "src/loggerhub_jsonl/session.py",
                      "tests/test_conformance.py"}


def test_the_guide_plugin_is_discovered_and_light(installed: tuple[Path, dict[str, str]]) -> None:
    project, env = installed
    code = ("import sys\nfrom loggerhub.plugins import installed_backends\n"
            "backend = installed_backends()['jsonl']\n"
            "print(backend.distribution, backend.version)\n"
            "plugin = backend.load()\n"
            "print(type(plugin).__name__, plugin.loggerhub_client_version(),"
            " 'loggerhub_jsonl.session' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["loggerhub-jsonl 0.1.0", "JsonlBackend 0.1.0 False"]


def test_the_guide_plugin_passes_the_conformance_suite(installed: tuple[Path, dict[str, str]]) -> None:
    project, env = installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", "-W", "error::loggerhub.run.LoggerhubWarning"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 10, result.stdout[-2000:]
    assert not re.search(r"\d+ (failed|skipped|error)", result.stdout), result.stdout[-2000:]


def test_the_guide_usage_example_runs(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _project_dir, env = installed
    examples = [code for lang, title, code in guide_blocks() if lang == "python" and not title]
    assert len(examples) == 1
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run([sys.executable, "-c", examples[0]], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (records,) = (workdir / "jsonl-runs").glob("*/records.jsonl")
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [line["kind"] for line in lines[:2]] + [lines[-1]["kind"]] == ["start", "metrics", "end"]
    assert lines[1]["points"] == [["loss", 0, 0.5]]
    # The run's system metric samples (at least the one taken at the end) reach log_metrics too:
    # the session does not place them natively (log_system_metrics).
    samples = lines[2:-1]
    assert samples and all(line["kind"] == "metrics" for line in samples)
    assert all(key.startswith("system/") for line in samples for key, _step, _value in line["points"])


def test_every_block_the_test_does_not_run_says_why() -> None:
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    fences = [i for i, line in enumerate(lines) if re.match(r"^```\w", line)]
    assert fences
    for i in fences:
        if 'title="' in lines[i] or lines[i] == "```python":
            continue  # written into the project, or run as the usage example
        reason = re.match(r"^<!--\s*not-run:(.+?)-->$", lines[i - 1])
        assert reason and reason.group(1).strip(), f"plugin-guide.md:{i + 1}: neither run nor marked not-run"
