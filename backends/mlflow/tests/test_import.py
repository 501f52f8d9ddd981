"""Selecting the backend must stay cheap: the MLflow SDK loads only in the delivery process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120, check=False, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_plugin_does_not_import_mlflow() -> None:
    out = run_python("""
        import sys
        import loggerhub_mlflow
        import loggerhub_mlflow.keys
        import loggerhub_mlflow.testing
        from loggerhub.plugins import resolve
        plugin = resolve(["mlflow"])[0].load()
        assert type(plugin).__name__ == "MlflowBackend"
        print(sorted(name for name in sys.modules if name == "mlflow" or name.startswith("mlflow.")))
    """)
    assert out == "[]"


def test_client_version_imports_mlflow_and_reports_it() -> None:
    out = run_python("""
        import sys
        import mlflow
        from loggerhub.plugins import get_plugin_manager, resolve
        plugin = resolve(["mlflow"])[0].load()
        version = get_plugin_manager({"mlflow": plugin}).hook.loggerhub_client_version()
        print(version == mlflow.__version__)
    """)
    assert out == "True"


def test_the_sdk_environment_is_quiet_and_fails_fast_unless_the_user_chose() -> None:
    out = run_python("""
        import os
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "7"
        os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "true"
        import loggerhub_mlflow._backend
        from mlflow.environment_variables import (
            MLFLOW_DISABLE_TELEMETRY, MLFLOW_ENABLE_ASYNC_LOGGING, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
            MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING,
            MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
        )
        print(MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_TIMEOUT.get(),
              MLFLOW_DISABLE_TELEMETRY.get(), MLFLOW_ENABLE_ASYNC_LOGGING.get(),
              MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get(), MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get())
    """)
    # The user's timeout stays; asynchronous logging is always off.
    assert out == "1 7 True False False True"
