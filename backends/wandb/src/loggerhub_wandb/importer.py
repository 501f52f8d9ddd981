"""``loggerhub import wandb PATH``: W&B runs back into loggerhub runs.

PATH is a ``wandb/`` folder (or the folder holding it), one run directory
(``offline-run-<time>-<id>`` or ``run-<time>-<id>``, as W&B writes them offline and online), or a
history export: a CSV or Parquet file with a ``_step`` column (``run.history()`` saved with
pandas, or a panel's "Export CSV").

Run directories are read with :mod:`loggerhub_wandb.reader` (wandb's own protobuf records), every
directory of one run id being one run (a resumed run writes one per delivery). The input is
untrusted: every file is read through the contract's :class:`Source` (contained in PATH, size
capped), and a malformed record or file is skipped and reported, never fatal.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loggerhub_hookspecs import ArtifactKind, Box, RunError, Status, TableRole
from loggerhub_hookspecs.importers import (
    BuilderFactory,
    Importer,
    ImportRefused,
    Pending,
    Source,
    TooLarge,
    contained_member,
    safe_name,
    write_in_order,
    write_metrics,
)
from loggerhub_wandb import keys, reader

CONFUSION_SPEC = "wandb/confusion_matrix/v1"
_STEP_ALIAS = re.compile(r"^step-(\d+)$")
_KILLED_EXIT_CODES = {130, 137, 143}
_STATUSES = {status.value for status in Status}
_ARTIFACT_KINDS = {kind.value: kind for kind in ArtifactKind}


class WandbImporter(Importer):
    name = "wandb"
    location_help = "a wandb/ folder, one W&B run directory, or a history export (.csv, .parquet)"

    def read(self, source: Source, builder_factory: BuilderFactory, options: Mapping[str, Any]) -> None:
        path = Path(source.location).expanduser().absolute()
        if path.is_file() and path.suffix.lower() in (".csv", ".parquet"):
            _import_export(source.file(path), builder_factory, source)
            return
        if not path.is_dir():
            raise FileNotFoundError(f"no W&B run directory, wandb/ folder or history export at {path}")
        if reader.wandb_file(path) is not None:
            folders = [path]
        else:
            folders = reader.run_dirs(path) or reader.run_dirs(path / "wandb")
        if not folders:
            raise FileNotFoundError(f"no W&B run directory (offline-run-*/run-*.wandb) in {path}")
        runs: dict[tuple[str, str, str], list[reader.WandbRun]] = {}
        for folder in folders:
            try:
                wandb_file = reader.wandb_file(source.contained(folder))
                if wandb_file is None:
                    continue
                source.file(wandb_file)  # contained and under the file size limit
                part = reader.read_run(folder, max_bytes=source.limits.file_bytes)
            except (OSError, ValueError) as error:
                source.skip(folder, None, f"not a readable W&B run: {type(error).__name__}: {error}")
                continue
            for reason, count in part.problems.items():
                source.skip(folder, None, f"{count} records skipped: {reason}")
            if not part.run_id:
                source.skip(folder, None, "no run record; the folder is skipped")
                continue
            runs.setdefault((part.entity, part.project, part.run_id), []).append(part)
        for ident in sorted(runs):
            _import_run(reader.merge(runs[ident]), builder_factory, source)


#: ``loggerhub.importers`` entry point.
import_runs = WandbImporter()


# --------------------------------------------------------------------------- run directories


def _import_run(run: reader.WandbRun, factory: BuilderFactory, source: Source) -> None:
    config = {}
    for key, value in run.config.items():
        canonical = keys.from_tracker(key)
        if canonical is not None:
            config[canonical] = value
    builder = factory(
        source_id="/".join(part for part in (run.entity, run.project, run.run_id) if part),
        name=run.name or run.run_id, started_at=run.start_time, config=config, tags=_tags(run.tags),
        source_project=run.project or None,
    )
    if builder is None:
        return
    charts = run.config.get("_wandb", {}).get("visualize", {}) if isinstance(run.config.get("_wandb"), dict) else {}
    with builder:
        for kind, count in sorted(run.other.items()):
            if kind not in ("header", "telemetry", "request", "files", "footer", "final", "preempting"):
                builder.unmapped(f"wandb: {kind} records", count)
        items: list[Pending] = []
        last_values: dict[str, Any] = {}
        for order, row in enumerate(run.history):
            items += _row_items(row, order, charts, source, builder, last_values)
        items += _summary_items(run, last_values, builder)
        items += _artifact_items(run, builder, source)
        write_in_order(items, builder, source)
        summary = run.summary
        ended = summary.get(keys.reserved("ended_at"))
        if not isinstance(ended, (int, float)) or isinstance(ended, bool) or not math.isfinite(ended):
            runtime = summary.get("_runtime")
            ended = max([run.start_time + (runtime if isinstance(runtime, (int, float)) else 0.0),
                         *(item.ts for item in items)])
        status, error = _status(run, builder)
        # The contract's RunBuilder protocol lacks end()'s error; loggerhub's RunBuilder takes it.
        builder.end(status, float(ended), error)


def _row_items(row: reader.HistoryRow, order: int, charts: Mapping[str, Any], source: Source,
               builder: Any, last_values: dict[str, Any]) -> list[Pending]:
    values = row.values
    ts = values.get("_timestamp")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        ts = 0.0
    step = values.get(keys.STEP, row.step)
    if not isinstance(step, int) or isinstance(step, bool):
        step = row.step
    epoch = values.get(keys.EPOCH)
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    where = (f"{row.files.parent.name} history step {row.step}", None)
    is_figure = keys.FIGURE in values
    metrics: dict[str, float] = {}
    items = []
    for index, (key, value) in enumerate(values.items()):
        last_values[key] = value
        canonical = keys.from_tracker(key)
        if canonical is None:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[canonical] = float(value)
        elif isinstance(value, str):
            items.append(Pending(ts, step, order * 1000 + index + 1, _text(canonical, value), where=where))
        elif isinstance(value, dict) and value.get("_type") == "image-file":
            items.append(Pending(ts, step, order * 1000 + index + 1,
                                 _image(canonical, value, row, is_figure, epoch, source), where=where))
        elif isinstance(value, dict) and value.get("_type") == "table-file":
            base = key.removesuffix("_table")
            chart = charts.get(base) if base != key else None
            confusion = isinstance(chart, dict) and chart.get("panel_config", {}).get("panelDefId") == CONFUSION_SPEC
            name = keys.from_tracker(base) if confusion else canonical
            items.append(Pending(ts, step, order * 1000 + index + 1,
                                 _table(name or canonical, value, row, confusion, source), where=where))
        elif isinstance(value, dict) and isinstance(value.get("_type"), str):
            builder.unmapped(f"wandb: {safe_name(value['_type'])} media")
        else:
            builder.unmapped("wandb: history values that are neither numbers, text nor media")
    if metrics:
        items.append(Pending(ts, step, order * 1000,
                             lambda b, s, t: write_metrics(b, metrics, s, t, source, where, epoch=epoch),
                             metrics=True, where=where))
    return items


def _text(key: str, text: str) -> Any:
    return lambda builder, step, ts: builder.text(key, text, step, ts)


def _image(key: str, value: Mapping[str, Any], row: reader.HistoryRow, is_figure: bool, epoch: int | None,
           source: Source) -> Any:
    def emit(builder: Any, step: int, ts: float) -> None:
        png = source.read_bytes(str(value["path"]), base=row.files)
        if is_figure:
            builder.figure(key, png, step, ts, epoch=epoch)
            return
        boxes: list[Box] = []
        for group in (value.get("boxes") or {}).values():
            if isinstance(group, dict) and isinstance(group.get("path"), str):
                boxes += _boxes(json.loads(source.read_bytes(group["path"], base=row.files)))
        caption = value.get("caption")
        builder.image(key, png, step, ts, boxes=boxes, caption=caption if isinstance(caption, str) else None,
                      epoch=epoch)

    return emit


def _boxes(data: Any) -> list[Box]:
    """W&B box data back as loggerhub boxes, in pixels (W&B's default domain is fractions of the
    image; those are kept as they are and said so by the caption-less box: loggerhub boxes are
    pixels, and the image size is not in the box file)."""
    labels = {str(k): str(v) for k, v in (data.get("class_labels") or {}).items()} if isinstance(data, dict) else {}
    boxes = []
    for entry in data.get("box_data", []) if isinstance(data, dict) else []:
        position = entry.get("position", {})
        if {"minX", "maxX", "minY", "maxY"} <= set(position):
            x0, x1, y0, y1 = (float(position[k]) for k in ("minX", "maxX", "minY", "maxY"))
        else:
            (mx, my), width, height = position["middle"], float(position["width"]), float(position["height"])
            x0, x1 = float(mx) - width / 2, float(mx) + width / 2
            y0, y1 = float(my) - height / 2, float(my) + height / 2
        class_id = entry.get("class_id")
        class_id = class_id if isinstance(class_id, int) and not isinstance(class_id, bool) else None
        caption = entry.get("box_caption")
        label = caption if isinstance(caption, str) else labels.get(str(class_id))
        scores = entry.get("scores") or {}
        score = scores.get("score", next(iter(scores.values()), None)) if isinstance(scores, dict) else None
        boxes.append(Box(x0, y0, x1, y1, label=label, score=None if score is None else float(score),
                         class_id=class_id))
    return boxes


def _table(key: str, value: Mapping[str, Any], row: reader.HistoryRow, confusion: bool, source: Source) -> Any:
    def emit(builder: Any, step: int, ts: float) -> None:
        data = json.loads(source.read_bytes(str(value["path"]), base=row.files))
        columns = [str(c) for c in data.get("columns", [])]
        rows = [list(r) for r in data.get("data", [])]
        if confusion:
            labels: list[str] = []
            for actual, predicted, _count in rows:
                for label in (str(actual), str(predicted)):
                    if label not in labels:
                        labels.append(label)
            matrix = [[0] * len(labels) for _ in labels]
            for actual, predicted, count in rows:
                matrix[labels.index(str(actual))][labels.index(str(predicted))] = int(count)
            builder.table(key, labels, matrix, step, ts, role=TableRole.CONFUSION_MATRIX)
        else:
            builder.table(key, columns, rows, step, ts)

    return emit


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _summary_items(run: reader.WandbRun, last_values: Mapping[str, Any], builder: Any) -> list[Pending]:
    """Summary values set on their own (a best score), not the last history value that W&B keeps
    there by default, become params under ``summary/``."""
    values: dict[str, Any] = {}
    for key, value in run.summary.items():
        canonical = keys.from_tracker(key)
        if canonical is None or (key in last_values and _same(last_values[key], value)):
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            values[f"summary/{canonical}"] = value
        elif not (isinstance(value, dict) and "_type" in value):  # media summaries repeat the history
            builder.unmapped("wandb: summary values that are neither numbers nor text")
    if not values:
        return []
    ended = run.summary.get(keys.reserved("ended_at"), run.start_time)
    ts = float(ended) if isinstance(ended, (int, float)) and not isinstance(ended, bool) else run.start_time
    return [Pending(ts, -1, 1 << 41, lambda b, s, t: b.params(values, t), auto_step=True,
                    where=("summary", None))]


def _artifact_items(run: reader.WandbRun, builder: Any, source: Source) -> list[Pending]:
    items = []
    seen: set[tuple[str, str]] = set()
    for index, artifact in enumerate(run.artifacts):
        if artifact.type == "run_table" or (artifact.name, artifact.digest) in seen:
            continue  # a table's own artifact, or the same version logged again
        seen.add((artifact.name, artifact.digest))
        meta = artifact.metadata
        step_alias = next((int(m.group(1)) for a in artifact.aliases if (m := _STEP_ALIAS.match(a))), None)
        checkpoint = artifact.type == "model" and step_alias is not None
        step = meta.get("loggerhub/step", step_alias)
        step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
        ts = meta.get("loggerhub/timestamp")
        ts = float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else run.start_time
        name = meta.get("loggerhub/name") if isinstance(meta.get("loggerhub/name"), str) else artifact.name
        kind = _ARTIFACT_KINDS.get(str(meta.get("loggerhub/kind", artifact.type)), ArtifactKind.FILE)
        if checkpoint:
            kind = ArtifactKind.MODEL
        is_dir = meta.get("loggerhub/is_dir", len(artifact.files) != 1) is True
        emit = _artifact(artifact, str(name), kind, checkpoint, is_dir, builder, source)
        items.append(Pending(ts, -1 if step is None else step, (1 << 40) + index, emit, auto_step=step is None,
                             where=(f"artifact {artifact.name}", None)))
    return items


def _artifact(artifact: reader.ArtifactEntry, name: str, kind: ArtifactKind, checkpoint: bool, is_dir: bool,
              builder: Any, source: Source) -> Any:
    def emit(target: Any, step: int, ts: float) -> None:
        # The manifest names the files it was made from (W&B's staging copy, or the file itself
        # for a reference): they must lie inside the source, or in a folder allowed with
        # --allow-read (loggerhub's own run directory, for runs this backend delivered).
        staged = builder.scratch / "artifacts" / safe_name(artifact.name) / safe_name(artifact.digest)
        if staged.exists():
            shutil.rmtree(staged)
        for path, (local, size) in sorted(artifact.files.items()):
            relative = contained_member(path)
            file = source.file(local)
            if file.stat().st_size != size:
                raise ValueError(f"{path}: {file.stat().st_size} bytes where the manifest says {size}")
            out = staged / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            source.budget.claim(out.parent, size)
            shutil.copyfile(file, out)
        if is_dir:
            target.artifact(staged, name, ts, kind=kind, step=step, checkpoint=checkpoint)
        else:
            (only,) = [p for p in staged.rglob("*") if p.is_file()]
            target.artifact(only, name, ts, kind=kind, step=step, checkpoint=checkpoint)

    return emit


def _tags(tags: list[str]) -> dict[str, str]:
    found = {}
    for tag in tags:
        key, _, value = str(tag).partition(":")
        found[key] = value
    return found


def _status(run: reader.WandbRun, builder: Any) -> tuple[Status, RunError | None]:
    summary = run.summary
    written = summary.get(keys.reserved("status"))
    error = None
    if isinstance(summary.get(keys.reserved("error/type")), str):
        error = RunError(str(summary[keys.reserved("error/type")]),
                         str(summary.get(keys.reserved("error/message"), "")),
                         str(summary.get(keys.reserved("error/traceback"), "")))
    if written in _STATUSES:
        return Status(written), error
    if run.exit_code is None:
        builder.unmapped("wandb: run without an exit record (crashed or still running): imported as KILLED")
        return Status.KILLED, error
    if run.exit_code == 0:
        return Status.FINISHED, error
    if run.exit_code in _KILLED_EXIT_CODES:
        return Status.KILLED, error
    return Status.FAILED, error or RunError("ExitCode", f"the process exited with code {run.exit_code}")


# --------------------------------------------------------------------------- history exports


def _import_export(path: Path, factory: BuilderFactory, source: Source) -> None:
    """A history table (CSV or Parquet) as one run: ``_step`` the step, ``_timestamp`` the time,
    every other numeric column a metric; W&B's own ``_`` columns are not metrics."""
    rows = _export_rows(path, source)
    if not rows or "_step" not in rows[0]:
        raise ImportRefused(f"{path.name}: not a W&B history export (no _step column)")
    stamps = [r["_timestamp"] for r in rows if _number(r.get("_timestamp")) is not None]
    started = float(min(stamps)) if stamps else 0.0
    builder = factory(source_id=f"export/{path.name}", name=path.stem, started_at=started, source_project=None)
    if builder is None:
        return
    items = []
    with builder:
        for number, row in enumerate(rows, start=2):
            step = _number(row.get("_step"))
            if step is None or step < 0 or not float(step).is_integer():
                source.skip(path, number, f"no step: {row.get('_step')!r}")
                continue
            ts = _number(row.get("_timestamp"))
            values: dict[str, float] = {}
            for column, cell in row.items():
                canonical = keys.from_tracker(str(column))
                value = _number(cell)
                if canonical is not None and value is not None:
                    values[canonical] = value
                elif canonical is not None and cell not in (None, ""):
                    builder.unmapped("wandb export: cells that are not numbers")
            if values:
                where = (path.name, number)
                items.append(Pending(started if ts is None else ts, int(step), number,
                                     _export_metrics(values, source, where), metrics=True, where=where))
        write_in_order(items, builder, source)
        builder.end(Status.FINISHED, max([started, *(item.ts for item in items)]))
        builder.unmapped("wandb export: status (an export has none): imported as FINISHED")


def _export_metrics(values: dict[str, float], source: Source, where: tuple[str, int | None]) -> Any:
    return lambda builder, step, ts: write_metrics(builder, values, step, ts, source, where)


def _number(cell: Any) -> float | None:
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    try:
        return float(str(cell))
    except ValueError:
        return None


def _export_rows(path: Path, source: Source) -> list[dict[str, Any]]:
    if path.stat().st_size > source.limits.item_bytes:
        raise TooLarge(f"{path.name} is larger than {source.limits.item_bytes} bytes (raise with --limit item_bytes)")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError as error:
            raise ImportRefused("reading Parquet needs pyarrow: pip install pyarrow") from error
        try:
            table = parquet.read_table(path)
        except Exception as error:  # noqa: BLE001 - a malformed file, whatever pyarrow calls it
            raise ImportRefused(f"{path.name}: not a readable Parquet file: {error}") from error
        return list(table.to_pylist())
    import csv
    import io

    text = source.read_bytes(path).decode("utf-8-sig", errors="replace")
    return list(csv.DictReader(io.StringIO(text)))

