"""Plugin discovery through entry points, errors for unknown and broken plugins, light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from recording_plugin import read_calls

import loggerhub
from loggerhub.plugins import BackendLoadError, UnknownBackend, installed_backends, resolve
from loggerhub.run import LoggerhubWarning


def test_installed_distribution_is_discovered(plugin_site: Path) -> None:
    backends = installed_backends()
    assert backends["recorder"].distribution == "loggerhub-recorder"
    assert backends["recorder"].version == "1.0"
    assert backends["local"].distribution == "loggerhub"
    assert list(backends)[0] == "local"


def test_discovered_plugin_receives_the_run(plugin_site: Path, runs_dir: Path, tmp_path: Path) -> None:
    calls_file = tmp_path / "calls.jsonl"
    with loggerhub.init(project="p", dir=runs_dir, backends=["recorder"],
                        options={"recorder": {"record_to": str(calls_file)}}) as run:
        run.log_metrics({"loss": 0.5}, step=3)
    hooks = [c["hook"] for c in read_calls(calls_file)]
    assert hooks == ["loggerhub_run_start", "loggerhub_log_metrics", "loggerhub_run_end"]
    assert run.summary["trackers"]["recorder"]["undelivered"] == 0


def test_unknown_backend_names_the_fix(plugin_site: Path, runs_dir: Path) -> None:
    with pytest.raises(UnknownBackend) as error:
        loggerhub.init(project="p", dir=runs_dir, backends=["recordr"])
    message = str(error.value)
    assert "unknown backend 'recordr'" in message and "did you mean 'recorder'?" in message
    assert "Installed backends: " in message and "local" in message and "recorder" in message
    assert "pip install" not in message  # loggerhub has no extra named recordr (tests/test_cli.py)
    assert not runs_dir.exists()


def test_broken_plugin_is_reported_and_others_still_load(plugin_site: Path, runs_dir: Path,
                                                          tmp_path: Path) -> None:
    with pytest.raises(BackendLoadError, match=r"'broken' from loggerhub-broken 0.3 failed to load: "
                                               r"ModuleNotFoundError"):
        resolve(["broken"])[0].load()
    calls_file = tmp_path / "calls.jsonl"
    with pytest.warns(LoggerhubWarning, match="loggerhub-broken 0.3"):
        run = loggerhub.init(project="p", dir=runs_dir, backends=["broken", "recorder"],
                             options={"recorder": {"record_to": str(calls_file)}})
    run.finish()
    assert run.backends == ["local", "recorder"]
    assert read_calls(calls_file)[-1]["hook"] == "loggerhub_run_end"


def test_backends_from_environment(plugin_site: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGGERHUB_BACKENDS", "recorder, local")
    run = loggerhub.init(project="p", dir=runs_dir)
    run.finish()
    assert run.backends == ["local", "recorder"]


def test_backends_from_config_file(plugin_site: Path, runs_dir: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text(f'backends = ["recorder"]\ndir = "{runs_dir}"\n')
    monkeypatch.chdir(tmp_path)
    run = loggerhub.init(project="p")
    run.finish()
    assert run.backends == ["local", "recorder"] and run.dir.parent.parent == runs_dir


def test_invalid_config_is_a_clear_error(runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loggerhub.toml").write_text('flush_interval = -1\nbackendz = ["x"]\n')
    monkeypatch.chdir(tmp_path)
    from loggerhub.config import ConfigError

    with pytest.raises(ConfigError) as error:
        loggerhub.init(project="p", dir=runs_dir)
    text = str(error.value)
    assert "flush_interval" in text and "backendz" in text


def test_import_loggerhub_is_light() -> None:
    code = (
        "import sys, loggerhub\n"
        "heavy = {'neptune', 'comet_ml', 'mlflow', 'tensorboard', 'torch', 'ultralytics', 'numpy',"
        " 'pydantic', 'matplotlib', 'PIL'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importtime_shows_no_tracker_sdk() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import loggerhub"],
                         capture_output=True, text=True, check=True)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines()[1:]}
    assert "loggerhub" in imported
    assert not imported & {"neptune", "comet_ml", "mlflow", "tensorboard", "torch"}


def test_the_local_backend_is_loaded_through_an_entry_point_like_any_other() -> None:
    from loggerhub.local import LocalBackend

    local = installed_backends()["local"]
    assert (local.entry_point.group, local.entry_point.value) == ("loggerhub", "loggerhub.local:LocalBackend")
    assert isinstance(local.load(), LocalBackend)


METRICS_ONLY = '''
from loggerhub_hookspecs import hookimpl


class Plugin:
    @hookimpl
    def loggerhub_client_version(self):
        return "0.1"

    @hookimpl
    def loggerhub_log_metrics(self, points):
        pass
'''


def test_backends_says_what_each_backend_takes(plugin_site: Path) -> None:
    """The `takes` column of `loggerhub backends`, for a plugin without most hooks and for one
    with all of them. (The command itself imports every installed tracker SDK: a minute.)"""
    from conftest import install_distribution

    from loggerhub.cli import _takes
    from loggerhub.delivery import supported_records

    install_distribution(plugin_site, "loggerhub-metricsonly", "0.1", {"metricsonly": "metrics_only:Plugin"},
                         {"metrics_only": METRICS_ONLY})
    metrics_only = resolve(["metricsonly"])[0].load()
    assert supported_records(metrics_only) == {"metrics"}
    assert _takes(supported_records(metrics_only)) == (
        "all but params, image, figure, artifact, checkpoint, text, table, system_metrics, console, context, "
        "events")
    assert _takes(supported_records(resolve(["recorder"])[0].load())) == "all"
    assert _takes(frozenset({"metrics", "epoch_end"})).endswith(
        "context, train_start, train_end, epoch_start, step_start, step_end, validation_end")
