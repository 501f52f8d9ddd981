"""A team's MLflow deployment as real processes on 127.0.0.1, for the team-deployment tests.

- :class:`PostgresCluster`: a throwaway cluster of Debian's ``postgresql`` package, made by
  ``initdb`` and run by ``pg_ctl`` as an unprivileged user (PostgreSQL refuses to run as root);
- :class:`MotoS3`: ``moto[server]`` as the S3 endpoint, with a bucket;
- :func:`mlflow_server`: ``mlflow server`` on that database, its artifacts in that bucket, proxied
  (``--serve-artifacts``) or written by the client straight to S3.

::

    with PostgresCluster() as pg, MotoS3() as s3:
        with mlflow_server(tmp_path, pg, s3, proxied=True) as server:
            server.kill()      # SIGKILL
            pg.restart()
            server.start()     # same port

:func:`require_services` skips a test when PostgreSQL or moto is missing, except on CI
(``CI=true`` or ``LOGGERHUB_REQUIRE_SERVICES``), where ``.ci/run`` installs them and a skip would
hide a broken set-up: there it fails.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from loggerhub_mlflow.testing import HOST, MlflowServer, free_port

__all__ = ["MotoS3", "PostgresCluster", "mlflow_server", "postgres_bin", "require_services"]

#: The unprivileged account that owns and runs the cluster when the tests run as root.
PG_USER = "loggerhub-pg"
#: Recognisable, so that a test can search every file and stream for them.
PG_PASSWORD = "pg-secret-Zq81xT"
AWS_ACCESS_KEY_ID = "AKIALOGGERHUBTEST0001"
AWS_SECRET_ACCESS_KEY = "aws-secret-Wm3vPq9sLr7NkYt2"
AWS_REGION = "us-east-1"


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` (Debian's layout)."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda path: [int(part) if part.isdigit() else 0 for part in path.parent.name.split(".")])
    return found[-1] if found else None


def require_services() -> None:
    """Skip (saying why) without PostgreSQL or moto; on CI, fail instead."""
    missing = []
    if postgres_bin() is None:
        missing.append("PostgreSQL (apt-get install postgresql; `bash scripts/setup.sh services` as root)")
    elif os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (util-linux), to run PostgreSQL as an unprivileged user")
    for module, package in (("moto.server", "moto[server]"), ("boto3", "boto3"), ("psycopg", "psycopg[binary]")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} (requirements-dev.txt)")
    if not missing:
        return
    reason = "needs " + ", ".join(missing)
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("LOGGERHUB_REQUIRE_SERVICES"):
        pytest.fail(f"CI must run the team-deployment tests, but this machine {reason}")
    pytest.skip(reason)


def _wait_until(ready: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- " + str(log) + ":\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s{tail}")


# --------------------------------------------------------------------------- PostgreSQL


class PostgresCluster:
    """A throwaway PostgreSQL cluster with one database, ``mlflow``, on 127.0.0.1.

    As root, the cluster belongs to :data:`PG_USER` (created, as a system account without a login
    shell, when missing) and every ``initdb``/``pg_ctl`` runs through ``runuser``; otherwise it
    runs as the current user. Its directory is made outside pytest's ``tmp_path``, which only root
    may enter. Clients log in with a password over TCP (scram-sha-256), as on a team's server.
    """

    def __init__(self, *, port: int | None = None) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package")
        self.bin = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="loggerhub-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._as_user: list[str] = []
        self._started = False

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI of the ``mlflow`` database (with its password)."""
        return f"postgresql://postgres:{PG_PASSWORD}@{HOST}:{self.port}/mlflow"

    def _run(self, *command: str, env: dict[str, str] | None = None) -> None:
        result = subprocess.run([*self._as_user, str(self.bin / command[0]), *command[1:]], cwd=self.root,
                                env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), *args)

    def start(self) -> PostgresCluster:
        if os.geteuid() == 0:
            _ensure_user(PG_USER)
            account = pwd.getpwnam(PG_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", PG_USER, "--"]
        password_file = self.root / "pwfile"
        password_file.write_text(PG_PASSWORD + "\n")
        if self._as_user:
            os.chown(password_file, pwd.getpwnam(PG_USER).pw_uid, -1)
        # C locale and UTF-8: the same cluster on every machine, whatever the container's locale.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}",
                  env={"LC_ALL": "C"})
        password_file.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '{HOST}'\n"
                       # The socket lives in the data directory, not /run/postgresql, which only
                       # Debian's own `postgres` account may write.
                       f"unix_socket_directories = '{self.data}'\n"
                       # A throwaway cluster: durability across a power cut buys nothing here,
                       # while fsync on every commit slows 16 concurrent writers on one disk.
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        self._pg_ctl("-w", "-t", "60", "start")
        self._started = True
        self._run("createdb", "-h", str(self.data), "-p", str(self.port), "-U", "postgres", "mlflow")
        return self

    def restart(self) -> None:
        """A fast restart: open connections are cut, as when a team's database is restarted."""
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "restart")

    def stop(self) -> None:
        if self._started:
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")
            self._started = False

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)


# --------------------------------------------------------------------------- S3


class MotoS3:
    """``python -m moto.server`` on 127.0.0.1, with an empty bucket ``bucket``."""

    def __init__(self, root: Path, *, bucket: str = "team-artifacts", port: int | None = None) -> None:
        self.root = root
        self.bucket = bucket
        self.port = port or free_port()
        self.log_path = root / "moto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client (or the MLflow server) needs to reach the bucket."""
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY, "AWS_DEFAULT_REGION": AWS_REGION}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=AWS_REGION,
                            aws_access_key_id=AWS_ACCESS_KEY_ID, aws_secret_access_key=AWS_SECRET_ACCESS_KEY)

    def keys(self, prefix: str = "") -> list[str]:
        client = self.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _healthy(self) -> bool:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"{self.endpoint}/moto-api/", timeout=2):
                return True
        except (OSError, urllib.error.URLError):
            return False

    def __enter__(self) -> MotoS3:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until(self._healthy, 60, "moto server", self.log_path)
            self.client().create_bucket(Bucket=self.bucket)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


# --------------------------------------------------------------------------- MLflow


def mlflow_server(root: Path, pg: PostgresCluster, s3: MotoS3, *, proxied: bool,
                  prefix: str = "mlartifacts") -> MlflowServer:
    """``mlflow server`` on the cluster's database, its artifacts under ``s3://<bucket>/<prefix>``.

    ``proxied``: the server stores the artifacts (``--serve-artifacts --artifacts-destination``),
    and holds the AWS keys; otherwise the clients write straight to S3
    (``--no-serve-artifacts --default-artifact-root``) with their own keys.
    """
    destination = f"s3://{s3.bucket}/{prefix}"
    artifact_args = (["--serve-artifacts", "--artifacts-destination", destination] if proxied
                     else ["--no-serve-artifacts", "--default-artifact-root", destination])
    # The server keeps these in its own environment only: in the direct mode it never touches S3.
    env = s3.env if proxied else {}
    return MlflowServer(root, env=env, backend_store_uri=pg.uri, artifact_args=artifact_args,
                        startup_timeout=240.0)
