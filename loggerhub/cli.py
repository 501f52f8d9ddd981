"""The ``loggerhub`` command line: browse the local run store and deliver runs to trackers."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import difflib
import importlib
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Subcommands that live with their feature; each module has ``add_parser(subparsers)`` and
# imports its heavy dependencies only when the command runs.
_FEATURE_COMMANDS = ("loggerhub.importing", "loggerhub.integrations.yolo_cli", "loggerhub.report")


# What a user can get wrong (a run that does not exist, a bad option, a broken loggerhub.toml, an
# unknown or broken backend, a file that cannot be written): one line, exit status 2, as argparse
# does for a bad command line. Anything else is a bug and keeps its traceback.
_USER_ERRORS = (LookupError, ValueError, OSError, RuntimeError, ImportError)
USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The feature commands cost ~0.4 s to set up (the importers' plugins are loaded to list them):
    # more than `loggerhub runs` itself takes on a store of 10,000 runs. A core command skips them.
    parser = build_parser(features=_command(argv) not in _CORE_COMMANDS)
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return USAGE_ERROR
    try:
        return int(args.handler(args) or 0)
    except _USER_ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"loggerhub: error: {message}", file=sys.stderr)
        return USAGE_ERROR


_CORE_COMMANDS = frozenset({"backends", "runs", "show", "plot", "sync"})


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is neither an option nor --dir's value."""
    words = iter(argv)
    for word in words:
        if word == "--dir":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(*, features: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loggerhub", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--dir", type=Path, default=None, help=_DIR_HELP)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    backends = commands.add_parser("backends", help="list installed backends and whether their clients import")
    backends.set_defaults(handler=cmd_backends)

    runs = commands.add_parser("runs", help="list local runs")
    runs.add_argument("--project", default=None)
    runs.add_argument("--group", default=None, help="only the runs of this group (per_rank=True runs of one job)")
    runs.set_defaults(handler=cmd_runs)

    show = commands.add_parser("show", help="params, metric summaries and media counts of a run, or a group's runs")
    show.add_argument("run", help="run directory, run id, a unique prefix of one, latest, or a group id")
    show.set_defaults(handler=cmd_show)

    plot = commands.add_parser("plot", help="plot metrics of a run over steps to a PNG")
    plot.add_argument("run")
    plot.add_argument("keys", nargs="+", metavar="KEY")
    plot.add_argument("-o", "--output", type=Path, required=True)
    plot.set_defaults(handler=cmd_plot)

    sync = commands.add_parser("sync", help="deliver what a run (or each run of a group) has not yet "
                                            "delivered to its trackers")
    sync.add_argument("run", help="a run id, a unique prefix, a run directory, latest, or a group id")
    sync.add_argument("--to", default=None, help="comma-separated trackers (default: the run's own)")
    sync.add_argument("--option", action="append", default=[], metavar="TRACKER.KEY=VALUE",
                      help="an option for a tracker, e.g. mlflow.tracking_uri=http://127.0.0.1:5000")
    sync.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    sync.set_defaults(handler=cmd_sync)

    for module in _FEATURE_COMMANDS if features else ():
        try:
            importlib.import_module(module).add_parser(commands)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise  # a missing dependency of a feature that exists is a real error
    for command in commands.choices.values():
        # `loggerhub runs --dir X` as well as `loggerhub --dir X runs`; SUPPRESS keeps the value
        # given before the command when none is given after it.
        with contextlib.suppress(argparse.ArgumentError):  # the command has its own --dir
            command.add_argument("--dir", type=Path, default=argparse.SUPPRESS, help=_DIR_HELP)
    return parser


_DIR_HELP = "the local run store (default: LOGGERHUB_DIR, then loggerhub.toml, then ./loggerhub-runs)"


def _version() -> str:
    from loggerhub import __version__

    return f"loggerhub {__version__}"


def _root(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    from loggerhub.config import Settings

    return Settings().dir


def cmd_backends(args: argparse.Namespace) -> int:
    from loggerhub.delivery import supported_records
    from loggerhub.plugins import LOCAL, get_plugin_manager, installed_backends

    rows = []
    for backend in installed_backends().values():
        takes = "-"
        try:
            plugin = backend.load()
            client = f"ok ({get_plugin_manager({backend.name: plugin}).hook.loggerhub_client_version()})"
            takes = "all (it is the journal)" if backend.name == LOCAL else _takes(supported_records(plugin))
        except Exception as error:  # noqa: BLE001 - the table reports every failure
            client = f"FAILS: {type(error).__name__}: {error}"
        rows.append((backend.name, backend.distribution, backend.version, client, takes))
    _table(("backend", "distribution", "version", "client", "takes"), rows)
    return 0


def _takes(supported: frozenset[str]) -> str:
    """``all``, or ``all but`` the record kinds a tracker skips (lifecycle phases as ``events``)."""
    from loggerhub.delivery import DISPATCH
    from loggerhub_hookspecs import Phase

    missing = [kind for kind in DISPATCH if kind not in supported]
    phases = {phase.value for phase in Phase}
    if phases <= set(missing):
        missing = [kind for kind in missing if kind not in phases] + ["events"]
    return "all" if not missing else "all but " + ", ".join(missing)


def cmd_runs(args: argparse.Namespace) -> int:
    from loggerhub.index import RunIndex

    rows = []
    # The index (loggerhub/index.py) reads only the journals that changed since the last listing.
    for run in RunIndex(_root(args)).runs(project=args.project or None, group=args.group or None):
        duration = "-" if run.ended_at is None else f"{run.ended_at - run.started_at:.1f}s"
        rows.append((
            run.run_id, run.project, run.name, _member(run.group, run.rank), run.status,
            _time(run.started_at), duration, str(run.points), str(run.media), str(run.artifacts),
        ))
    if not rows:
        print(f"no runs in group {args.group!r} under {_root(args)}" if args.group else f"no runs under {_root(args)}")
        return 0
    _table(("run", "project", "name", "group/rank", "status", "started", "duration", "points", "media",
            "artifacts"), rows)
    return 0


def _member(group: str | None, rank: int | None) -> str:
    return "-" if group is None else f"{group}/{'?' if rank is None else rank}"


def _exact_run(spec: str, root: Path) -> Path | None:
    """The run ``spec`` names exactly (a run directory, or a run id), else None."""
    from loggerhub.store import RunNotFound, find_run

    if spec == "latest":
        return None
    try:
        run_dir = find_run(spec, root)
    except RunNotFound:
        return None
    return run_dir if run_dir.name == spec or Path(spec) == run_dir else None


def _show_group(group: str, root: Path) -> bool:
    """``loggerhub show <group id>``: the group's runs side by side, then the failures of those
    that failed, were killed or crashed. False when no run has this group."""
    from loggerhub import codec
    from loggerhub.index import RunIndex
    from loggerhub.journal import JournalReader
    from loggerhub.store import RunSummary

    members = sorted(RunIndex(root).runs(group=group),
                     key=lambda run: (run.rank is None, run.rank or 0, run.started_at))
    if not members:
        return False
    summaries: list[tuple[Any, RunSummary, int]] = []
    sizes: set[str] = set()
    for run in members:
        summary, last_step = RunSummary(dir=run.dir), -1
        for entry in JournalReader(run.dir).entries():
            summary.add(entry)
            if entry.type == codec.METRICS:
                last_step = max(last_step, int(entry.data.get("step", -1)))
            elif entry.type == codec.RUN_START and entry.data.get("world_size") is not None:
                sizes.add(str(entry.data["world_size"]))
        summary.status = summary.current_status()
        summaries.append((run, summary, last_step))
    keys = sorted({key for _, summary, _ in summaries for key in summary.metrics})
    shown, hidden = keys[:_MAX_GROUP_KEYS], keys[_MAX_GROUP_KEYS:]
    projects = sorted({run.project for run in members})
    print(f"group    {group}  ({len(members)} run{'s' if len(members) != 1 else ''}, "
          f"project {', '.join(projects)}{', world size ' + ', '.join(sorted(sizes)) if sizes else ''})")
    rows = []
    for run, summary, last_step in summaries:
        lasts = [f"{summary.metrics[key].last:.6g}" if key in summary.metrics else "-" for key in shown]
        rows.append(("?" if run.rank is None else str(run.rank), run.run_id, summary.status,
                     "-" if last_step < 0 else str(last_step), str(summary.points), *lasts))
    print()
    _table(("rank", "run", "status", "last step", "points", *shown), rows, indent=2)
    if hidden:
        print(f"  ... and {len(hidden)} more metrics: loggerhub show <run> for each")
    failed = [(run, summary) for run, summary, _ in summaries
              if summary.status in ("FAILED", "KILLED", "CRASHED")]
    if failed:
        print("\nfailures")
        for run, summary in failed:
            rank = "?" if run.rank is None else run.rank
            if summary.error:
                cause = f"{summary.error.get('type', '?')}: {summary.error.get('message', '')}"
            elif summary.status == "CRASHED":
                cause = f"the process died without ending the run; `loggerhub sync {run.run_id}` ends it"
            else:
                cause = "no error recorded"
            print(f"  rank {rank}  {run.run_id}  {summary.status}  {_shorten(cause, 160)}")
    return True


_MAX_GROUP_KEYS = 6


def cmd_show(args: argparse.Namespace) -> int:
    from loggerhub.delivery import consumer_names
    from loggerhub.journal import RunPaths
    from loggerhub.store import dumps, find_run, summarise

    # A group id is never a run id (those end in a time and a random suffix), but it can be a
    # prefix of several: after an exact run (one listing per project), the group is looked up
    # (a listing of the index), and only then a prefix.
    root = _root(args)
    exact = _exact_run(args.run, root)
    if exact is None and args.run != "latest" and _show_group(args.run, root):
        return 0
    run_dir = exact or find_run(args.run, root)
    summary = summarise(run_dir)
    paths = RunPaths(run_dir)
    print(f"run      {summary.run_id}  ({summary.name}, project {summary.project})")
    print(f"dir      {run_dir}")
    print(f"status   {summary.status}   started {_time(summary.started_at)}")
    if summary.error:
        print(f"error    {summary.error.get('type', '?')}: {summary.error.get('message', '')}")
        for line in (summary.error.get("traceback") or "").rstrip().splitlines():
            print(f"         {line}")
    run_json = _read_json(paths.summary)  # the writer's own account: the journal cannot hold it
    if run_json.get("degraded"):
        failure = run_json.get("failure")
        print("degraded yes, the journal could not be written at some point"
              + (f": {_shorten(str(failure), 160)}" if failure else ""))
    if run_json.get("lost"):
        print(f"lost     {run_json['lost']} records never reached the disk")
    print(f"backends {', '.join(summary.backends)}")
    _show_telemetry(run_dir)
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
    if summary.rejected:
        count = len(summary.rejected)
        print(f"\nrejected {count} input{'s' if count != 1 else ''}")
        shown = summary.rejected[:_MAX_REJECTED_SHOWN]
        _table(("call", "key", "reason"),
               [(api, _shorten(key, 40), _shorten(reason, 100)) for api, key, reason in shown], indent=2)
        if len(summary.rejected) > len(shown):
            print(f"  ... and {len(summary.rejected) - len(shown)} more: the journal's rejected records")
    total = sum(counts.values())
    for name in consumer_names(paths):
        status = _read_json(paths.consumer_file(name))
        left = total - 1 - int(status.get("offset", -1))
        line = f"tracker  {name}: {'delivered' if left <= 0 else f'{left} records undelivered'}"
        if status.get("rejected"):
            line += f", {status['rejected']} rejected"
        skipped = status.get("skipped") or {}
        if skipped:
            kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
            line += f", skipped (the tracker has no place for them): {kinds}"
        if status.get("last_error") and left > 0:
            line += f", last error: {_shorten(str(status['last_error']), 160)}"
        print(line)
    return 0


_MAX_REJECTED_SHOWN = 20
_CONSOLE_SHOWN = 10


def _show_telemetry(run_dir: Path) -> None:
    """The run's context (command, python, host, git) and the tail of its console, as journaled
    by the telemetry (docs/telemetry.md); nothing for a run without them."""
    import shlex
    from collections import deque

    from loggerhub import codec
    from loggerhub.journal import JournalReader

    context = None
    counts = {"stdout": 0, "stderr": 0}
    tail: deque[str] = deque(maxlen=_CONSOLE_SHOWN)
    for entry in JournalReader(run_dir).entries(kinds=frozenset((codec.CONTEXT, codec.CONSOLE))):
        if entry.type == codec.CONTEXT:
            context = codec.run_context(entry.data, run_dir)
        else:
            stream = entry.data["stream"]
            counts[stream] = counts.get(stream, 0) + len(entry.data["lines"])
            tail.extend(f"{stream[3:]}| {line}" for line in entry.data["lines"])
    if context is not None:
        print(f"command  {_shorten(shlex.join(context.command), 160)}")
        print(f"python   {context.python_version} ({context.python_executable})")
        gpus = f", {len(context.gpus)} GPU: {', '.join(sorted(set(context.gpus)))}" if context.gpus else ""
        print(f"host     {context.hostname}, {context.os}, {context.cpu} x{context.cpu_count or '?'}{gpus}")
        git = context.git
        if git is not None:
            state = "dirty" if git.dirty else "clean"
            if git.diff_path is not None:
                state += f", diff {git.diff_path}" + (" (cut)" if git.diff_truncated else "")
            print(f"git      {git.commit[:12]} on {git.branch or '(detached)'}, {state}"
                  + (f", {len(git.untracked)} untracked" if git.untracked else "")
                  + (f"  {git.remote}" if git.remote else ""))
    if any(counts.values()):
        print(f"console  {counts['stdout']} stdout lines, {counts['stderr']} stderr lines; the last:")
        for line in tail:
            print(f"         {_shorten(line, 160) if line.strip() else line}")


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, cut between words."""
    return textwrap.shorten(text, width=width, placeholder=" ...")


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loggerhub.store import find_run, metric_series, summarise

    run_dir = find_run(args.run, _root(args))
    series = metric_series(run_dir, args.keys)
    missing = [key for key, (steps, _) in series.items() if not steps]
    if missing:
        known = sorted(summarise(run_dir).metrics)
        close = {key: difflib.get_close_matches(key, known, n=1) for key in missing}
        hints = "".join(f" (did you mean {close[key][0]!r}?)" for key in missing if close[key])
        raise LookupError(f"no points for {', '.join(map(repr, missing))} in {run_dir.name}{hints}; "
                          f"its metrics: {', '.join(known) if known else 'none'}")
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
    """Deliver a run, or each run of a group (``sync <group id>``) in rank order. A rank still
    being logged is left to its own delivery and said so."""
    from loggerhub.config import tracker_options
    from loggerhub.delivery import DeliveryBusy, sync
    from loggerhub.index import RunIndex
    from loggerhub.journal import JournalReader
    from loggerhub.store import find_run

    root = _root(args)
    run_dir = _exact_run(args.run, root)
    members = [] if run_dir is not None or args.run == "latest" else RunIndex(root).runs(group=args.run)
    runs = ([(run.dir, f"{run.name}: ") for run in sorted(members, key=lambda run: (run.rank is None, run.rank or 0))]
            or [(run_dir or find_run(args.run, root), "")])
    to = [name.strip() for name in args.to.split(",")] if args.to else None
    failed = 0
    for run, prefix in runs:
        try:
            results = sync(run, to, timeout=args.timeout, options=tracker_options(args.option),
                           progress=sys.stderr.isatty())
        except DeliveryBusy as busy:
            if not members:
                raise
            print(f"{prefix}{busy}")
            continue
        last = JournalReader(run).last_seq()
        if members and not results:
            print(f"{prefix}no tracker to deliver to (the journal is the run)")
        for backend, status in results.items():
            left = last - status.offset
            failed += left > 0
            state = "delivered" if left <= 0 else f"{left} records still undelivered"
            print(f"{prefix}{backend}: {state} ({status.delivered} delivered in total, {status.rejected} rejected)")
    return 1 if failed else 0


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
