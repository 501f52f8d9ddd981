"""Settings, validated with pydantic-settings at the ``init`` boundary (never on the hot path).

Precedence, highest first: arguments to ``loggerhub.init``, ``LOGGERHUB_*`` environment variables,
``loggerhub.toml`` in the working directory, then ``[tool.loggerhub]`` in ``pyproject.toml``.

A setting that is wrong in any of them raises one :class:`ConfigError` that names where the value
came from (the file, the environment variable or the argument), the key, and the closest known
key when the key itself is misspelt.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE = "loggerhub.toml"
PYPROJECT_TABLE = "[tool.loggerhub]"


class ConfigError(ValueError):
    """A setting loggerhub cannot use, named with its source and key."""


# Where each key of the Settings being built came from; set only while Settings() runs.
_origins: ContextVar[dict[str, str] | None] = ContextVar("loggerhub_config_origins", default=None)


class Settings(BaseSettings):
    """Everything a run can be configured with, besides its name, project and config."""

    model_config = SettingsConfigDict(
        env_prefix="LOGGERHUB_",
        toml_file=CONFIG_FILE,
        pyproject_toml_table_header=("tool", "loggerhub"),
        extra="forbid",
    )

    backends: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["local"])
    """Backends to log to: a list of names, or one comma-separated string
    (``"mlflow,tensorboard"``). ``local`` (the journal) is always included.
    """
    dir: Path = Path("loggerhub-runs")
    """Root folder of the local run store: runs live in ``<dir>/<project>/<run id>``."""
    flush_interval: float = Field(0.2, gt=0, le=60)
    """Longest time a logged record waits in memory before it is appended to the journal."""
    drain_timeout: float = Field(60.0, ge=0)
    """How long ``run.finish()`` waits for trackers to catch up before it reports what is left."""
    strict: bool = False
    """Raise on bad input instead of recording it as rejected and warning."""
    per_rank: bool = False
    """Log from every distributed rank, not only rank zero: one run per rank, in one group."""
    group: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    """The group id of a ``per_rank`` job (letters, digits, ``_.-``, as trackers take it in names and
    paths); by default the launcher's (``TORCHELASTIC_RUN_ID``, SLURM's job id, ...)."""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-backend options, e.g. ``{"mlflow": {"tracking_uri": "http://127.0.0.1:5000"}}``."""
    system_metrics: bool = True
    """Sample CPU, memory, disk, network and GPU use into ``system/...`` series (docs/telemetry.md)."""
    system_metrics_interval: float = Field(10.0, ge=0.1, le=3600)
    """Seconds between two system samples."""
    console: bool = True
    """Tee the process's stdout and stderr (file descriptors 1 and 2) into the journal."""
    capture_context: bool = True
    """Record the command line, host, packages and git state of a new run once, at ``init``."""

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        origins: dict[str, str] = {}
        token = _origins.set(origins)
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigError(_describe(error, origins)) from None
        finally:
            _origins.reset(token)
        self._origins = origins

    def origin(self, key: str) -> str | None:
        """Where the value of ``key`` came from (``"LOGGERHUB_BACKENDS"``, a file), None for a default."""
        return self._origins.get(key)

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
            _Traced(init_settings, lambda key: f"the {key}= argument"),
            _Traced(env_settings, lambda key: f"{settings_cls.model_config.get('env_prefix', '')}{key.upper()}"),
            _read_toml(CONFIG_FILE, lambda: _TracedToml(settings_cls)),
            _read_toml("pyproject.toml", lambda: _TracedPyproject(settings_cls)),
        )


def _note(values: dict[str, Any], origin: Callable[[str], str]) -> None:
    origins = _origins.get()
    if origins is not None:
        for key in values:
            origins.setdefault(key, origin(key))  # sources run highest priority first


class _Traced(PydanticBaseSettingsSource):
    """A settings source that notes, for each key it supplies, where the value came from."""

    def __init__(self, source: PydanticBaseSettingsSource, origin: Callable[[str], str]) -> None:
        super().__init__(source.settings_cls)
        self._source = source
        self._origin = origin
        self.__name__ = type(source).__name__  # pydantic-settings keys its per-source data by this

    def _set_current_state(self, state: dict[str, Any]) -> None:
        super()._set_current_state(state)
        self._source._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        super()._set_settings_sources_data(states)
        self._source._set_settings_sources_data(states)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = self._source()
        _note(values, self._origin)
        return values


class _TracedToml(TomlConfigSettingsSource):
    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        _note(values, lambda key: CONFIG_FILE)
        return values


class _TracedPyproject(PyprojectTomlConfigSettingsSource):
    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        _note(values, lambda key: f"{self.toml_file_path} {PYPROJECT_TABLE}")
        return values


def _read_toml(path: str, make: Callable[[], PydanticBaseSettingsSource]) -> PydanticBaseSettingsSource:
    try:
        return make()
    except ValueError as error:  # tomllib.TOMLDecodeError (tomli's on Python 3.10)
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path} cannot be read: {error.strerror or error}") from None


def _describe(error: ValidationError, origins: dict[str, str]) -> str:
    """One line per problem: where, which key, what is wrong, and the key that was probably meant."""
    known = list(Settings.model_fields)
    problems = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        top = loc[0] if loc else ""
        where = origins.get(top, "settings")
        key = ".".join(loc)
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(top, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            problems.append(f"{where}: unknown key {key!r}{hint}")
        else:
            problems.append(f"{where}: {key}: {item['msg']}{_shown(top, item['input'])}")
    return "; ".join(problems)


def _shown(key: str, value: Any) -> str:
    # Options may hold credentials, and a long value is no help on one line: show short scalars only.
    if key == "options" or not isinstance(value, (str, int, float, bool)) or len(repr(value)) > 60:
        return ""
    return f" (got {value!r})"


def tracker_options(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``--option TRACKER.KEY=VALUE`` arguments (``loggerhub sync`` and ``import``) as
    ``{tracker: {key: value}}``."""
    options: dict[str, dict[str, str]] = {}
    for item in items:
        name, equals, value = item.partition("=")
        tracker, dot, key = name.partition(".")
        if not (equals and dot and tracker and key):
            raise ValueError(f"--option takes TRACKER.KEY=VALUE, got {item!r}")
        options.setdefault(tracker, {})[key] = value
    return options
