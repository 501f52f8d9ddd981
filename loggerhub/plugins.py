"""Plugin discovery: tracker backends come from the ``loggerhub`` entry-point group.

Discovery reads distribution metadata only. A backend's entry-point module is imported when the
backend is selected, and its tracker SDK only when a delivery worker starts it.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from loggerhub import __version__
from loggerhub_hookspecs import PROJECT_NAME, specs

ENTRY_POINT_GROUP = PROJECT_NAME
LOCAL = "local"


#: The built-in backend, described by the same entry point an installed plugin has, and loaded the
#: same way. It is not declared in loggerhub's own metadata because it must also be there when
#: loggerhub runs from a source tree, or from an editable install made before it existed.
_LOCAL_ENTRY_POINT = metadata.EntryPoint(name=LOCAL, value="loggerhub.local:LocalBackend", group=PROJECT_NAME)


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
    entry_point: metadata.EntryPoint

    def load(self) -> Any:
        """A fresh plugin instance. Imports the entry-point module, not the tracker SDK."""
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
    found = {LOCAL: Backend(LOCAL, "loggerhub", __version__, _LOCAL_ENTRY_POINT)}
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


def resolve(names: Iterable[str], origin: str | None = None) -> list[Backend]:
    """The installed backends for ``names``, or :class:`UnknownBackend` naming the fix.

    :param origin: where the names came from (``LOGGERHUB_BACKENDS``, a config file), for the
        error message.
    """
    installed = installed_backends()
    chosen = []
    for name in names:
        if name not in installed:
            raise UnknownBackend(_unknown_message(name, sorted(installed), origin))
        chosen.append(installed[name])
    return chosen


def _unknown_message(name: str, installed: list[str], origin: str | None) -> str:
    message = f"unknown backend {name!r}" + (f" (from {origin})" if origin else "")
    close = difflib.get_close_matches(name, installed, n=1)
    message += f": did you mean {close[0]!r}?" if close else "."
    message += f" Installed backends: {', '.join(installed)}."
    if name in _tracker_extras():
        message += f" To add it: pip install 'loggerhub[{name}]'"
    return message


def _tracker_extras() -> set[str]:
    """The extras of loggerhub's own distribution that install a tracker plugin (``loggerhub-<x>``)."""
    try:
        dist = metadata.metadata("loggerhub")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return set()
    extras = set(dist.get_all("Provides-Extra") or ())
    found = set()
    for requirement in dist.get_all("Requires-Dist") or ():
        match = re.match(r"loggerhub-([A-Za-z0-9_.-]+).*;.*\bextra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if match and match.group(2) in extras and _normalise(match.group(1)) == _normalise(match.group(2)):
            found.add(match.group(2))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def get_plugin_manager(plugins: Mapping[str, Any] = {}) -> pluggy.PluginManager:  # noqa: B006
    """A plugin manager with the loggerhub hookspecs and the given plugins, in the given order.

    loggerhub itself only ever registers ONE plugin per manager: each tracker is delivered by its
    own consumer, and pluggy stops a hook call at the first exception, so a hook is never called
    across trackers. ``pm.hook.<name>(...)`` therefore calls that one plugin; no subset callers.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(specs)
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    pm.check_pending()
    return pm
