"""The ``loggerhub`` command line: browse the local run store and deliver runs to trackers."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

# Subcommands that live with their feature; each module has ``add_parser(subparsers)`` and
# imports its heavy dependencies only when the command runs.
_FEATURE_COMMANDS = ("loggerhub.importing", "loggerhub.integrations.yolo_cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (LookupError, ValueError, OSError, RuntimeError) as error:
        print(f"loggerhub: error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loggerhub", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--dir", type=Path, default=None,
                        help="the local run store (default: LOGGERHUB_DIR, then ./loggerhub-runs)")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    backends = commands.add_parser("backends", help="list installed backends and whether their clients import")
    backends.set_defaults(handler=cmd_backends)

    runs = commands.add_parser("runs", help="list local runs")
    runs.add_argument("--project", default=None)
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="params, metric summaries and media counts of a run")
    show.add_argument("run", help="run directory, run id, a unique prefix of one, or latest")
    show.set_defaults(handler=cmd_show)

    plot = commands.add_parser("plot", help="plot metrics of a run over steps to a PNG")
    plot.add_argument("run")
    plot.add_argument("keys", nargs="+", metavar="KEY")
    plot.add_argument("-o", "--output", type=Path, required=True)
    plot.set_defaults(handler=cmd_plot)

    sync = commands.add_parser("sync", help="deliver what a run has not yet delivered to its trackers")
    sync.add_argument("run")
    sync.add_argument("--to", default=None, help="comma-separated trackers (default: the run's own)")
    sync.add_argument("--option", action="append", default=[], metavar="TRACKER.KEY=VALUE",
                      help="an option for a tracker, e.g. mlflow.tracking_uri=http://127.0.0.1:5000")
    sync.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    sync.set_defaults(handler=cmd_sync)

    for module in _FEATURE_COMMANDS:
        try:
            importlib.import_module(module).add_parser(commands)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise  # a missing dependency of a feature that exists is a real error
    return parser


def _version() -> str:
    from loggerhub import __version__

    return f"loggerhub {__version__}"


def _root(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    from loggerhub.config import Settings

    return Settings().dir


def cmd_backends(args: argparse.Namespace) -> int:
    from loggerhub.plugins import BackendHooks, get_plugin_manager, installed_backends

    rows = []
    for backend in installed_backends().values():
        try:
            plugin = backend.load()
            hooks = BackendHooks(get_plugin_manager({backend.name: plugin}), backend.name)
            client = f"ok ({hooks.client_version()})"
        except Exception as error:  # noqa: BLE001 - the table reports every failure
            client = f"FAILS: {type(error).__name__}: {error}"
        rows.append((backend.name, backend.distribution, backend.version, client))
    _table(("backend", "distribution", "version", "client"), rows)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from loggerhub.store import iter_runs, summarise

    rows = []
    for run_dir in iter_runs(_root(args)):
        summary = summarise(run_dir)
        if args.project and summary.project != args.project:
            continue
        ended = summary.ended_at
        duration = "-" if ended is None else f"{ended - summary.started_at:.1f}s"
        counts = summary.counts
        rows.append((
            summary.run_id, summary.project, summary.name, summary.status,
            _time(summary.started_at), duration, str(summary.points),
            str(counts.get("image", 0) + counts.get("figure", 0)),
            str(counts.get("artifact", 0) + counts.get("checkpoint", 0)),
        ))
    if not rows:
        print(f"no runs under {_root(args)}")
        return 0
    _table(("run", "project", "name", "status", "started", "duration", "points", "media", "artifacts"), rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from loggerhub.delivery import ConsumerStatus, consumer_names
    from loggerhub.journal import RunPaths
    from loggerhub.store import dumps, find_run, summarise

    run_dir = find_run(args.run, _root(args))
    summary = summarise(run_dir)
    print(f"run      {summary.run_id}  ({summary.name}, project {summary.project})")
    print(f"dir      {run_dir}")
    print(f"status   {summary.status}   started {_time(summary.started_at)}")
    print(f"backends {', '.join(summary.backends)}")
    print("\nparams")
    _table(("key", "value"), [(k, dumps(v)) for k, v in sorted(summary.params.items())], indent=2)
    print("\nmetrics")
    _table(
        ("key", "last", "min", "max", "points"),
        [(k, f"{m.last:.6g}", f"{m.min:.6g}", f"{m.max:.6g}", str(m.count))
         for k, m in sorted(summary.metrics.items())],
        indent=2,
    )
    counts = summary.counts
    print(f"\nmedia    {counts.get('image', 0)} images, {counts.get('figure', 0)} figures, "
          f"{counts.get('text', 0)} texts, {counts.get('table', 0)} tables")
    print(f"files    {counts.get('artifact', 0)} artifacts, {counts.get('checkpoint', 0)} checkpoints")
    if counts.get("rejected"):
        print(f"rejected {counts['rejected']} inputs (see the journal's rejected records)")
    paths = RunPaths(run_dir)
    total = sum(counts.values())
    for name in consumer_names(paths):
        status = ConsumerStatus.load(paths.consumer_file(name))
        left = total - 1 - status.offset
        print(f"tracker  {name}: {'delivered' if left <= 0 else f'{left} records undelivered'}"
              + (f", {status.rejected} rejected" if status.rejected else "")
              + (f", last error: {status.last_error[:120]}" if status.last_error and left > 0 else ""))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loggerhub.store import find_run, metric_series

    run_dir = find_run(args.run, _root(args))
    series = metric_series(run_dir, args.keys)
    missing = [key for key, (steps, _) in series.items() if not steps]
    if missing:
        raise LookupError(f"no points for {', '.join(missing)} in {run_dir.name}")
    figure, axes = plt.subplots(len(args.keys), 1, figsize=(7, 2.6 * len(args.keys)), squeeze=False)
    for axis, (key, (steps, values)) in zip(axes[:, 0], series.items(), strict=True):
        axis.plot(steps, values, linewidth=1.2)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)
    plt.close(figure)
    print(f"wrote {args.output}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from loggerhub.delivery import sync
    from loggerhub.store import find_run

    run_dir = find_run(args.run, _root(args))
    to = [name.strip() for name in args.to.split(",")] if args.to else None
    results = sync(run_dir, to, timeout=args.timeout, options=tracker_options(args.option),
                   progress=sys.stderr.isatty())
    from loggerhub.journal import JournalReader

    last = JournalReader(run_dir).last_seq()
    failed = 0
    for backend, status in results.items():
        left = last - status.offset
        failed += left > 0
        state = "delivered" if left <= 0 else f"{left} records still undelivered"
        print(f"{backend}: {state} ({status.delivered} delivered in total, {status.rejected} rejected)")
    return 1 if failed else 0


def tracker_options(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--option TRACKER.KEY=VALUE`` arguments as ``{tracker: {key: value}}``."""
    options: dict[str, dict[str, str]] = {}
    for item in items:
        name, equals, value = item.partition("=")
        tracker, dot, key = name.partition(".")
        if not (equals and dot and tracker and key):
            raise ValueError(f"--option takes TRACKER.KEY=VALUE, got {item!r}")
        options.setdefault(tracker, {})[key] = value
    return options


def _time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 0) -> None:
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]
    pad = " " * indent
    print(pad + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        print(pad + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
