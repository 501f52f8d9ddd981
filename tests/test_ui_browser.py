"""A live ``loggerhub ui`` (the real server process) in a real headless Chromium, while another
process is still logging a run."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_report_helpers import chromium, make_runs, needs_browser, screenshot_dir

pytestmark = pytest.mark.slow

# Logs one point every 50 ms until the stop file appears (at most 2 minutes), then finishes.
LIVE_RUN = """
import sys, time
from pathlib import Path
import loggerhub
root, stop = sys.argv[1], Path(sys.argv[2])
with loggerhub.init(project="live", name="growing", dir=root, config={"lr": 0.05}, flush_interval=0.05) as run:
    print(run.id, flush=True)
    step = 0
    while not stop.exists() and step < 2400:
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        step += 1
        time.sleep(0.05)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_live_ui_follows_a_running_run(tmp_path: Path) -> None:
    needs_browser()
    pytest.importorskip("uvicorn", reason="loggerhub ui needs the [ui] extra")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    store = tmp_path / "store"
    ids = make_runs(store, tmp_path)
    stop = tmp_path / "stop"
    port = free_port()
    logger = subprocess.Popen([sys.executable, "-c", LIVE_RUN, str(store), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    server = subprocess.Popen([sys.executable, "-m", "loggerhub.cli", "ui", "--dir", str(store), "--port", str(port),
                               "--refresh", "0.5"])
    try:
        assert logger.stdout is not None
        live_id = logger.stdout.readline().strip()
        assert live_id
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the UI did not start"
                time.sleep(0.2)
        shots = screenshot_dir()
        with chromium(tmp_path / "profile") as driver:
            driver.get(f"http://127.0.0.1:{port}/#run={live_id}")
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.execute_script("return !!(window.loggerhub && window.loggerhub.charts.loss)"))

            # The running run's chart grows while it logs.
            def points() -> int:
                return int(driver.execute_script("return window.loggerhub.charts.loss.data[1][0].length"))

            first = points()
            wait.until(lambda d: points() > first + 20)
            status = driver.find_element(By.CSS_SELECTOR, f'#run-table tr[data-run="{live_id}"] .status').text
            assert status.startswith("RUNNING")

            # The run table: every run, filtered, grouped by a param, sorted by a column.
            # Read in one script: the table is redrawn on every refresh of the running run.
            def rows(part: str = "") -> list[str]:
                return list(driver.execute_script(
                    "return [...document.querySelectorAll('#run-table tbody tr' + arguments[0])].map((r) => "
                    "arguments[0] ? r.textContent : r.dataset.run)", part))

            assert sorted(rows()) == sorted([*ids.values(), live_id])
            search = driver.find_element(By.ID, "filter")
            search.send_keys("vision")
            assert sorted(rows()) == sorted([ids["baseline"], ids["higher-lr"]])
            search.clear()
            search.send_keys(" ")  # clear() fires no input event
            Select(driver.find_element(By.ID, "group")).select_by_value("lr")
            assert sorted(rows(".group")) == ["lr = 0.05 (1 run)", "lr = 0.1 (2 runs)", "lr = 0.3 (1 run)"]
            Select(driver.find_element(By.ID, "group")).select_by_value("")
            driver.find_element(By.CSS_SELECTOR, 'th[data-column="name"]').click()
            names = driver.execute_script(
                "return [...document.querySelectorAll('#run-table .run-name')].map((c) => c.textContent)")
            assert len(names) == 4 and names == sorted(names)

            # Picking a finished run to compare: its series and its image (served from the store).
            # Clicked from the page itself: the table is redrawn on every refresh of the running run.
            driver.execute_script("document.querySelector(arguments[0]).click()",
                                  f'input.pick[data-run="{ids["baseline"]}"]')
            wait.until(lambda d: d.execute_script("return !!window.loggerhub.charts['train/loss']"))
            image = driver.find_element(By.CSS_SELECTOR, '#images .card[data-key="samples"] img')
            wait.until(lambda d: d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image) == 64)
            assert len(driver.find_elements(By.CSS_SELECTOR, '#images .card[data-key="samples"] svg.boxes rect')) == 2
            driver.set_window_size(1400, 2000)
            driver.save_screenshot(str(shots / "ui.png"))
            assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        stop.touch()
        logger.wait(timeout=60)
        server.terminate()
        server.wait(timeout=30)
