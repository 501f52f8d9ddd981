"""Helpers for tests of this backend and of runs that cross it (round trips).

Importing this module does not import wandb.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["SANDBOX_VARIABLES", "read_back", "sandbox_environment"]

#: Variables a test unsets so that no user setting (a key, a server, a project) leaks in.
SANDBOX_VARIABLES = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR",
                     "WANDB_RUN_GROUP", "WANDB_BASE_URL", "WANDB_RUN_ID", "WANDB_RESUME")


def sandbox_environment(root: str | os.PathLike[str]) -> dict[str, str]:
    """Variables that keep wandb silent and its cache, staging and settings folders under root
    (they default to the home directory)."""
    root = Path(root)
    return {
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_DATA_DIR": str(root / "data"),
        "WANDB_CONFIG_DIR": str(root / "config"),
        "WANDB_DISABLE_CODE": "true",
    }


def read_back(wandb_dir: str | os.PathLike[str], run_id: str) -> Any:
    """What the ``.wandb`` files of one W&B run hold, as a conformance ``TrackerView`` keyed by
    W&B's keys. Reads the records with :mod:`loggerhub_wandb.reader` and the media files they name.
    """
    from loggerhub.testing.conformance import TrackerView
    from loggerhub_wandb import keys, reader

    run = reader.merge(reader.read_parts(Path(wandb_dir) / "wandb", run_id))
    summary = run.summary
    view = TrackerView(status=summary.get(keys.reserved("status")), ended_at=summary.get(keys.reserved("ended_at")))
    if keys.reserved("error/type") in summary:
        view.error = f"{summary[keys.reserved('error/type')]}: {summary.get(keys.reserved('error/message'), '')}"
    # W&B's custom charts (the confusion matrix) keep their table under "<key>_table".
    charts = run.config.get("_wandb", {}).get("visualize", {})
    view.params = {key: str(value) for key, value in run.config.items() if key != "_wandb"}
    texts: dict[str, list[str]] = {}
    for row in run.history:
        step = int(row.values.get(keys.STEP, row.step))
        is_figure = keys.FIGURE in row.values
        for key, value in row.values.items():
            if keys.from_tracker(key) is None:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                view.metrics.setdefault(key, []).append((step, float(value)))
            elif isinstance(value, str):
                texts.setdefault(key, []).append(value)
            elif isinstance(value, dict) and value.get("_type") == "image-file":
                target = view.figures if is_figure else view.images
                target[key] = target.get(key, 0) + 1
                boxes = value.get("boxes", {}).get("predictions")
                if boxes:
                    box_file = row.file(boxes["path"])
                    assert box_file is not None, boxes
                    view.boxes[key] = view.boxes.get(key, 0) + len(json.loads(box_file.read_text())["box_data"])
            elif isinstance(value, dict) and value.get("_type") == "table-file":
                table_file = row.file(value["path"])
                assert table_file is not None, value
                name = key.removesuffix("_table") if key.removesuffix("_table") in charts else key
                view.tables[name] = json.loads(table_file.read_text())
    view.texts = texts
    view.artifacts = {f"{artifact.name}/{path}" for artifact in run.artifacts if artifact.type != "run_table"
                      for path in artifact.files}
    return view


def journal_view(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A loggerhub run's records, field by field, in a form two runs can be compared in: what a
    round trip must keep. Times are rounded to the microsecond; NaN is compared as its text."""
    from loggerhub import codec
    from loggerhub.journal import JournalReader

    root = Path(run_dir)
    view: dict[str, Any] = {"params": {}, "metrics": set(), "images": [], "figures": [], "texts": [], "tables": [],
                            "artifacts": [], "checkpoints": [], "status": None, "error": None}
    for entry in JournalReader(root).entries():
        if entry.type == codec.RUN_START:
            view["params"].update(entry.data.get("config") or {})
        elif entry.type == codec.PARAMS:
            view["params"].update(codec.decode(entry, root))
        elif entry.type == codec.METRICS:
            view["metrics"] |= {(p.key, p.step, repr(p.value), round(p.timestamp, 6), p.epoch)
                                for p in codec.metric_points(entry)}
        elif entry.type == codec.IMAGE:
            image = codec.decode(entry, root)
            view["images"].append((image.key, image.step, round(image.timestamp, 6), image.width, image.height,
                                   image.boxes, image.caption))
        elif entry.type == codec.FIGURE:
            figure = codec.decode(entry, root)
            view["figures"].append((figure.key, figure.step, round(figure.timestamp, 6), figure.width, figure.height))
        elif entry.type == codec.TEXT:
            text = codec.decode(entry, root)
            view["texts"].append((text.key, text.step, round(text.timestamp, 6), text.text))
        elif entry.type == codec.TABLE:
            table = codec.decode(entry, root)
            view["tables"].append((table.key, table.step, round(table.timestamp, 6), tuple(table.columns),
                                   tuple(tuple(row) for row in table.rows), table.role.value))
        elif entry.type in (codec.ARTIFACT, codec.CHECKPOINT):
            artifact = codec.decode(entry, root)
            files = sorted((p.relative_to(artifact.path).as_posix(), p.read_bytes()) for p in artifact.path.rglob("*")
                           if p.is_file()) if artifact.is_dir else [("", artifact.path.read_bytes())]
            kind = "checkpoints" if entry.type == codec.CHECKPOINT else "artifacts"
            view[kind].append((artifact.name, artifact.kind.value, artifact.is_dir, artifact.step,
                               round(artifact.timestamp, 6), files))
        elif entry.type == codec.RUN_END:
            status, _ended, error = codec.run_end(entry)
            view["status"], view["error"] = status.value, error
    return view
