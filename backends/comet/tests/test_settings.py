"""Options and their environment fallbacks (resolution only: nothing is logged here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from loggerhub_comet._session import Settings, import_comet

from loggerhub_hookspecs import RunInfo


def run_with(tmp_path: Path, **options: Any) -> RunInfo:
    return RunInfo(run_id="r", project="loggerhub-project", name="n", dir=tmp_path, config={},
                   started_at=0.0, options=options)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("COMET_API_KEY", "COMET_PROJECT_NAME", "COMET_WORKSPACE", "COMET_OFFLINE_DIRECTORY",
                 "COMET_START_ONLINE", "COMET_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.comet.config
    return monkeypatch


def test_defaults_without_credentials_are_offline(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings.resolve(run_with(tmp_path), import_comet())
    assert settings == Settings(project="loggerhub-project", workspace=None, online=False,
                                offline_dir=tmp_path / "comet", experiment_key=None)


def test_environment_fallbacks(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("COMET_API_KEY", "k" * 20)
    clean_env.setenv("COMET_PROJECT_NAME", "env-project")
    clean_env.setenv("COMET_WORKSPACE", "env-workspace")
    clean_env.setenv("COMET_OFFLINE_DIRECTORY", str(tmp_path / "env-dir"))
    settings = Settings.resolve(run_with(tmp_path), import_comet())
    assert settings == Settings(project="env-project", workspace="env-workspace", online=True,
                                offline_dir=tmp_path / "env-dir", experiment_key=None)


def test_options_win(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("COMET_API_KEY", "k" * 20)
    clean_env.setenv("COMET_PROJECT_NAME", "env-project")
    settings = Settings.resolve(run_with(tmp_path, project="p", workspace="w", online="false",
                                         offline_dir=str(tmp_path / "o"), experiment_key="e" * 32),
                                import_comet())
    assert settings == Settings(project="p", workspace="w", online=False, offline_dir=tmp_path / "o",
                                experiment_key="e" * 32)


def test_bad_boolean_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="online"):
        Settings.resolve(run_with(tmp_path, online="maybe"), import_comet())


def test_experiment_key_must_be_a_comet_key(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 to 50"):
        Settings.resolve(run_with(tmp_path, experiment_key="short"), import_comet())


@pytest.mark.parametrize(("variables", "online"), [
    ({"COMET_START_ONLINE": "false"}, False),
    ({"COMET_START_ONLINE": "0"}, False),
    ({"COMET_MODE": "offline"}, False),
    ({"COMET_MODE": "OFFLINE"}, False),
    ({"COMET_MODE": "online"}, True),
    # comet_ml's own switch first, then Ultralytics'.
    ({"COMET_START_ONLINE": "true", "COMET_MODE": "offline"}, True),
    ({"COMET_START_ONLINE": "false", "COMET_MODE": "online"}, False),
])
def test_comets_own_switches_override_the_api_key(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                                                  variables: dict[str, str], online: bool) -> None:
    clean_env.setenv("COMET_API_KEY", "k" * 20)
    for name, value in variables.items():
        clean_env.setenv(name, value)
    assert Settings.resolve(run_with(tmp_path), import_comet()).online is online
    # The option still wins over every environment variable.
    assert Settings.resolve(run_with(tmp_path, online=not online), import_comet()).online is (not online)


def test_comet_start_online_in_the_config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("COMET_API_KEY", "k" * 20)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".comet.config").write_text("[comet_start]\nonline = false\n")
    assert Settings.resolve(run_with(tmp_path), import_comet()).online is False


@pytest.mark.parametrize(("name", "value"), [("COMET_START_ONLINE", "maybe"), ("COMET_MODE", "disabled")])
def test_unreadable_switches_are_errors(clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str,
                                        value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings.resolve(run_with(tmp_path), import_comet())
