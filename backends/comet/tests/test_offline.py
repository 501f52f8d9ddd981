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
        session = CometSession.open(run, {{}}, resume=False)
        session.experiment.log_metric("m", 1.0, step=0)
        os._exit(1)
    """)
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    skipped: list[str] = []
    assert read_offline_dir(tmp_path / "comet", skipped) == {}
    assert len(skipped) == 1 and skipped[0].endswith(".zip")
