"""A real ``mlflow server`` on 127.0.0.1, for tests (this backend's, fault tests, end-to-end tests).

::

    with MlflowServer(tmp_path / "mlflow") as server:
        loggerhub.init(backends=["mlflow"], options={"mlflow": {"tracking_uri": server.uri}})
        server.kill()      # SIGKILL, as in a crash
        server.restart()   # same port, same SQLite store and artifacts

The server keeps its store in ``<root>/mlflow.db`` and proxies artifacts to ``<root>/artifacts``;
its output goes to ``<root>/server.log``, which a start-up failure or timeout shows.
Importing this module does not import mlflow.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["MlflowServer", "MlflowServerError", "free_port", "read_back"]

HOST = "127.0.0.1"


class MlflowServerError(RuntimeError):
    """The server did not start, or did not answer in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """``python -m mlflow server`` with a SQLite store, one worker, bound to 127.0.0.1.

    :param backend_store_uri: another store (PostgreSQL, say) instead of ``<root>/mlflow.db``.
    :param artifact_args: the server's artifact options instead of proxying to
        ``<root>/artifacts``, e.g. ``["--no-serve-artifacts", "--default-artifact-root", "s3://b"]``.
    """

    def __init__(self, root: str | os.PathLike[str], *, port: int | None = None,
                 startup_timeout: float = 180.0, env: dict[str, str] | None = None,
                 backend_store_uri: str | None = None, artifact_args: list[str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self._extra_env = dict(env or {})
        self._backend_store_uri = backend_store_uri
        self._artifact_args = artifact_args
        self._process: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """The tracking URI clients use."""
        return f"http://{HOST}:{self.port}"

    @property
    def backend_store_uri(self) -> str:
        return self._backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- lifecycle ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            *(self._artifact_args if self._artifact_args is not None
              else ["--artifacts-destination", str(self.artifacts_dir), "--serve-artifacts"]),
            "--host", HOST,
            "--port", str(self.port),
            "--workers", "1",
        ]

    def start(self) -> MlflowServer:
        """Start the server and wait until ``/health`` answers."""
        if self.is_running():
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            # The job runner starts a pool of extra processes that tests never need.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **self._extra_env,
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.command())}\n".encode())
            log.flush()
            # Its own session, so that stop() and kill() reach the worker processes too.
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                self.command(), cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._wait_healthy()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the server's process group; SIGKILL if it is still there after ``timeout``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait()
        self._signal(signal.SIGKILL)  # workers that outlived their parent
        self._process = None

    def kill(self) -> None:
        """SIGKILL the whole server at once, as a crash would."""
        process = self._process
        if process is None:
            return
        self._signal(signal.SIGKILL)
        process.wait()
        self._process = None

    def restart(self) -> MlflowServer:
        """Stop (if running) and start again on the same port with the same store."""
        self.stop()
        return self.start()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def healthy(self) -> bool:
        try:
            with _opener.open(f"{self.uri}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise MlflowServerError(f"mlflow server exited with code {code} while starting"
                                        f"{self._log_tail()}")
            if self.healthy():
                return
            time.sleep(0.25)
        self.kill()
        raise MlflowServerError(f"mlflow server did not answer {self.uri}/health within "
                                f"{self.startup_timeout:.0f} s{self._log_tail()}")

    def _log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self.log_path}:\n" + "\n".join(text)


# Never through a proxy: the server is on this machine.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_back(tracking_uri: str, run_id: str) -> Any:
    """What MLflow holds for a run, as a conformance ``TrackerView`` keyed by MLflow's names.

    Reads with ``MlflowClient`` only: the run, every metric's full history, every artifact
    (recursively), the text files, and the tables through ``load_table``.
    """
    import json
    import tempfile

    import mlflow
    from mlflow.tracking import MlflowClient

    from loggerhub.testing.conformance import TrackerView

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    view = TrackerView(status=run.info.status, params=dict(run.data.params))
    if run.info.end_time is not None:
        view.ended_at = run.info.end_time / 1000
    failure = [run.data.tags[name] for name in ("loggerhub.error.type", "loggerhub.error.message")
               if name in run.data.tags]
    view.error = ": ".join(failure) or None
    for key in run.data.metrics:
        # The sampler's system/ series (on by default) are system metrics, not the run's:
        # tests/test_telemetry.py reads them.
        if not key.startswith("system/"):
            view.metrics[key] = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    def walk(path: str | None = None) -> list[str]:
        files = []
        for info in client.list_artifacts(run_id, path):
            files.extend(walk(info.path) if info.is_dir else [info.path])
        return files

    view.artifacts = set(walk())
    with tempfile.TemporaryDirectory() as tmp:

        def load(path: str) -> str:
            local = client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text(encoding="utf-8")

        texts: dict[str, list[tuple[int, int, str]]] = {}
        for path in sorted(view.artifacts):
            folder, _, name = path.partition("/")
            if folder == "images" and name.endswith(".png"):
                key = name.split("+step+", 1)[0].replace("~", "/")
                view.images[key] = view.images.get(key, 0) + 1
            elif folder == "image_annotations" and name.endswith(".json"):
                annotation = json.loads(load(path))
                key = annotation["image_key"]
                view.boxes[key] = view.boxes.get(key, 0) + len(annotation["boxes"])
            elif folder == "figures" and name.endswith(".png"):
                key = name.rsplit("+step+", 1)[0]
                view.figures[key] = view.figures.get(key, 0) + 1
            elif folder == "text" and name.endswith(".txt"):
                key, _, rest = name.rpartition("+step+")
                step, _, stamp = rest.partition("+timestamp+")
                texts.setdefault(key, []).append((int(step), int(stamp.split("+")[0]), load(path)))
        view.texts = {key: [text for *_, text in sorted(items)] for key, items in texts.items()}

    # load_table searches runs through the fluent API, whose URI set_tracking_uri also exports
    # to the environment that later delivery processes inherit: put both back afterwards.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        for entry in json.loads(run.data.tags.get("mlflow.loggedArtifacts", "[]")):
            if entry.get("type") == "table":
                name = entry["path"][len("tables/"):]
                key = name.rsplit("+step+", 1)[0]
                view.tables[key] = client.load_table(run.info.experiment_id, entry["path"],
                                                     run_ids=[run_id])
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type] # None unsets it
    return view
