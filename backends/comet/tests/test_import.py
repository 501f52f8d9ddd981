"""Importing the plugin must not import comet_ml: the trainer process loads it to validate backends."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_import_the_sdk() -> None:
    code = (
        "import sys, loggerhub_comet\n"
        "backend = loggerhub_comet.CometBackend()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'comet_ml'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_entry_point_names_the_plugin() -> None:
    from importlib.metadata import entry_points

    (entry_point,) = [e for e in entry_points(group="loggerhub") if e.name == "comet"]
    assert entry_point.value == "loggerhub_comet:CometBackend"


def test_client_version_imports_comet_quietly() -> None:
    code = (
        "import sys, loggerhub_comet\n"
        "print(loggerhub_comet.CometBackend().loggerhub_client_version())\n"
        "print([type(f).__name__ for f in sys.meta_path if 'Comet' in type(f).__name__])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, finders = result.stdout.split()
    from importlib.metadata import version as dist_version

    assert version == dist_version("comet_ml")
    assert finders == "[]"  # no import hook that would patch mlflow, torch, keras...
