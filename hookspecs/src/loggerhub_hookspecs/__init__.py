"""The loggerhub hook contract: hook specifications, typed records and the ``hookimpl`` marker."""

from __future__ import annotations

import pluggy

from loggerhub_hookspecs.records import (
    ArtifactKind,
    ArtifactRecord,
    Box,
    ConsoleRecord,
    FigureRecord,
    GitState,
    ImageRecord,
    LifecycleEvent,
    MetricPoint,
    ParamValue,
    Phase,
    Rejected,
    RunContext,
    RunError,
    RunInfo,
    Status,
    TableRecord,
    TableRole,
    TextRecord,
    Unsupported,
)

#: The pluggy project name, and the entry-point group plugins register under.
PROJECT_NAME = "loggerhub"

#: Decorates a plugin's hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__version__ = "0.3.0"

__all__ = [
    "PROJECT_NAME",
    "ArtifactKind",
    "ArtifactRecord",
    "Box",
    "ConsoleRecord",
    "FigureRecord",
    "GitState",
    "ImageRecord",
    "LifecycleEvent",
    "MetricPoint",
    "ParamValue",
    "Phase",
    "Rejected",
    "RunContext",
    "RunError",
    "RunInfo",
    "Status",
    "TableRecord",
    "TableRole",
    "TextRecord",
    "Unsupported",
    "hookimpl",
]
