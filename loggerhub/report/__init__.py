"""Reports and the live UI of local runs: ``loggerhub report`` (one self-contained HTML file) and
``loggerhub ui`` (the same views served live from the run store). Both draw with one renderer
(``static/app.js`` and the vendored uPlot); see docs/report.md.

The report needs only the core install; the UI imports Starlette and uvicorn (``loggerhub[ui]``)
when it starts.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path
from typing import Any

#: Addresses ``loggerhub ui`` binds to without ``--public``.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(commands: Any) -> None:
    """Register ``report`` and ``ui`` (see loggerhub/cli.py's feature commands)."""
    report = commands.add_parser("report", help="write one self-contained HTML report of runs")
    report.add_argument("runs", nargs="*", metavar="RUN",
                        help="run ids, unique prefixes, latest, projects or run directories (default: every run)")
    report.add_argument("--where", action="append", default=[], metavar="FILTER",
                        help="keep runs whose param, tag or status passes: lr<0.01, tags.team=vision, status=FAILED, "
                             "params.model~resnet (repeatable: all must pass)")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"))
    report.add_argument("--title", default="loggerhub report")
    report.set_defaults(handler=cmd_report)

    ui = commands.add_parser("ui", help="serve the run store's runs live in the browser (read-only)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8450)
    ui.add_argument("--public", action="store_true",
                    help="allow --host to be an address other than loopback (the UI has no login)")
    ui.add_argument("--refresh", type=float, default=2.0, help="seconds between refreshes of active runs")
    ui.set_defaults(handler=cmd_ui)


def cmd_report(args: argparse.Namespace) -> int:
    from loggerhub.cli import _root
    from loggerhub.report.build import write_report
    from loggerhub.report.model import select_runs

    runs = select_runs(args.runs, _root(args), args.where)
    path = write_report(runs, args.output, title=args.title)
    print(f"wrote {path} ({len(runs)} run{'s' if len(runs) != 1 else ''}, {path.stat().st_size / 1e6:.1f} MB)")
    return 0


def check_host(host: str, public: bool) -> None:
    """Refuse an address other than loopback unless ``--public`` was given."""
    if public or host in LOOPBACK:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"--host {host} is not a loopback address: the UI has no login, so anyone who can reach "
                     "it reads every run; add --public to bind it anyway")


def cmd_ui(args: argparse.Namespace) -> int:
    from loggerhub.cli import _root

    check_host(args.host, args.public)
    try:
        import uvicorn

        from loggerhub.report.server import create_app
    except ImportError as error:
        raise ImportError(f"loggerhub ui needs Starlette and uvicorn: pip install 'loggerhub[ui]' ({error})") from None
    root = _root(args)
    print(f"loggerhub ui: serving {root} on http://{args.host}:{args.port}/ (read-only; Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(root, refresh=args.refresh), host=args.host, port=args.port, log_level="warning")
    return 0
