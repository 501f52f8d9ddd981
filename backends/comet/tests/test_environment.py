"""Comet's own environment switches, through the real delivery process.

Defect 10: with ``COMET_API_KEY`` set and ``COMET_START_ONLINE=false`` (comet_ml's documented
switch) or ``COMET_MODE=offline`` (Ultralytics'), the backend went online, failed name resolution
and retried forever. The delivery process is watched through Python's audit hooks, installed by a
``sitecustomize`` module on its ``PYTHONPATH``: every name lookup and every internet connection
it makes is written down, so "offline" is checked, not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loggerhub_comet.offline import read_offline_dir

import loggerhub

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


@pytest.mark.parametrize("switch", [{"COMET_START_ONLINE": "false"}, {"COMET_MODE": "offline"}])
def test_an_offline_switch_beats_the_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             network_log: Path, switch: dict[str, str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.comet.config
    for name in ("COMET_START_ONLINE", "COMET_MODE", "COMET_OFFLINE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_API_KEY", "cometkey0123456789abcdefghij")
    for name, value in switch.items():
        monkeypatch.setenv(name, value)
    archives = tmp_path / "archives"
    run = loggerhub.init(project="env", name="switch", dir=tmp_path / "runs", backends=["comet"],
                         options={"comet": {"offline_dir": str(archives)}}, drain_timeout=120)
    run.log_metrics({"loss": 0.5}, step=0)
    run.finish()

    assert run.summary["trackers"]["comet"]["undelivered"] == 0, run.summary
    state = json.loads((run.dir / "consumers" / "comet.json").read_text(encoding="utf-8"))["state"]
    assert state["online"] is False
    (experiment,) = read_offline_dir(archives).values()
    assert [p["value"] for p in experiment["metrics"]["loss"]] == [0.5]
    assert experiment["others"]["status"] == "FINISHED"
    # The delivery process ran under the watch, and never looked for a server.
    assert "'--backend', 'comet'" in Path(f"{network_log}.started").read_text()
    assert not network_log.exists(), network_log.read_text()
