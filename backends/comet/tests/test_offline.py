"""The offline-archive reader, on what comet_ml really leaves on disk."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from loggerhub_comet.offline import metric_value, read_offline_dir


@pytest.mark.parametrize(("raw", "value"), [(1, 1.0), (0.5, 0.5), ("Infinity", math.inf),
                                            ("-Infinity", -math.inf), ("2.5", 2.5)])
def test_metric_values(raw: object, value: float) -> None:
    assert metric_value(raw) == value


def test_nan() -> None:
    assert math.isnan(metric_value("NaN"))


def test_a_killed_delivery_leaves_an_empty_placeholder(tmp_path: Path) -> None:
    # Offline, comet_ml keeps everything in a temporary directory until end(): a process that
    # dies first leaves only an empty archive. The reader reports it instead of failing.
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from loggerhub_hookspecs import RunInfo
        from loggerhub_comet._session import CometSession
        run = RunInfo(run_id="killed", project="p", name="n", dir=Path({str(tmp_path)!r}), config={{}},
                      started_at=0.0, options={{"online": False}})
        session = CometSession(run, {{}}, resumed=False)
        session.experiment.log_metric("m", 1.0, step=0)
        os._exit(1)
    """)
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    skipped: list[str] = []
    assert read_offline_dir(tmp_path / "comet", skipped) == {}
    assert len(skipped) == 1 and skipped[0].endswith(".zip")


def test_the_next_session_archives_what_a_killed_one_delivered(tmp_path: Path) -> None:
    # A record is acknowledged once comet_ml wrote it to the session's staging folder; the
    # delivery dies before end(), and the next session of the run archives that folder.
    code = textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        from loggerhub_hookspecs import MetricPoint, RunInfo
        from loggerhub_comet._session import CometSession
        run = RunInfo(run_id="killed", project="p", name="n", dir=Path({str(tmp_path)!r}), config={{}},
                      started_at=0.0, options={{"online": False}})
        state = {{}}
        session = CometSession(run, state, resumed=False)
        session.log_metrics([MetricPoint("m", 1.0, 0, 1.7e9), MetricPoint("m", 2.0, 1, 1.7e9 + 1)])
        Path({str(tmp_path / "state.json")!r}).write_text(json.dumps(state))
        os._exit(1)
    """)
    died = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert died.returncode == 1, died.stderr[-2000:]
    import json

    from loggerhub_comet._session import CometSession

    from loggerhub_hookspecs import MetricPoint, RunInfo, Status

    state = json.loads((tmp_path / "state.json").read_text())
    run = RunInfo(run_id="killed", project="p", name="n", dir=tmp_path, config={}, started_at=0.0,
                  options={"online": False})
    session = CometSession(run, state, resumed=True)
    session.log_metrics([MetricPoint("m", 3.0, 2, 1.7e9 + 2)])
    session.end(Status.FINISHED, 1.7e9 + 3, None)
    skipped: list[str] = []
    (experiment,) = read_offline_dir(tmp_path / "comet", skipped).values()
    assert [(p["step"], p["value"]) for p in experiment["metrics"]["m"]] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    # The dead session's archive and this one's; comet_ml's empty placeholder is gone.
    assert len(experiment["parts"]) == 2 and skipped == []
    assert experiment["others"]["status"] == "FINISHED"
    assert not list((tmp_path / "comet" / ".loggerhub-staging").rglob("messages.json"))
