"""Importing the plugin must stay light, and the backend must run with no TensorFlow or PyTorch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_import_does_not_import_the_sdk() -> None:
    result = run_python("""
        import sys
        import loggerhub_tensorboard
        backend = loggerhub_tensorboard.TensorBoardBackend()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorboard", "tensorflow", "torch",
                                                                     "numpy", "PIL"))
        print(heavy)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_client_version_imports_tensorboard() -> None:
    result = run_python("""
        import loggerhub_tensorboard, tensorboard
        version = loggerhub_tensorboard.TensorBoardBackend().loggerhub_client_version()
        assert version == tensorboard.__version__, version
        print(version)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_works_with_tensorflow_and_torch_unimportable(tmp_path: Path) -> None:
    # Blocks the imports even where they are installed, so that a fallback to them fails loudly.
    result = run_python(f"""
        import sys, time
        from pathlib import Path

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "torch"):
                    raise ImportError("blocked: " + name)

        sys.meta_path.insert(0, Block())
        from loggerhub_hookspecs import MetricPoint, RunInfo, Status, TextRecord
        from loggerhub_tensorboard import TensorBoardBackend
        from loggerhub_tensorboard.reader import read_logdir

        run = RunInfo("r1", "p", "n", Path({str(tmp_path)!r}), {{"lr": 0.1}}, time.time())
        backend, state = TensorBoardBackend(), {{}}
        backend.loggerhub_run_start(run=run, state=state)
        backend.loggerhub_log_metrics(points=[MetricPoint("loss", 0.5, 1, time.time())])
        backend.loggerhub_log_text(text=TextRecord("notes", "hi", 1, time.time()))
        backend.loggerhub_run_end(run=run, status=Status.FINISHED, ended_at=time.time(), error=None)
        tb = read_logdir(state["logdir"])
        assert [s.value for s in tb.scalars["loss"]] == [0.5] and tb.status == "FINISHED", tb
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "torch")))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
