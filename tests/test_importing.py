"""The importer contract and the core's import machinery (issues 9 and 15): safe names, path
containment, capped reads, staging with an atomic commit that never deletes or replaces what the
import did not write, and each importer's CLI options coming from its own declaration."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from loggerhub import importing
from loggerhub.importing import import_runs
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Importer,
    Limits,
    Option,
    OutsideSource,
    Pending,
    Source,
    TooLarge,
    contained,
    contained_member,
    lines_capped,
    parse_size,
    printable,
    read_capped,
    safe_name,
    source_run_id,
    write_in_order,
)


@pytest.mark.parametrize("text", ["", ".", "..", "../..", "/", "-", "...", "\x00", "\u202e", " ", "a/../b"])
def test_safe_names_are_never_empty_dots_or_paths(text: str) -> None:
    name = safe_name(text, fallback="x")
    assert name not in ("", ".", "..") and "/" not in name and "\\" not in name and not name.startswith(".")


def test_run_ids_are_distinct_for_distinct_sources() -> None:
    long = "y" * 200
    ids = {source_run_id("comet", s) for s in ("exp/1", "exp 1", "exp_1", long + "a", long + "b", "", "-")}
    assert len(ids) == 7
    assert source_run_id("comet", "exp/1") != source_run_id("neptune", "exp/1")
    assert all(len(i) <= 73 and safe_name(i) == i for i in ids)


def test_containment(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link").symlink_to(tmp_path / "out")
    assert contained(root, "in/x") == (root / "in" / "x").resolve()
    for path in ("../out", str(tmp_path / "out"), "link/x", "in/../../out", "a\x00b"):
        with pytest.raises(OutsideSource):
            contained(root, path)
    assert contained(root, "link/x", allow=[tmp_path / "out"]) == (tmp_path / "out" / "x").resolve()
    for name in ("/abs", "../x", "a/../../x", "", ".", "C:/x", "a\\..\\..\\x"):
        with pytest.raises(OutsideSource):
            contained_member(name)
    assert contained_member("a/./b//c") == "a/b/c"


def test_capped_reads_never_hold_more_than_the_cap() -> None:
    with pytest.raises(TooLarge):
        read_capped(io.BytesIO(b"x" * 11), 10, "it")
    assert read_capped(io.BytesIO(b"x" * 10), 10, "it") == b"x" * 10
    lines = list(lines_capped(io.BytesIO(b"ok\n" + b" " * 100 + b"\nlast"), 10))
    assert lines == [(1, b"ok\n"), (2, None), (3, b"last")]


def test_limits_parse_and_printable() -> None:
    assert parse_size("4G") == 4 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("100") == 100
    assert Limits.parse(["file_bytes=1k"]).file_bytes == 1024
    with pytest.raises(ValueError, match="NAME=SIZE"):
        Limits.parse(["nope=1"])
    assert printable("a\x1b[31mb\x07\u202ec") == "a?[31mb??c"


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def metrics(self, values: Mapping[str, float], step: int, ts: float, epoch: int | None = None) -> None:
        if "bad" in values:
            raise ValueError("refused")
        self.calls.append((dict(values), step))


def test_write_in_order_skips_and_reports_a_refused_item() -> None:
    source = Source("src", None)
    recorder = _Recorder()
    items = [Pending(2.0, 5, 0, lambda b, step, ts: b.metrics({"bad": 1.0}, step, ts), where=("m.json", 7)),
             Pending(1.0, -1, 0, lambda b, step, ts: b.metrics({"a": 1.0}, step, ts), auto_step=True, metrics=True),
             Pending(3.0, -1, 0, lambda b, step, ts: b.metrics({"c": 1.0}, step, ts), auto_step=True, metrics=True)]
    write_in_order(items, recorder, source)  # type: ignore[arg-type]
    assert recorder.calls == [({"a": 1.0}, 0), ({"c": 1.0}, 1)]
    assert [str(s) for s in source.skips] == ["skipped: m.json:7: ValueError: refused"]


# --------------------------------------------------------------------------- the core


class _Fake(Importer):
    """An importer for the core's own tests: one run per name in ``runs``; ``fail`` raises
    inside the run, as a bug in an importer would."""

    name = "fake"
    options = (Option("runs", "comma-separated source ids"), Option("fail", "raise inside the run"))

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        for source_id in str(options.get("runs", "one")).split(","):
            builder = builder_factory(source_id=source_id, name=source_id, started_at=1.0,
                                      config={"ok": 1, "p" * 5000: 2}, source_project=options.get("project"))
            if builder is None:
                continue
            with builder:
                builder.metrics({"loss": 1.0}, 0, 1.0)
                if options.get("fail"):
                    raise RuntimeError("an importer bug")
                builder.end("FINISHED", 2.0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "_importer", lambda source: _Fake())


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_import_leaves_nothing_behind(fake: None, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="an importer bug"):
        import_runs("fake", str(tmp_path), dir=tmp_path / "store", options={"fail": "1"})
    assert tree(tmp_path / "store") == {}


def test_a_refused_param_is_reported_and_the_others_kept(fake: None, tmp_path: Path) -> None:
    report = import_runs("fake", str(tmp_path), dir=tmp_path / "store")
    (run_dir,) = report.imported
    start = json.loads(next((run_dir / "journal").iterdir()).read_text().splitlines()[0])
    assert start["config"] == {"ok": 1}
    assert report.problems == ["skipped: run one: param 'pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
                               "pppppppppppppppppppp': InvalidInput"]


def test_nothing_the_import_did_not_write_is_replaced(fake: None, tmp_path: Path) -> None:
    store = tmp_path / "store"
    taken = store / "fake" / source_run_id("fake", "one")
    taken.mkdir(parents=True)  # an empty folder: os.rename would replace it silently
    (store / "fake" / "other").mkdir()
    (store / "fake" / "other" / "x").write_text("mine")
    before = tree(store), sorted(p.name for p in (store / "fake").iterdir())
    report = import_runs("fake", str(tmp_path), dir=store)
    assert report.imported == [] and "taken by something this import did not write" in report.problems[0]
    assert (tree(store), sorted(p.name for p in (store / "fake").iterdir())) == before
    assert list((store / ".staging").iterdir()) == []


def test_the_cli_takes_options_from_each_importer_and_no_cycle(tmp_path: Path) -> None:
    code = ("import sys, loggerhub.importing\n"
            "assert 'loggerhub.cli' not in sys.modules, 'importing imports the CLI'\n"
            "from loggerhub.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    help_mlflow = subprocess.run([sys.executable, "-c", code, "import", "mlflow", "--help"],
                                 capture_output=True, text=True, timeout=120, check=True).stdout
    assert "--run-id" in help_mlflow and "--tracking-uri" in help_mlflow and "--allow-read" in help_mlflow
    help_comet = subprocess.run([sys.executable, "-c", code, "import", "comet", "--help"],
                                capture_output=True, text=True, timeout=120, check=True).stdout
    assert "--run-id" not in help_comet and "--limit" in help_comet
    wrong = subprocess.run([sys.executable, "-c", code, "import", "comet", str(tmp_path), "--run-id", "x"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert wrong.returncode == 2 and "unrecognized arguments: --run-id" in wrong.stderr


def test_abandoned_staging_of_a_dead_import_is_removed_and_only_that(fake: None, tmp_path: Path) -> None:
    store = tmp_path / "store"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for name, owner in (("dead", {"pid": int(dead)}), ("alive", {"pid": os.getpid()}), ("foreign", None)):
        (store / ".staging" / name / "run-1").mkdir(parents=True)
        if owner is not None:
            (store / ".staging" / name / "owner.json").write_text(json.dumps(owner))
    import_runs("fake", str(tmp_path), dir=store)
    assert sorted(p.name for p in (store / ".staging").iterdir()) == ["alive", "foreign"]
