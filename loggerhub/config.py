"""Settings, validated with pydantic-settings at the ``init`` boundary (never on the hot path).

Precedence, highest first: arguments to ``loggerhub.init``, ``LOGGERHUB_*`` environment variables,
``loggerhub.toml`` in the working directory, then ``[tool.loggerhub]`` in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Everything a run can be configured with, besides its name, project and config."""

    model_config = SettingsConfigDict(
        env_prefix="LOGGERHUB_",
        toml_file="loggerhub.toml",
        pyproject_toml_table_header=("tool", "loggerhub"),
        extra="forbid",
    )

    #: Backends to log to. ``local`` (the journal) is always included.
    backends: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["local"])
    #: Root folder of the local run store: runs live in ``<dir>/<project>/<run id>``.
    dir: Path = Path("loggerhub-runs")
    #: Longest time a logged record waits in memory before it is appended to the journal.
    flush_interval: float = Field(0.2, gt=0, le=60)
    #: How long ``run.finish()`` waits for trackers to catch up before it reports what is left.
    drain_timeout: float = Field(60.0, ge=0)
    #: Raise on bad input instead of recording it as rejected and warning.
    strict: bool = False
    #: Log from every distributed rank, not only rank zero.
    per_rank: bool = False
    #: Per-backend options, e.g. ``{"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}``.
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("backends", mode="before")
    @classmethod
    def _split_backends(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("backends")
    @classmethod
    def _local_first(cls, value: list[str]) -> list[str]:
        names = ["local"] + [name for name in value if name != "local"]
        return list(dict.fromkeys(names))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            PyprojectTomlConfigSettingsSource(settings_cls),
        )
