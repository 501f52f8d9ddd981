"""The conformance suite's own rules: a skip needs a stated reason, and the failure injector is
transparent. Reads the backends' suites as source, so it runs without any tracker installed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loggerhub.plugins import get_plugin_manager
from loggerhub.testing.conformance import BackendConformance, Interposed, skip_problems
from loggerhub_hookspecs import TextRecord, hookimpl

ROOT = Path(__file__).resolve().parent.parent
SUITES = sorted(ROOT.glob("backends/*/tests/test_conformance*.py"))


def _declared(path: Path) -> list[tuple[str, dict[str, Any], Any]]:
    """``(class name, skips, redelivery)`` of each BackendConformance subclass in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ClassDef):
            continue
        if not any(isinstance(base, ast.Name) and base.id == "BackendConformance" for base in node.bases):
            continue
        values: dict[str, Any] = {"skips": {}, "redelivery": BackendConformance.redelivery}
        for statement in node.body:
            target = statement.target if isinstance(statement, ast.AnnAssign) else (
                statement.targets[0] if isinstance(statement, ast.Assign) else None)
            if isinstance(target, ast.Name) and target.id in values and statement.value is not None:
                values[target.id] = ast.literal_eval(statement.value)
        found.append((node.name, values["skips"], values["redelivery"]))
    return found


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.parent.parent.name)
def test_every_skip_names_a_standard_test_and_gives_a_reason(path: Path) -> None:
    for name, skips, redelivery in _declared(path):
        suite = type(name, (BackendConformance,), {"backend": name, "skips": skips, "redelivery": redelivery})
        assert not skip_problems(suite), (path, skip_problems(suite))


def test_the_guard_catches_unjustified_skips() -> None:
    class Sloppy(BackendConformance):
        backend = "sloppy"
        skips = {"test_ended_at": " ", "test_no_such_thing": "typo", "test_skips_are_justified": "no"}
        redelivery = "mostly"  # type: ignore[assignment]

    problems = skip_problems(Sloppy)
    assert "skips 'test_ended_at' without a reason" in problems
    assert "skips names 'test_no_such_thing', which is not a standard test" in problems
    assert "the skip guard itself cannot be skipped" in problems
    assert any(p.startswith("redelivery must be") for p in problems)

    class Honest(BackendConformance):
        backend = "honest"
        skips = {"test_ended_at": "the tracker keeps no end time"}
        redelivery = "at-least-once"

    assert skip_problems(Honest) == []


class Notes:
    """A real plugin whose tracker is a list; it takes texts only."""

    def __init__(self) -> None:
        self.kept: list[str] = []

    @hookimpl
    def loggerhub_log_text(self, text: TextRecord) -> None:
        self.kept.append(text.text)


def test_interposed_fails_first_then_delegates_and_hides_nothing() -> None:
    real = Notes()
    flaky = Interposed(real, fail_before=2)
    pm = get_plugin_manager({"flaky": flaky})
    implemented = [name for name in dir(pm.hook)
                   if name.startswith("loggerhub_") and getattr(pm.hook, name).get_hookimpls()]
    assert implemented == ["loggerhub_log_text"]  # what the real plugin does not implement stays unimplemented
    record = TextRecord("k", "hello", 0, 0.0)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            pm.hook.loggerhub_log_text(text=record)
    pm.hook.loggerhub_log_text(text=record)
    assert real.kept == ["hello"] and flaky.failures == {"loggerhub_log_text": 2}


# A tracker that appends every point it is sent, as TensorBoard and Neptune offline once did.
APPENDING_TRACKER = '''
import json
import os
from pathlib import Path

from loggerhub_hookspecs.kit import TrackerPlugin, TrackerSession


class Session(TrackerSession):
    def __init__(self, run, state, *, resumed):
        super().__init__(run, state, resumed=resumed)
        self.file = Path(run.options["store"]) / f"{run.run_id}.jsonl"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        state["file"] = str(self.file)

    def _write(self, line):
        with self.file.open("a") as out:
            out.write(json.dumps(line) + "\\n")
            out.flush()
            os.fsync(out.fileno())

    def log_params(self, params):
        self._write({"params": dict(params)})

    def log_metrics(self, points):
        for point in points:
            self._write({"metric": [point.key, point.step, point.value]})

    def end(self, status, ended_at, error):
        self._write({"status": status.value})


class Plugin(TrackerPlugin):
    session_path = "appending_tracker:Session"
    client_distribution = "pluggy"
'''

APPENDING_SUITE = '''
import json
from pathlib import Path

from loggerhub.testing.conformance import BackendConformance, TrackerView


class TestAppending(BackendConformance):
    backend = "appending"
    redelivery = {redelivery!r}

    def options(self, tmp_path):
        return {{"store": str(tmp_path / "store")}}

    def read_back(self, run, options):
        view = TrackerView()
        for line in Path(run.state["file"]).read_text().splitlines():
            record = json.loads(line)
            if "metric" in record:
                key, step, value = record["metric"]
                view.metrics.setdefault(key, []).append((step, value))
            view.status = record.get("status", view.status)
        return view
'''


@pytest.mark.parametrize("redelivery", ["exactly-once", "at-least-once"])
def test_the_redelivery_test_holds_a_backend_to_what_it_states(plugin_site: Path, tmp_path: Path,
                                                               redelivery: str) -> None:
    """A real delivery process is killed after the tracker took a batch: a tracker that appends
    passes only when it says at-least-once."""
    from conftest import install_distribution

    install_distribution(plugin_site, "loggerhub-appending", "0.1", {"appending": "appending_tracker:Plugin"},
                         {"appending_tracker": APPENDING_TRACKER})
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_appending.py").write_text(APPENDING_SUITE.format(redelivery=redelivery))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "test_appending.py", "-q", "-p", "no:cacheprovider",
         "-k", "test_redelivered_batch"],
        cwd=suite, capture_output=True, text=True, timeout=600,
    )
    if redelivery == "exactly-once":
        assert result.returncode == 1 and "redelivery duplicated points" in result.stdout, result.stdout[-3000:]
    else:
        assert result.returncode == 0, result.stdout[-3000:]
