"""Meta-tests: every hook is documented, in its module and in docs/, and every hook is exercised."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from recording_plugin import HOOK_NAMES, RecordingPlugin

from loggerhub.delivery import DISPATCH
from loggerhub.plugins import get_plugin_manager
from loggerhub_hookspecs import specs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_is_documented(name: str) -> None:
    hook = getattr(specs, name)
    doc = inspect.getdoc(hook) or ""
    summary, _, rest = doc.partition("\n\n")
    assert summary and "\n" not in summary and summary.endswith("."), f"{name}: one-line summary"
    for parameter in inspect.signature(hook).parameters:
        assert f":param {parameter}:" in doc, f"{name}: :param {parameter}: missing"
    assert ".. versionadded::" in doc, f"{name}: versionadded missing"
    prose = [p for p in rest.split("\n\n") if not p.startswith((":param", ".. versionadded"))]
    assert prose, f"{name}: the calling rule, in words, is missing"
    hints = inspect.get_annotations(hook)
    assert "return" in hints and all(p in hints for p in inspect.signature(hook).parameters)


def test_docs_hooks_md_is_generated_from_the_specs() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "hooks_doc.py"), "--check"])
    assert result.returncode == 0, "docs/hooks.md is stale: run python scripts/hooks_doc.py"
    text = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    for name in HOOK_NAMES:
        assert f"### `{name}(" in text


def test_recording_plugin_implements_every_hook() -> None:
    """The core's delivery tests use this plugin; it must cover the whole contract."""
    pm = get_plugin_manager({"recorder": RecordingPlugin()})
    assert all(getattr(pm.hook, name).get_hookimpls() for name in HOOK_NAMES)


def test_every_hook_is_named_loggerhub_and_reached_by_delivery() -> None:
    """Each hook is called by the dispatch table, the consumer's run records, or `loggerhub backends`."""
    members = {n for n, _ in inspect.getmembers(specs, inspect.isfunction) if n.startswith("loggerhub_")}
    assert members == set(HOOK_NAMES)
    run_records = {"loggerhub_run_start", "loggerhub_run_resume", "loggerhub_run_end", "loggerhub_client_version"}
    dispatched = [hook for hook, _ in DISPATCH.values()]
    assert len(dispatched) == len(set(dispatched))
    assert set(dispatched) | run_records == set(HOOK_NAMES)
