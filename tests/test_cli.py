"""The ``loggerhub`` command line and the errors a new user meets: real runs, real CLI."""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import install_distribution

import loggerhub
from loggerhub.cli import main
from loggerhub.config import ConfigError, Settings
from loggerhub.plugins import UnknownBackend, resolve


def _local_run(runs_dir: Path, name: str = "exp") -> loggerhub.Run:
    with loggerhub.init(project="p", name=name, dir=runs_dir, backends=["local"]) as run:
        for step in range(3):
            run.log_metrics({"train/loss": 1 / (step + 1), "lr": 0.1}, step=step)
    return run


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, as a user runs it (for what main() cannot show: tracebacks)."""
    return subprocess.run([sys.executable, "-m", "loggerhub.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


# -- --dir before or after the command ----------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["runs", "--dir", "{dir}"],
    ["--dir", "{dir}", "runs"],
    ["show", "latest", "--dir", "{dir}"],
    ["show", "--dir", "{dir}", "latest"],
    ["--dir", "{dir}", "show", "latest"],
])
def test_dir_works_before_and_after_the_command(runs_dir: Path, tmp_path: Path, argv: list[str],
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = _local_run(runs_dir)
    monkeypatch.chdir(tmp_path)  # ./loggerhub-runs does not exist here: only --dir finds the run
    assert main([a.format(dir=runs_dir) for a in argv]) == 0
    assert run.id in capsys.readouterr().out


def test_dir_after_the_command_wins_over_the_one_before(runs_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = _local_run(runs_dir)
    assert main(["--dir", str(tmp_path / "empty"), "runs", "--dir", str(runs_dir)]) == 0
    assert run.id in capsys.readouterr().out


# -- user errors: one line, exit 2 --------------------------------------------------------------


def test_unknown_run_is_one_line_and_exit_2(runs_dir: Path) -> None:
    _local_run(runs_dir)
    result = _cli("show", "no-such-run", "--dir", str(runs_dir))
    assert result.returncode == 2
    assert result.stderr == f"loggerhub: error: no run 'no-such-run' under {runs_dir}\n"
    assert "Traceback" not in result.stderr


def test_bad_option_is_one_line_and_exit_2(runs_dir: Path) -> None:
    run = _local_run(runs_dir)
    result = _cli("sync", str(run.dir), "--option", "nodot=1")
    assert result.returncode == 2
    assert result.stderr == "loggerhub: error: --option takes TRACKER.KEY=VALUE, got 'nodot=1'\n"


def test_broken_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "loggerhub.toml").write_text('dri = "runs"\n')
    result = _cli("runs", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "loggerhub: error: loggerhub.toml: unknown key 'dri'; did you mean 'dir'?\n"


# -- plot ----------------------------------------------------------------------------------------


def test_plot_of_a_missing_key_lists_the_keys_that_exist(runs_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _local_run(runs_dir)
    output = tmp_path / "plot.png"
    assert main(["plot", "latest", "train/los", "--dir", str(runs_dir), "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert "no points for 'train/los'" in error and "did you mean 'train/loss'?" in error
    assert error.rstrip().endswith("its metrics: lr, train/loss")
    assert not output.exists()


def test_plot_writes_the_png(runs_dir: Path, tmp_path: Path) -> None:
    _local_run(runs_dir)
    output = tmp_path / "plot.png"
    assert main(["plot", "latest", "train/loss", "lr", "--dir", str(runs_dir), "-o", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- show ----------------------------------------------------------------------------------------


def test_show_lists_the_rejected_inputs_with_their_reasons(runs_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(loggerhub.LoggerhubWarning):  # noqa: PT031 - each bad call warns once
        with loggerhub.init(project="p", dir=runs_dir, backends=["local"]) as run:
            run.log_metrics({"loss": "high"}, step=0)
            run.log_image("samples/missing", "no-such-file.png")
    assert main(["show", str(run.dir)]) == 0
    out = capsys.readouterr().out
    assert "rejected 2 inputs" in out
    lines = out.splitlines()
    assert any("log_metrics" in line and "loss" in line and "metric values must be numbers, got str" in line
               for line in lines), out
    assert any("log_image" in line and "samples/missing" in line and "image file not found" in line
               for line in lines), out


def test_show_gives_the_failure_reason(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ZeroDivisionError):  # noqa: PT012 - the failure ends the run
        with loggerhub.init(project="p", dir=runs_dir, backends=["local"]) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            1 / 0  # noqa: B018
    assert main(["show", str(run.dir)]) == 0
    out = capsys.readouterr().out
    assert "status   FAILED" in out
    assert "error    ZeroDivisionError: division by zero" in out
    assert "1 / 0" in out  # the traceback, with the line that failed


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB filesystem (tmpfs) that the test can fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_show_says_when_a_run_is_degraded(small_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = loggerhub.init(project="p", dir=small_disk / "runs", backends=["local"])
    run.log_metrics({"loss": 1.0}, step=0)
    assert run.flush(timeout=10)
    filler = small_disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):  # until the disk is full
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    run.log_text("notes", "x" * 10_000, step=1)
    assert not run.flush(timeout=2)  # the disk refuses the write
    filler.unlink()  # the disk frees again: the kept records are written, nothing is lost
    run.finish()
    capsys.readouterr()
    assert main(["show", str(run.dir)]) == 0
    out = capsys.readouterr().out
    assert "degraded yes, the journal could not be written at some point: " in out
    assert "No space left on device" in out
    assert "lost " not in out and "1 texts" in out


_PARTIAL_PLUGIN = '''
from loggerhub_hookspecs import hookimpl

WORDS = " ".join(f"word{i:03d}" for i in range(80))


class PartialPlugin:
    """Stores metrics; has no place for images; its text upload always fails (a long message)."""

    @hookimpl
    def loggerhub_run_start(self, run, state):
        state["id"] = run.run_id

    @hookimpl
    def loggerhub_run_resume(self, run, state):
        pass

    @hookimpl
    def loggerhub_log_metrics(self, points):
        pass

    @hookimpl
    def loggerhub_log_text(self, text):
        raise ConnectionError("upload refused: " + WORDS)

    @hookimpl
    def loggerhub_run_end(self, run, status, ended_at, error):
        pass
'''


def test_show_reports_skipped_kinds_and_the_last_error_cut_between_words(
        runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(site, "loggerhub-partial", "1.0", {"partial": "partial_plugin:PartialPlugin"},
                         {"partial_plugin": _PARTIAL_PLUGIN})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    import numpy as np

    run = loggerhub.init(project="p", dir=runs_dir, backends=["partial"], drain_timeout=3)
    run.log_metrics({"loss": 1.0}, step=0)
    run.log_image("samples/a", np.zeros((4, 4), dtype=np.uint8), step=0)
    run.log_image("samples/b", np.zeros((4, 4), dtype=np.uint8), step=0)
    run.log_text("notes", "never arrives", step=0)
    run.finish()
    capsys.readouterr()
    assert main(["show", str(run.dir)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tracker  partial:"))
    assert "records undelivered" in line
    assert "skipped (the tracker has no place for them): 2 image" in line
    last_error = line.split("last error: ", 1)[1]
    assert last_error.startswith("ConnectionError: upload refused: word000 word001")
    assert last_error.endswith(" ...") and len(last_error) <= 160
    words = last_error.removesuffix(" ...").split()
    assert words[-1].startswith("word") and len(words[-1]) == len("word000")  # not cut mid-word


# -- unknown backends ----------------------------------------------------------------------------


def test_unknown_backend_from_the_environment_suggests_the_closest(plugin_site: Path, runs_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGGERHUB_BACKENDS", "recordr")
    with pytest.raises(UnknownBackend) as error:
        loggerhub.init(project="p", dir=runs_dir)
    message = str(error.value)
    assert message.startswith("unknown backend 'recordr' (from LOGGERHUB_BACKENDS): did you mean 'recorder'?")
    assert "pip install" not in message  # loggerhub has no extra of that name


def test_unknown_backend_from_a_config_file_says_which(plugin_site: Path, runs_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.loggerhub]\nbackends = ["recorder", "locl"]\n')
    monkeypatch.chdir(project)
    with pytest.raises(UnknownBackend, match=r"unknown backend 'locl' \(from .*pyproject.toml \[tool.loggerhub\]\): "
                                             r"did you mean 'local'\?"):
        loggerhub.init(project="p", dir=runs_dir)


def test_unknown_tracker_in_sync_is_one_line(runs_dir: Path, plugin_site: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = _local_run(runs_dir)
    assert main(["sync", str(run.dir), "--to", "recordr"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("loggerhub: error: unknown backend 'recordr': did you mean 'recorder'? ")
    assert error.count("\n") == 1


def test_pip_install_is_suggested_only_for_a_tracker_extra_that_exists(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # `ultralytics` is a real extra of loggerhub, but it installs no tracker.
    assert "pip install" not in _unknown("ultralytics")
    assert "pip install" not in _unknown("nosuchtracker")
    # loggerhub's own metadata as pip writes it, plus a tracker extra whose plugin is not installed.
    site = tmp_path / "site"
    dist_info = site / f"loggerhub-{loggerhub.__version__}.dist-info"
    dist_info.mkdir(parents=True)
    real = metadata.distribution("loggerhub").read_text("METADATA") or ""
    (dist_info / "METADATA").write_text(
        real.replace("\n\n", "\nProvides-Extra: aim\nRequires-Dist: loggerhub-aim<0.2,>=0.1; extra == 'aim'\n\n", 1))
    monkeypatch.syspath_prepend(str(site))
    assert metadata.metadata("loggerhub").get_all("Provides-Extra")[-1] == "aim"
    assert _unknown("aim").endswith("To add it: pip install 'loggerhub[aim]'")


def _unknown(name: str) -> str:
    with pytest.raises(UnknownBackend) as error:
        resolve(["local", name])
    return str(error.value)


# -- configuration files -------------------------------------------------------------------------


def test_misspelt_key_names_the_file_and_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text('backend = ["mlflow"]\nflush_interval = 0\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        Settings()
    assert str(error.value) == (
        "loggerhub.toml: flush_interval: Input should be greater than 0 (got 0); "
        "loggerhub.toml: unknown key 'backend'; did you mean 'backends'?"
    )


def test_misspelt_key_in_pyproject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.loggerhub]\nflush_intervall = 1\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.loggerhub\]: unknown key 'flush_intervall'; "
                                          r"did you mean 'flush_interval'\?"):
        Settings()


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text('dir = "runs"\nbackends = mlflow\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^loggerhub.toml is not valid TOML: .*line 2"):
        Settings()


def test_environment_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOGGERHUB_DRAIN_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match=r"^LOGGERHUB_DRAIN_TIMEOUT: drain_timeout: Input should be a valid number"):
        Settings()


def test_backends_as_one_string_is_accepted_as_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text('backends = "tensorboard, mlflow"\n')
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.backends == ["local", "tensorboard", "mlflow"]
    assert settings.origin("backends") == "loggerhub.toml"


def test_a_wrong_type_in_a_list_is_refused_with_its_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text('backends = ["mlflow", 3]\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^loggerhub.toml: backends.1: Input should be a valid string \(got 3\)$"):
        Settings()


def test_option_values_never_reach_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text('[options]\nmlflow = "token-abcdef123456"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        Settings()
    assert "loggerhub.toml: options.mlflow: Input should be a valid dictionary" in str(error.value)
    assert "abcdef123456" not in str(error.value)
