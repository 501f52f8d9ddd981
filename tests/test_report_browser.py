"""The report in a real headless Chromium, opened from file:// with the network cut off.

Screenshots go to ``$LOGGERHUB_SCREENSHOTS`` (default: <tmp>/loggerhub-screenshots) for a person
to look at; CI keeps that folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report_helpers import (
    ALL_PARAMS,
    DIFFERING,
    STEPS,
    XSS,
    XSS_KEY,
    XSS_LABEL,
    XSS_TEXT,
    chromium,
    make_runs,
    needs_browser,
    requests_made,
    screenshot_dir,
)

from loggerhub import cli

pytestmark = pytest.mark.slow

CHARTS = """return Object.fromEntries(Object.entries(window.loggerhub.charts).map(([key, u]) => [key, {
  runs: u._runKeys, shown: u.series.slice(1).map((s) => s.show),
  points: u.data.slice(1).map((s) => s[0].length), xmax: u.data.slice(1).map((s) => Math.max(...s[0])),
  values: u.data.slice(1).map((s) => s[1]), canvas: u.ctx.canvas.width > 0,
}]))"""


def test_the_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    needs_browser()
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ids = make_runs(tmp_path / "store", tmp_path)
    report = tmp_path / "report.html"
    assert cli.main(["--dir", str(tmp_path / "store"), "report", "-o", str(report)]) == 0
    shots = screenshot_dir()
    with chromium(tmp_path / "profile", offline=True) as driver:
        driver.get(report.as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "return window.loggerhub && Object.keys(window.loggerhub.charts).length === 3"))
        driver.set_window_size(1400, 2400)
        driver.save_screenshot(str(shots / "report.png"))

        # One chart per key, one series per run that logged the key, every kept point drawn.
        charts = driver.execute_script(CHARTS)
        assert sorted(charts) == sorted(["train/loss", "val/acc", XSS_KEY])
        loss = charts["train/loss"]
        assert loss["runs"] == [ids["baseline"], ids["higher-lr"]] and loss["points"] == [STEPS, STEPS]
        assert charts["val/acc"]["points"] == [STEPS // 10] and charts[XSS_KEY]["points"] == [20]
        assert all(chart["canvas"] for chart in charts.values())
        # NaN and inf: gaps in the line, and named under the chart.
        assert loss["values"][0][50] is None and loss["values"][0][60] is None
        marks = driver.find_element(By.CSS_SELECTOR, '.card[data-key="train/loss"] .marks').text
        assert "baseline: 1\u00d7 NaN, 1\u00d7 inf" in marks

        # Unticking a run hides its series in every chart; ticking it shows it again.
        toggle = driver.find_element(By.CSS_SELECTOR, f'input.pick[data-run="{ids["higher-lr"]}"]')
        toggle.click()
        assert driver.execute_script(CHARTS)["train/loss"]["shown"] == [True, False]
        toggle.click()
        assert driver.execute_script(CHARTS)["train/loss"]["shown"] == [True, True]

        # The x axis switches to epochs (0-2 here), smoothing changes the drawn values.
        Select(driver.find_element(By.ID, "xmode")).select_by_value("epoch")
        assert driver.execute_script(CHARTS)["train/loss"]["xmax"] == [2, 2]
        driver.execute_script("const s = document.getElementById('smoothing'); s.value = 0.9;"
                              "s.dispatchEvent(new Event('input'));")
        smoothed = driver.execute_script(CHARTS)["train/loss"]["values"][1]
        assert smoothed[5] != pytest.approx(2.0 / 6)

        # The params table shows exactly the params that differ, all of them on request.
        def params() -> list[str]:
            return sorted(row.get_attribute("data-param")
                          for row in driver.find_elements(By.CSS_SELECTOR, "#params-table tbody tr"))

        assert params() == DIFFERING
        driver.find_element(By.ID, "all-params").click()
        assert params() == ALL_PARAMS

        # The image's boxes are an overlay with label and score, and can be switched off.
        card = driver.find_element(By.CSS_SELECTOR, '#images .card[data-key="samples"]')
        overlay = card.find_element(By.CSS_SELECTOR, "svg.boxes")
        assert len(overlay.find_elements(By.TAG_NAME, "rect")) == 2
        assert [t.text for t in overlay.find_elements(By.TAG_NAME, "text")] == ["cat 0.93", "dog 0.41"]
        assert overlay.is_displayed()
        assert driver.execute_script("return arguments[0].naturalWidth", card.find_element(By.TAG_NAME, "img")) == 64
        driver.execute_script("arguments[0].scrollIntoView()", card)
        driver.save_screenshot(str(shots / "report-images.png"))
        card.find_element(By.CSS_SELECTOR, "input.boxes-toggle").click()
        assert not overlay.is_displayed()

        # Hostile strings are text: no dialog, no element or script of theirs.
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 - reading it is what raises
        row = driver.find_element(By.CSS_SELECTOR, f'#run-table tr[data-run="{ids["xss"]}"]')
        assert row.find_element(By.CSS_SELECTOR, ".run-name").text == XSS
        assert driver.find_element(By.CSS_SELECTOR, f'.card[data-key="{XSS_KEY}"] h3').text == XSS_KEY
        assert driver.find_element(By.CSS_SELECTOR, "#texts pre.text").text in (XSS_TEXT, "first line\nsecond line")
        assert XSS_TEXT in [p.text for p in driver.find_elements(By.CSS_SELECTOR, "#texts pre.text")]
        labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#images svg.boxes text")]
        assert f"{XSS_LABEL} 0.50" in labels
        assert driver.execute_script("return document.scripts.length") == 3
        assert driver.execute_script("return document.querySelectorAll('b, img[src=\"x\"]').length") == 0
        assert not [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]

        # With the network off nothing was even attempted: everything is in the file.
        assert requests_made(driver) == []
