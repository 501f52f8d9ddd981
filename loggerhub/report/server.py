"""``loggerhub ui``: the report's views served live from the run store (Starlette, read-only).

Routes (all GET): ``/`` the page; ``/api/runs`` the run table; ``/api/model?run=ID&run=ID`` the
view model of the picked runs; ``/media?run=ID&file=media/...`` a PNG of a run. Each run is read
incrementally (:class:`~loggerhub.report.model.RunData`): a refresh costs what was appended since.
"""

from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from loggerhub.report.model import RunData, build_model, run_row
from loggerhub.report.render import page
from loggerhub.store import iter_runs

_NO_CACHE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class LiveStore:
    """The runs under ``root``, each followed from where it was last read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[str, RunData] = {}
        self._lock = threading.Lock()

    def runs(self) -> list[RunData]:
        with self._lock:
            found = []
            for run_dir in iter_runs(self.root):
                run = self._runs.get(run_dir.name)
                if run is None or run.dir != run_dir:
                    run = self._runs[run_dir.name] = RunData(run_dir)
                run.update()
                found.append(run)
            return found

    def get(self, key: str) -> RunData | None:
        with self._lock:
            run = self._runs.get(key)
            if run is not None:
                run.update()
            return run


def media_path(run: RunData, file: str) -> Path | None:
    """The file a media URL names, or None when it would leave the run's media folder: an
    absolute path, a ``..``, or a symlink that points outside."""
    relative = PurePosixPath(file)
    if not file or relative.is_absolute() or ".." in relative.parts or "\\" in file or "\0" in file:
        return None
    media = (run.dir / "media").resolve()
    target = (run.dir / relative).resolve()
    if not target.is_relative_to(media) or not target.is_file():
        return None
    return target


def create_app(root: Path, *, refresh: float = 2.0) -> Starlette:
    store = LiveStore(root)
    html = page({"mode": "ui", "refresh": int(refresh * 1000)}, title="loggerhub ui", live=True)

    def media_url(run: RunData, relative: str) -> str:
        return f"media?run={quote(run.key, safe='')}&file={quote(relative, safe='')}"

    def index(request: Request) -> Response:
        return HTMLResponse(html, headers=_NO_CACHE)

    def api_runs(request: Request) -> Response:
        return JSONResponse({"runs": [run_row(run) for run in store.runs()]}, headers=_NO_CACHE)

    def api_model(request: Request) -> Response:
        keys = request.query_params.getlist("run")
        store.runs()  # runs created since the last listing
        runs = [store.get(key) for key in keys]
        missing = [key for key, run in zip(keys, runs, strict=True) if run is None]
        if missing:
            return JSONResponse({"error": f"no run {missing[0]!r}"}, status_code=404, headers=_NO_CACHE)
        picked = sorted((run for run in runs if run is not None), key=lambda r: r.summary.started_at)
        return JSONResponse(build_model(picked, media_url, title="loggerhub ui"), headers=_NO_CACHE)

    def media(request: Request) -> Response:
        run = store.get(request.query_params.get("run", ""))
        path = None if run is None else media_path(run, request.query_params.get("file", ""))
        if path is None:
            return Response("not found", status_code=404, media_type="text/plain", headers=_NO_CACHE)
        return FileResponse(path, headers={**_NO_CACHE, "Content-Security-Policy": "default-src 'none'"})

    return Starlette(routes=[
        Route("/", index), Route("/api/runs", api_runs), Route("/api/model", api_model), Route("/media", media),
    ])
