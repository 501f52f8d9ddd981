"""The accelerate adapter, end to end: a plain torch loop driven by an Accelerator on CPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from integrations._frameworks import (
    EPOCHS,
    STEPS_PER_EPOCH,
    check_ended,
    check_series,
    check_stopped,
    expected_train_steps,
    read_run,
    train_accelerate,
    trained,
)

pytestmark = pytest.mark.filterwarnings("error::loggerhub.integrations.ultralytics.AdapterWarning")


@pytest.mark.slow
def test_loop_logs_scalars_config_images_table_and_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> None:
    logged = trained("accelerate", tmp_path_factory)
    check_series(logged, {"train/loss": expected_train_steps()})
    assert logged.params() == {"lr": 0.01, "api_key": "***REDACTED***"}
    assert [(d["key"], d["step"]) for d in logged.of_type("image")] == [
        ("val/sample/0", STEPS_PER_EPOCH * epoch) for epoch in range(1, EPOCHS + 1)]
    assert [d["key"] for d in logged.of_type("table")] == ["predictions"]
    assert [(d["key"], d["step"]) for d in logged.of_type("figure")] == [("plots/loss", 6)]
    assert [s.step for s in logged.tensorboard.images["val/sample/0"]] == [3, 6]
    assert logged.checkpoints() == ["checkpoints/epoch1", "checkpoints/epoch2"]
    check_ended(logged, "FINISHED")


@pytest.mark.slow
def test_log_with_the_registered_name_builds_the_tracker(tmp_path: Path) -> None:
    logged = train_accelerate(tmp_path, by_name=True)
    assert logged.run_dir.parent.name == "accelerate"  # init_trackers' project_name
    assert logged.run_dir.name.startswith("by-name-")
    check_series(logged, {"train/loss": expected_train_steps()})
    check_ended(logged, "FINISHED")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["error", "interrupt"])
def test_loop_that_raises_ends_failed_and_ctrl_c_ends_killed(tmp_path: Path, stop: str) -> None:
    with pytest.raises(BaseException) as raised:
        train_accelerate(tmp_path, stop=stop)
    assert raised.type.__name__ == ("Boom" if stop == "error" else "KeyboardInterrupt")
    check_stopped(read_run(tmp_path), stop)


def test_the_tracker_is_what_accelerate_expects() -> None:
    from accelerate.tracking import GeneralTracker

    from loggerhub.integrations.accelerate import LoggerhubTracker

    assert issubclass(LoggerhubTracker, GeneralTracker)
    assert LoggerhubTracker.name == "loggerhub"
    assert LoggerhubTracker.requires_logging_directory is False
    assert LoggerhubTracker.main_process_only is True


@pytest.mark.slow
@pytest.mark.parametrize(("raised", "status"), [("RuntimeError('boom')", "FAILED"), ("KeyboardInterrupt", "KILLED")])
def test_without_a_with_block_an_uncaught_error_ends_the_run_at_exit(tmp_path: Path, raised: str, status: str) -> None:
    # A script that dies of the exception: loggerhub's process hooks, not the adapter, end the run.
    script = textwrap.dedent(f"""
        from accelerate import Accelerator
        from loggerhub.integrations.accelerate import LoggerhubTracker

        tracker = LoggerhubTracker("accelerate", dir={str(tmp_path / "runs")!r}, backends=[])
        accelerator = Accelerator(log_with=[tracker], cpu=True)
        accelerator.init_trackers("accelerate")
        accelerator.log({{"train/loss": 1.0}}, step=1)
        raise {raised}
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    (run_dir,) = (tmp_path / "runs" / "accelerate").iterdir()
    from loggerhub.journal import JournalReader

    (end,) = [e.data for e in JournalReader(run_dir).entries() if e.type == "run_end"]
    assert end["status"] == status, result.stderr[-2000:]
