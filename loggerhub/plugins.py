"""Plugin discovery: tracker backends come from the ``loggerhub`` entry-point group.

Discovery reads distribution metadata only. A backend's entry-point module is imported when the
backend is selected, and its tracker SDK only when a delivery worker starts it.
"""

from __future__ import annotations

import importlib.metadata as metadata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from loggerhub import __version__
from loggerhub_hookspecs import (
    PROJECT_NAME,
    ArtifactRecord,
    FigureRecord,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    Phase,
    RunInfo,
    Status,
    TableRecord,
    TextRecord,
    specs,
)

ENTRY_POINT_GROUP = PROJECT_NAME
LOCAL = "local"


class UnknownBackend(ValueError):
    """A backend name that no installed plugin provides."""


class BackendLoadError(ImportError):
    """A plugin that is installed but fails to import."""


@dataclass(frozen=True)
class Backend:
    """An installed backend, as its distribution metadata describes it."""

    name: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None  # None for the built-in local backend

    def load(self) -> Any:
        """A fresh plugin instance. Imports the entry-point module, not the tracker SDK."""
        if self.entry_point is None:
            from loggerhub.local import LocalBackend

            return LocalBackend()
        try:
            factory = self.entry_point.load()
            return factory()
        except Exception as error:
            raise BackendLoadError(
                f"backend {self.name!r} from {self.distribution} {self.version} failed to load: "
                f"{type(error).__name__}: {error}"
            ) from error


def installed_backends() -> dict[str, Backend]:
    """Every backend that is installed, local first, without importing any of them."""
    found = {LOCAL: Backend(LOCAL, "loggerhub", __version__, None)}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        found.setdefault(
            entry_point.name,
            Backend(
                entry_point.name,
                dist.metadata["Name"] if dist else "?",
                dist.version if dist else "?",
                entry_point,
            ),
        )
    return found


def resolve(names: Iterable[str]) -> list[Backend]:
    """The installed backends for ``names``, or :class:`UnknownBackend` naming the fix."""
    installed = installed_backends()
    chosen = []
    for name in names:
        if name not in installed:
            raise UnknownBackend(
                f"unknown backend {name!r}. Installed backends: {', '.join(sorted(installed))}. "
                f"To add it: pip install 'loggerhub[{name}]'"
            )
        chosen.append(installed[name])
    return chosen


def get_plugin_manager(plugins: Mapping[str, Any] = {}) -> pluggy.PluginManager:  # noqa: B006
    """A plugin manager with the loggerhub hookspecs and the given plugins, in the given order."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(specs)
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    pm.check_pending()
    return pm


_PHASE_HOOKS = {
    Phase.TRAIN_START: "loggerhub_train_start",
    Phase.TRAIN_END: "loggerhub_train_end",
    Phase.EPOCH_START: "loggerhub_epoch_start",
    Phase.EPOCH_END: "loggerhub_epoch_end",
    Phase.STEP_START: "loggerhub_step_start",
    Phase.STEP_END: "loggerhub_step_end",
    Phase.VALIDATION_END: "loggerhub_validation_end",
}


class BackendHooks:
    """Typed calls into ONE plugin's hook implementations.

    pluggy stops a hook call at the first exception, so a hook is never called across all plugins
    at once: each delivery worker holds the callers of its own plugin only.
    """

    def __init__(self, pm: pluggy.PluginManager, name: str) -> None:
        plugin = pm.get_plugin(name)
        if plugin is None:
            raise KeyError(name)
        self.name = name
        others = [p for p in pm.get_plugins() if p is not plugin]
        self._callers = {
            hook: pm.subset_hook_caller(hook, remove_plugins=others)
            for hook in dir(pm.hook)
            if hook.startswith("loggerhub_")
        }

    def implements(self, hook: str) -> bool:
        return bool(self._callers[hook].get_hookimpls())

    def client_version(self) -> str | None:
        result: str | None = self._callers["loggerhub_client_version"]()
        return result

    def run_start(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._callers["loggerhub_run_start"](run=run, state=state)

    def run_resume(self, run: RunInfo, state: dict[str, Any]) -> None:
        self._callers["loggerhub_run_resume"](run=run, state=state)

    def run_end(self, run: RunInfo, status: Status, ended_at: float) -> None:
        self._callers["loggerhub_run_end"](run=run, status=status, ended_at=ended_at)

    def lifecycle(self, event: LifecycleEvent) -> None:
        self._callers[_PHASE_HOOKS[event.phase]](event=event)

    def checkpoint_saved(self, checkpoint: ArtifactRecord) -> None:
        self._callers["loggerhub_checkpoint_saved"](checkpoint=checkpoint)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._callers["loggerhub_log_params"](params=params)

    def log_metrics(self, points: Sequence[MetricPoint]) -> None:
        self._callers["loggerhub_log_metrics"](points=points)

    def log_image(self, image: ImageRecord) -> None:
        self._callers["loggerhub_log_image"](image=image)

    def log_figure(self, figure: FigureRecord) -> None:
        self._callers["loggerhub_log_figure"](figure=figure)

    def log_artifact(self, artifact: ArtifactRecord) -> None:
        self._callers["loggerhub_log_artifact"](artifact=artifact)

    def log_text(self, text: TextRecord) -> None:
        self._callers["loggerhub_log_text"](text=text)

    def log_table(self, table: TableRecord) -> None:
        self._callers["loggerhub_log_table"](table=table)
