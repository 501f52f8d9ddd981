from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
# Telemetry (docs/telemetry.md) adds context, console and system records to every run, and most
# tests here count a run's records exactly: off for the suite (subprocesses inherit it), and on in
# the tests of it (tests/test_telemetry.py, test_delivery's hook-order test) through init's arguments.
TELEMETRY_SWITCHES = ("LOGGERHUB_SYSTEM_METRICS", "LOGGERHUB_CONSOLE", "LOGGERHUB_CAPTURE_CONTEXT")
for _switch in TELEMETRY_SWITCHES:
    os.environ[_switch] = "0"


def install_distribution(site: Path, name: str, version: str, entry_points: dict[str, str],
                         modules: dict[str, str]) -> None:
    """Install a real (if tiny) distribution into ``site``: modules plus a ``.dist-info``.

    This is exactly what pip leaves behind, so importlib.metadata finds its entry points the way
    it finds any installed plugin's, in this process and in delivery subprocesses.
    """
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source, encoding="utf-8")
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[loggerhub]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (dist_info / "RECORD").write_text("")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on sys.path and PYTHONPATH, holding the recording plugin as `recorder`
    (distribution loggerhub-recorder 1.0) and a plugin whose import fails, as `broken`."""
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(
        site, "loggerhub-recorder", "1.0", {"recorder": "recording_plugin:RecordingPlugin"},
        {"recording_plugin": (TESTS / "recording_plugin.py").read_text(encoding="utf-8")},
    )
    install_distribution(
        site, "loggerhub-broken", "0.3", {"broken": "broken_plugin:Plugin"},
        {"broken_plugin": "import a_module_that_is_not_installed\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    yield site
    for module in ("recording_plugin", "broken_plugin"):
        sys.modules.pop(module, None)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"
