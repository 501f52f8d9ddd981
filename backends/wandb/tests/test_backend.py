"""The W&B backend beyond the conformance scenario: out-of-order steps, options and environment,
run ids, keys, the ``.wandb`` reader on records that span blocks and on torn files, and lightness."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from loggerhub_wandb import datastore, keys, reader
from loggerhub_wandb._session import resolve, wandb_run_id

import loggerhub
from loggerhub_hookspecs import RunInfo

BIG_TEXT = "W&B " * 30_000  # 120 kB: one record over several 32 KiB blocks


@pytest.fixture(scope="module")
def out_of_order(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, reader.WandbRun]:
    tmp_path = tmp_path_factory.mktemp("order")
    with loggerhub.init(project="order", name="order", dir=tmp_path / "runs", backends=["wandb"],
                        options={"wandb": {"mode": "offline", "dir": str(tmp_path / "wb")}},
                        drain_timeout=120) as run:
        for step in (0, 5, 3, 4, 10, 1):
            run.log_metrics({"loss": float(step)}, step=step)
        run.log_text("long", BIG_TEXT, step=10)
    (folder,) = reader.run_dirs(tmp_path / "wb" / "wandb")
    return run, reader.read_run(folder)


def test_out_of_order_steps_are_all_kept(out_of_order: tuple[Any, reader.WandbRun]) -> None:
    run, held = out_of_order
    rows = [row for row in held.history if "loss" in row.values]
    # Every point, in the order logged, at its own step: none dropped by W&B's monotonic rule,
    # because W&B's _step is the backend's increasing row counter.
    assert [(row.values[keys.STEP], row.values["loss"]) for row in rows] == [(s, s) for s in (0, 5, 3, 4, 10, 1)]
    assert [row.step for row in rows] == sorted(row.step for row in rows)
    assert len({row.step for row in held.history}) == len(held.history)
    assert held.metrics == {"*": keys.STEP}
    assert run.summary["trackers"]["wandb"]["undelivered"] == 0


def test_records_spanning_blocks(out_of_order: tuple[Any, reader.WandbRun]) -> None:
    _run, held = out_of_order
    (row,) = [row for row in held.history if "long" in row.values]
    assert row.values["long"] == BIG_TEXT and not held.problems
    path = reader.wandb_file(held.dirs[0])
    assert path is not None and path.stat().st_size > 3 * datastore.BLOCK
    kinds = set()
    with path.open("rb") as stream:
        stream.seek(len(datastore.HEADER))
        data = stream.read(datastore.BLOCK - len(datastore.HEADER))
        while data:
            kinds.add(data[6] if len(data) > 6 else None)
            data = stream.read(datastore.BLOCK)
    assert datastore.MIDDLE in kinds or datastore.LAST in kinds  # a block that starts inside a record


def test_torn_tail_is_reported(out_of_order: tuple[Any, reader.WandbRun], tmp_path: Path) -> None:
    _run, held = out_of_order
    path = reader.wandb_file(held.dirs[0])
    assert path is not None
    whole = datastore.read_records(path)
    torn = tmp_path / "run-x.wandb"
    torn.write_bytes(path.read_bytes()[: path.stat().st_size - 40])
    scan = datastore.read_records(torn)
    assert scan.problems == {"torn tail (a writer stopped mid-record)": 1}
    assert [r.SerializeToString() for r in scan.records] == [r.SerializeToString() for r in whole.records[:-1]]


def test_tail_follows_a_growing_file(out_of_order: tuple[Any, reader.WandbRun], tmp_path: Path) -> None:
    _run, held = out_of_order
    path = reader.wandb_file(held.dirs[0])
    assert path is not None
    data = path.read_bytes()
    growing = tmp_path / "run-g.wandb"
    tail = datastore.Tail(growing)
    seen = []
    for end in range(0, len(data) + 5000, 5000):  # as wandb-core appends, in pieces
        growing.write_bytes(data[:end])
        seen += tail.poll()
    expected = datastore.read_records(path).records
    assert [r.SerializeToString() for r in seen] == [r.SerializeToString() for r in expected]


def _run(**options: Any) -> RunInfo:
    return RunInfo("my-Run.1", "proj/x", "name", Path("/tmp/run"), {}, 0.0, options=options)


def test_options_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_PROJECT", "env-project")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "env"))
    settings = resolve(_run(), {})
    assert (settings.mode, settings.project, settings.dir) == ("online", "env-project", tmp_path / "env")
    settings = resolve(_run(mode="offline", project="opt", dir=str(tmp_path / "opt")), {})
    assert (settings.mode, settings.project, settings.dir) == ("offline", "opt", tmp_path / "opt")
    # A resumed run keeps what its first delivery chose, whatever the options and environment say now.
    kept = {"mode": "disabled", "project": "first", "dir": str(tmp_path / "first"), "id": "abc"}
    settings = resolve(_run(mode="offline", project="opt"), kept)
    assert (settings.mode, settings.project, settings.run_id) == ("disabled", "first", "abc")
    settings = resolve(_run(mode="bogus", colour="red"), {})
    assert settings.mode == "offline"
    err = capsys.readouterr().err
    assert "unknown option 'colour'" in err and "got 'bogus'" in err


def test_default_mode_follows_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    assert resolve(_run(), {}).mode == "offline"
    assert resolve(_run(), {}).project == "proj-x"  # W&B refuses "/" in project names
    monkeypatch.setenv("WANDB_API_KEY", "secret-value-never-stored")
    settings = resolve(_run(), {})
    assert settings.mode == "online"
    assert "secret-value-never-stored" not in repr(settings)


def test_run_ids() -> None:
    import wandb

    assert wandb_run_id("plain-run_1") == "plain-run_1"
    ids = {wandb_run_id(name) for name in ("Run", "run", "a/b", "a b", "x" * 200)}
    assert len(ids) == 5 and wandb_run_id("Run") == wandb_run_id("Run")
    for run_id in ids:
        assert len(run_id) <= 64
        wandb.Settings(run_id=run_id)  # W&B's own validation accepts it


@pytest.mark.parametrize("key", ["loss", "_step", "_x", "~y", "~~z", "loggerhub/step", "a//b", "größe", "odd key:#%@!"])
def test_keys_round_trip(key: str) -> None:
    tracker = keys.to_tracker(key)
    assert keys.from_tracker(tracker) == key
    assert not tracker.startswith("_") and not tracker.startswith(keys.NAMESPACE)


def test_disabled_mode_writes_nothing(tmp_path: Path) -> None:
    with loggerhub.init(project="off", name="off", dir=tmp_path / "runs", backends=["wandb"],
                        options={"wandb": {"mode": "disabled", "dir": str(tmp_path / "wb")}}, drain_timeout=120) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.summary["trackers"]["wandb"]["undelivered"] == 0
    assert not (tmp_path / "wb" / "wandb").exists() or not reader.run_dirs(tmp_path / "wb" / "wandb")


def test_import_does_not_import_the_sdk() -> None:
    code = textwrap.dedent("""
        import sys
        import loggerhub_wandb
        loggerhub_wandb.WandbBackend()
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("wandb", "numpy", "PIL")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
