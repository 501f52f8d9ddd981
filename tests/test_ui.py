"""``loggerhub ui`` without a browser: the API, media paths that try to leave the run store, the
read-only routes and the loopback-only default (the browser session is test_ui_browser.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_report_helpers import make_runs

from loggerhub import cli
from loggerhub.report import check_host

pytest.importorskip("starlette", reason="loggerhub ui needs the [ui] extra")
from starlette.testclient import TestClient  # noqa: E402

from loggerhub.report.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("store")
    ids = make_runs(root, tmp_path_factory.mktemp("scratch"))
    return TestClient(create_app(root)), root, ids


def test_the_api_lists_runs_and_serves_their_view_model(served: tuple[TestClient, Path, dict[str, str]]) -> None:
    client, _, ids = served
    runs = client.get("/api/runs").json()["runs"]
    assert sorted(r["id"] for r in runs) == sorted(ids.values())
    model = client.get("/api/model", params=[("run", ids["baseline"]), ("run", ids["higher-lr"])]).json()
    assert [r["name"] for r in model["runs"]] == ["baseline", "higher-lr"]
    assert len(model["metrics"]["train/loss"]) == 2
    item = model["images"]["samples"][ids["baseline"]]["items"][0]
    png = client.get(item["src"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert client.get("/api/model", params={"run": "nope"}).status_code == 404


def test_media_urls_cannot_leave_the_run_store(served: tuple[TestClient, Path, dict[str, str]],
                                               tmp_path: Path) -> None:
    client, root, ids = served
    run = ids["baseline"]
    run_dir = next(root.glob(f"*/{run}"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    (run_dir / "media" / "link.png").symlink_to(secret)
    (run_dir / "media" / "up").symlink_to(tmp_path, target_is_directory=True)
    for file in ("../run.json", "media/../../../etc/passwd", str(secret), "/etc/passwd", "media/link.png",
                 "media/up/secret.png", "run.json", "journal/000000000000.jsonl", "media", ""):
        response = client.get("/media", params={"run": run, "file": file})
        assert response.status_code == 404, file
    assert client.get("/media", params={"run": "../" + run, "file": "media/x.png"}).status_code == 404
    good = next(p for p in (run_dir / "media").iterdir() if p.suffix == ".png" and not p.is_symlink())
    assert client.get("/media", params={"run": run, "file": f"media/{good.name}"}).status_code == 200


def test_the_ui_is_read_only(served: tuple[TestClient, Path, dict[str, str]]) -> None:
    client, root, ids = served
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    for path in ("/", "/api/runs", "/api/model", "/media"):
        for method in ("post", "put", "delete"):
            assert getattr(client, method)(path).status_code == 405
    client.get("/api/model", params={"run": ids["baseline"]})
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_the_page_allows_only_its_own_scripts(served: tuple[TestClient, Path, dict[str, str]]) -> None:
    page = served[0].get("/").text
    policy = page.split('http-equiv="Content-Security-Policy" content="')[1].split('"')[0]
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "connect-src 'self'" in policy


def test_the_ui_binds_to_loopback_unless_told_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_host(host, public=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):  # noqa: S104 - refusing it is the test
        with pytest.raises(ValueError, match="--public"):
            check_host(host, public=False)
        check_host(host, public=True)
    assert cli.main(["ui", "--host", "0.0.0.0", "--port", "1", "--dir", os.devnull]) == cli.USAGE_ERROR  # noqa: S104
    assert "not a loopback address" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["ui"]).host == "127.0.0.1"
