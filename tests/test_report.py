"""``loggerhub report``: run selection, downsampling, the size bound and escaping (no browser;
the browser checks are in test_report_browser.py)."""

from __future__ import annotations

import html.parser
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_report_helpers import ALL_PARAMS, DIFFERING, XSS, XSS_KEY, XSS_LABEL, XSS_TEXT, make_runs

import loggerhub
from loggerhub import cli
from loggerhub.report.model import (
    KEEP_POINTS,
    MAX_BUCKETS,
    RunData,
    Series,
    buckets_for,
    differing_params,
    minmax_indices,
    select_runs,
    series_view,
)
from loggerhub.report.render import json_for_script
from loggerhub.store import RunNotFound


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("store")
    return root, make_runs(root / "runs", tmp_path_factory.mktemp("scratch"))


def names(runs: list[RunData]) -> list[str]:
    return [run.summary.name for run in runs]


def test_runs_are_selected_by_id_prefix_latest_project_and_where(store: tuple[Path, dict[str, str]]) -> None:
    root, ids = store
    root = root / "runs"
    assert names(select_runs([ids["baseline"]], root)) == ["baseline"]
    assert names(select_runs([ids["higher-lr"][:12]], root)) == ["higher-lr"]
    assert names(select_runs(["latest"], root)) == [XSS]
    assert names(select_runs(["demo"], root)) == ["baseline", "higher-lr"]
    assert names(select_runs([], root)) == ["baseline", "higher-lr", XSS]
    assert names(select_runs(["demo", ids["baseline"]], root)) == ["baseline", "higher-lr"]  # each run once
    assert names(select_runs([], root, ["lr>0.2"])) == ["higher-lr"]
    assert names(select_runs([], root, ["params.lr=0.1", "tags.team=vision"])) == ["baseline"]
    assert names(select_runs([], root, ["status=FAILED"])) == ["higher-lr"]
    assert names(select_runs([], root, ["optimizer~sg", "dropout!=0.1"])) == ["baseline", XSS]
    with pytest.raises(RunNotFound, match="no run matches"):
        select_runs(["demo"], root, ["lr>1"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        select_runs([], root, ["lr"])


def test_the_params_diff_lists_exactly_the_params_that_differ(store: tuple[Path, dict[str, str]]) -> None:
    runs = select_runs([], store[0] / "runs")
    assert differing_params(runs) == DIFFERING
    assert sorted({key for run in runs for key in run.summary.params}) == ALL_PARAMS
    assert differing_params([runs[0]]) == []


def test_minmax_downsampling_keeps_every_peak_and_the_non_finite_values() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, 100_000)
    values[12_345] = 50.0  # one spike, one point wide
    values[77_777] = -50.0
    values[500] = np.nan
    values[90_000] = np.inf
    values[90_001] = -np.inf
    keep = minmax_indices(values, 500)
    assert len(keep) <= 5 * 500 + 2
    for index in (0, 12_345, 77_777, 500, 90_000, 90_001, len(values) - 1):
        assert index in keep
    # Each bucket's extremes survive, so the drawn envelope is the data's envelope.
    for bucket in np.array_split(np.arange(len(values)), 500):
        chunk = values[bucket]
        finite = np.isfinite(chunk)
        assert bucket[np.argmax(np.where(finite, chunk, -np.inf))] in keep
        assert bucket[np.argmin(np.where(finite, chunk, np.inf))] in keep
    assert list(minmax_indices(values[:800], 500)) == list(range(800))  # short series untouched


def test_a_series_view_is_bounded_and_marks_non_finite_values() -> None:
    series = Series()
    for step in range(300_000):
        series.step.append(step)
        series.epoch.append(step // 1000)
        series.time.append(1e9 + step)
        series.value.append(float("nan") if step == 7 else float(step % 97))
    series.logged = 300_000
    view = series_view(series, MAX_BUCKETS)
    assert view["count"] == 300_000
    assert len(view["value"]) <= 5 * MAX_BUCKETS + 2
    nan_at = [index for index, kind in view["nonfinite"] if kind == "nan"]
    assert len(nan_at) == 1 and view["step"][nan_at[0]] == 7 and view["value"][nan_at[0]] is None
    assert max(v for v in view["value"] if v is not None) == 96
    assert buckets_for(1) == MAX_BUCKETS and buckets_for(100) == 500 and buckets_for(10_000) == 200


def test_a_long_run_is_held_in_bounded_memory_with_its_peaks(tmp_path: Path) -> None:
    points = 3 * KEEP_POINTS
    with loggerhub.init(project="long", name="long", dir=tmp_path) as run:
        for step in range(points):
            run.log_metrics({"loss": 100.0 if step == 40_000 else float(step % 7)}, step=step)
        run.log_metrics({"loss": float("-inf")}, step=points)
    data = RunData(run.dir)
    data.update()
    series = data.series["loss"]
    assert series.logged == points + 1
    assert len(series.value) <= KEEP_POINTS
    view = series_view(series, MAX_BUCKETS)
    assert view["count"] == points + 1 and max(v for v in view["value"] if v is not None) == 100.0
    assert view["step"][view["value"].index(100.0)] == 40_000
    assert view["nonfinite"] == [[len(view["value"]) - 1, "-inf"]]


def test_the_report_size_does_not_grow_with_the_number_of_points(tmp_path: Path) -> None:
    sizes = {}
    for points in (3_000, 300_000):
        with loggerhub.init(project="size", name=f"p{points}", dir=tmp_path / str(points)) as run:
            for step in range(points):
                run.log_metrics({"loss": 1.0 / (step + 1) + (step % 13) * 1e-3}, step=step)
        out = tmp_path / f"{points}.html"
        assert cli.main(["--dir", str(tmp_path / str(points)), "report", "-o", str(out)]) == 0
        sizes[points] = out.stat().st_size
    # 100 times the points: at most the downsampled series (5 * 1000 + 2 points of ~45 bytes) more.
    assert sizes[300_000] - sizes[3_000] < (5 * MAX_BUCKETS + 2) * 45
    assert sizes[300_000] < 400_000


class _Scripts(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self.scripts.append(dict(attrs))


def test_user_strings_cannot_escape_the_embedded_json(store: tuple[Path, dict[str, str]], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    assert cli.main(["--dir", str(store[0] / "runs"), "report", "xss", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    parser = _Scripts()
    parser.feed(page)
    # The config and the two scripts of the renderer, nothing a run brought in.
    assert [s.get("type") for s in parser.scripts] == ["application/json", None, None]
    assert "img" not in parser.tags and "b" not in parser.tags and "pre" not in parser.tags
    for hostile in (XSS, XSS_KEY, XSS_TEXT, XSS_LABEL):
        assert hostile not in page
    config = json.loads(re.search(r'id="loggerhub-config" type="application/json">(.*?)</script>', page, re.S)[1])
    model = config["model"]
    assert model["runs"][0]["name"] == XSS and XSS_KEY in model["metrics"]
    assert model["texts"][XSS][model["runs"][0]["key"]][0]["text"] == XSS_TEXT
    # No network from the report: the page's policy allows none.
    assert "connect-src 'none'" in page and "img-src data:" in page


def test_json_for_script_escapes_what_could_end_a_script_element() -> None:
    text = json_for_script({"a": "</script><!-- \u2028 & <b>"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- \u2028 & <b>"}


def test_report_of_an_unknown_run_is_a_one_line_error(store: tuple[Path, dict[str, str]], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--dir", str(store[0] / "runs"), "report", "nope", "-o", str(tmp_path / "r.html")])
    assert code == cli.USAGE_ERROR
    assert "no run 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_the_report_needs_only_the_core_install(store: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """`setup.sh core` (the demo) has no Starlette or uvicorn: the report must not import them."""
    import subprocess
    import sys

    argv = ["--dir", str(store[0] / "runs"), "report", "demo", "-o", str(tmp_path / "r.html")]
    code = ("import sys\n"
            "for name in ('starlette', 'uvicorn', 'selenium'): sys.modules[name] = None  # importing raises\n"
            "from loggerhub import cli\n"
            f"sys.exit(cli.main({argv!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.html").stat().st_size > 50_000
