"""Neptune's own environment variables, through the real delivery process.

``NEPTUNE_MODE`` and ``NEPTUNE_PROJECT`` are honoured below the loggerhub options (README,
"Options and environment"). The delivery process is watched through Python's audit hooks,
installed by a ``sitecustomize`` module on its ``PYTHONPATH``, so "offline" is checked: every name
lookup and every internet connection it makes is written down.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loggerhub_neptune import offline

import loggerhub
from loggerhub_hookspecs import Rejected

WATCH = '''
import os, socket, sys

_LOG = os.environ["LOGGERHUB_TEST_NETWORK_LOG"]


def _watch(event, args):
    if event == "socket.getaddrinfo" or (
        event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6)
    ):
        with open(_LOG, "a") as out:
            out.write(f"{event} {args[1] if event == 'socket.connect' else args[0]!r}\\n")


sys.addaudithook(_watch)
with open(_LOG + ".started", "a") as started:
    started.write(f"{os.getpid()} {sys.argv!r}\\n")
'''


@pytest.fixture
def network_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file where the delivery process records its network use."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WATCH)
    log = tmp_path / "network.log"
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("LOGGERHUB_TEST_NETWORK_LOG", str(log))
    return log


def test_neptune_mode_and_project_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       network_log: Path) -> None:
    # With a token and no mode, the backend would go online (async) to the project.
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-token")
    monkeypatch.setenv("NEPTUNE_MODE", "offline")
    monkeypatch.setenv("NEPTUNE_PROJECT", "team/detector")
    monkeypatch.delenv("NEPTUNE_DATA_DIRECTORY", raising=False)
    data_dir = tmp_path / "neptune"
    run = loggerhub.init(project="env", name="env", dir=tmp_path / "runs", backends=["neptune"],
                         options={"neptune": {"data_dir": str(data_dir)}}, drain_timeout=120)
    run.log_metrics({"loss": 0.5}, step=0)
    run.finish()

    assert run.summary["trackers"]["neptune"]["undelivered"] == 0, run.summary
    state = json.loads((run.dir / "consumers" / "neptune.json").read_text(encoding="utf-8"))["state"]
    # The project is kept for `neptune sync --project`, which an offline container needs.
    assert (state["mode"], state["project"]) == ("offline", "team/detector")
    [part] = offline.read_run(data_dir, run.id)
    assert part["metadata"]["mode"] == "offline"
    assert [v["value"] for v in part["fields"]["loss"]["values"]] == [0.5]
    assert "'--backend', 'neptune'" in Path(f"{network_log}.started").read_text()
    assert not network_log.exists(), network_log.read_text()


def test_the_option_wins_over_neptune_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loggerhub_neptune._session import Settings

    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    monkeypatch.setenv("NEPTUNE_PROJECT", "team/env")
    settings = Settings.resolve({"mode": "offline", "project": "team/option"}, {})
    assert (settings.mode, settings.project) == ("offline", "team/option")
    assert (Settings.resolve({}, {}).mode, Settings.resolve({}, {}).project) == ("debug", "team/env")
    monkeypatch.setenv("NEPTUNE_MODE", "read-only")
    with pytest.raises(Rejected, match="NEPTUNE_MODE is 'read-only'"):
        Settings.resolve({}, {})
