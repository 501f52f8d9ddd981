"""Importing the plugin must not import the Neptune client (delivery imports it, the trainer not)."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys
import loggerhub_neptune
from loggerhub_neptune import offline, keys
plugin = loggerhub_neptune.NeptuneBackend()
print(json.dumps(sorted(m for m in sys.modules if m == "neptune" or m.startswith("neptune."))))
"""


def test_import_does_not_load_the_sdk() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_client_version_does_load_it() -> None:
    code = "import loggerhub_neptune; print(loggerhub_neptune.NeptuneBackend().loggerhub_client_version())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from importlib.metadata import version

    assert out.stdout.strip() == version("neptune")
