"""Runs for the report and UI tests, logged through the real API, and a real headless Chromium.

No tests here: the other test_report*/test_ui* modules import these helpers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import loggerhub

XSS = "<script>alert(1)</script>"
XSS_KEY = "<img src=x onerror=alert(2)>"
XSS_TEXT = "</pre><script>alert(3)</script>"
XSS_LABEL = "<b onmouseover=alert(4)>cat</b>"
STEPS = 300
BOXES = [loggerhub.Box(4, 6, 30, 40, "cat", 0.93), loggerhub.Box(34, 10, 60, 50, "dog", 0.41)]


def make_runs(root: Path, scratch: Path) -> dict[str, str]:
    """Three finished or failed runs; returns run id by name. ``baseline`` and ``higher-lr``
    (project ``demo``) differ in exactly ``lr`` and ``dropout``; the third (project ``xss``) holds
    hostile strings everywhere a user string goes, and adds one param (named like them)."""
    ids: dict[str, str] = {}
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :, 1] = np.arange(64, dtype=np.uint8)[None, :] * 3
    checkpoint = scratch / "weights.bin"
    checkpoint.write_bytes(b"\0" * 12_345)
    base = {"batch_size": 32, "optimizer": "sgd", "seed": 0}

    with loggerhub.init(project="demo", name="baseline", dir=root, config={**base, "lr": 0.1},
                        tags={"team": "vision"}) as run:
        for step in range(STEPS):
            loss = 1.0 / (step + 1)
            if step == 50:
                loss = float("nan")
            if step == 60:
                loss = float("inf")
            run.log_metrics({"train/loss": loss}, step=step, epoch=step // 100)
            if step % 10 == 0:
                run.log_metrics({"val/acc": step / STEPS}, step=step, epoch=step // 100)
        for step in (0, 100, 200):
            run.log_image("samples", image, step=step, boxes=BOXES, caption=f"batch {step}")
        run.log_text("notes", "first line\nsecond line", step=10)
        run.log_table("predictions", ["id", "label"], [[1, "cat"], [2, "dog"]], step=10)
        run.log_confusion_matrix("confusion", [[5, 1], [2, 7]], ["cat", "dog"], step=10)
        run.log_checkpoint(checkpoint, step=200)
        run.log_artifact(checkpoint, name="model.bin", kind="model", step=299)
        ids["baseline"] = run.id

    with pytest.raises(RuntimeError, match="diverged"), \
            loggerhub.init(project="demo", name="higher-lr", dir=root,
                           config={**base, "lr": 0.3, "dropout": 0.1}, tags={"team": "vision"}) as run:
        ids["higher-lr"] = run.id
        for step in range(STEPS):
            run.log_metrics({"train/loss": 2.0 / (step + 1)}, step=step, epoch=step // 100)
        raise RuntimeError("diverged at step 299")

    with loggerhub.init(project="xss", name=XSS, dir=root, config={**base, XSS: XSS, "lr": 0.1},
                        tags={XSS: XSS}) as run:
        for step in range(20):
            run.log_metrics({XSS_KEY: float(step)}, step=step)
        run.log_text(XSS, XSS_TEXT, step=1)
        run.log_image(XSS, image, step=1, caption=XSS,
                      boxes=[loggerhub.Box(2, 2, 20, 20, XSS_LABEL, 0.5)])
        run.log_table(XSS, [XSS, "b"], [[XSS, 1]], step=1)
        ids["xss"] = run.id
    return ids


# --------------------------------------------------------------------------- the browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def screenshot_dir() -> Path:
    """Where the browser tests leave their screenshots for a person to look at (CI artifacts)."""
    folder = Path(os.environ.get("LOGGERHUB_SCREENSHOTS") or Path(tempfile.gettempdir()) / "loggerhub-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def needs_browser() -> None:
    """Skip (with the reason) when there is no Chromium; .ci/run installs it and sets
    LOGGERHUB_REQUIRE_BROWSER, so there the tests never skip."""
    if CHROMIUM is None or not Path(CHROMEDRIVER).exists():
        if os.environ.get("LOGGERHUB_REQUIRE_BROWSER"):
            pytest.fail("LOGGERHUB_REQUIRE_BROWSER is set (.ci/run) but chromium or chromedriver is missing")
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="needs selenium (requirements-dev.txt)")


@contextlib.contextmanager
def chromium(profile: Path, *, offline: bool = False) -> Iterator[Any]:
    """A real headless Chromium driven through chromedriver; ``offline`` cuts its network off
    (DevTools network emulation) before anything is loaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    if CHROMIUM:
        options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(60)
        driver.execute_cdp_cmd("Network.enable", {})
        if offline:
            driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
                "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
        yield driver
    finally:
        driver.quit()


def requests_made(driver: Any) -> list[str]:
    """Network URLs the browser asked for (DevTools performance log); file:, data: and the
    browser's own chrome: pages are not the network."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp"):
                urls.append(url)
    return urls


DIFFERING = sorted([XSS, "dropout", "lr"])
ALL_PARAMS = sorted([XSS, "batch_size", "dropout", "lr", "optimizer", "seed"])
