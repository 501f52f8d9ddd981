"""Make docs/report.png, the README's picture of a report, from real runs of the demo trainer.

    .venv/bin/python scripts/report_screenshot.py [--output docs/report.png]

Trains examples/custom_trainer.py twice (two learning rates) into a temporary run store, writes
`loggerhub report` of both, and photographs it in headless Chromium (chromium and chromedriver
from the system's packages: `bash scripts/setup.sh browser`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for lr in ("2.0", "0.5"):
            subprocess.run([sys.executable, str(ROOT / "examples" / "custom_trainer.py"), "--dir", str(work / "runs"),
                            "--epochs", str(args.epochs), "--lr", lr], check=True, cwd=work)
        report = work / "report.html"
        subprocess.run([sys.executable, "-m", "loggerhub.cli", "--dir", str(work / "runs"), "report", "demo",
                        "-o", str(report), "--title", "loggerhub report: two spiral classifiers"], check=True)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
                     "--window-size=1280,1500", f"--user-data-dir={work / 'profile'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
        try:
            driver.get(report.as_uri())
            WebDriverWait(driver, 60).until(lambda d: d.execute_script(
                "return window.loggerhub && window.loggerhub.allChartsMs !== undefined"))
            time.sleep(0.5)  # the images decode
            args.output.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.output))
        finally:
            driver.quit()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
