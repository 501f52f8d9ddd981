"""A throwaway plugin that records every hook call, for the core's tests.

It is a real plugin: tests install it as a distribution with an entry point (see conftest.py), so
the delivery process finds it the way it finds any tracker. Calls are appended as JSON lines to
the file named by the ``record_to`` option, because delivery runs in another process. The
``fail`` option makes chosen hooks raise, to exercise retries and isolation, or say
``Unsupported``, as a tracker without a place for that kind of record does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from loggerhub_hookspecs import Rejected, Unsupported, hookimpl, specs

HOOK_NAMES = sorted(name for name in dir(specs) if name.startswith("loggerhub_"))


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value.value if hasattr(value, "value") else value)


class RecordingPlugin:
    def __init__(self) -> None:
        self.out: Path | None = None
        self.fail: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, hook: str, **kwargs: Any) -> None:
        mode = self.fail.get(hook)
        if mode == "reject":
            raise Rejected(f"{hook} refused by the test")
        if mode == "unsupported":
            raise Unsupported(hook)
        if mode == "always":
            raise ConnectionError(f"{hook}: tracker unreachable (token=sk-test-secret-123456)")
        if isinstance(mode, int) and mode > 0:
            self.fail[hook] = mode - 1
            raise ConnectionError(f"{hook}: transient failure")
        call = {k: _plain(v) for k, v in kwargs.items()}
        self.calls.append((hook, call))
        if self.out is not None:
            with self.out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"hook": hook, **call}) + "\n")

    def _configure(self, run: Any) -> None:
        if run.options.get("record_to"):
            self.out = Path(run.options["record_to"])
        self.fail = dict(run.options.get("fail", {}))

    @hookimpl
    def loggerhub_client_version(self) -> str:
        return "1.0-test"

    @hookimpl
    def loggerhub_run_start(self, run: Any, state: dict[str, Any]) -> None:
        self._configure(run)
        self._record("loggerhub_run_start", run_id=run.run_id, name=run.name)
        state["tracker_run"] = f"tracked-{run.run_id}"

    @hookimpl
    def loggerhub_run_resume(self, run: Any, state: dict[str, Any]) -> None:
        self._configure(run)
        self._record("loggerhub_run_resume", run_id=run.run_id, state=dict(state))

    @hookimpl
    def loggerhub_run_end(self, run: Any, status: Any) -> None:
        self._record("loggerhub_run_end", status=status.value)

    @hookimpl
    def loggerhub_train_start(self, event: Any) -> None:
        self._record("loggerhub_train_start", event=event)

    @hookimpl
    def loggerhub_train_end(self, event: Any) -> None:
        self._record("loggerhub_train_end", event=event)

    @hookimpl
    def loggerhub_epoch_start(self, event: Any) -> None:
        self._record("loggerhub_epoch_start", event=event)

    @hookimpl
    def loggerhub_epoch_end(self, event: Any) -> None:
        self._record("loggerhub_epoch_end", event=event)

    @hookimpl
    def loggerhub_step_start(self, event: Any) -> None:
        self._record("loggerhub_step_start", event=event)

    @hookimpl
    def loggerhub_step_end(self, event: Any) -> None:
        self._record("loggerhub_step_end", event=event)

    @hookimpl
    def loggerhub_validation_end(self, event: Any) -> None:
        self._record("loggerhub_validation_end", event=event)

    @hookimpl
    def loggerhub_checkpoint_saved(self, checkpoint: Any) -> None:
        self._record("loggerhub_checkpoint_saved", checkpoint=checkpoint,
                     content=Path(checkpoint.path).read_bytes().hex())

    @hookimpl
    def loggerhub_log_params(self, params: Any) -> None:
        self._record("loggerhub_log_params", params=params)

    @hookimpl
    def loggerhub_log_metrics(self, points: Any) -> None:
        self._record("loggerhub_log_metrics", points=points)

    @hookimpl
    def loggerhub_log_image(self, image: Any) -> None:
        self._record("loggerhub_log_image", image=image, png=len(image.png_bytes()))

    @hookimpl
    def loggerhub_log_figure(self, figure: Any) -> None:
        self._record("loggerhub_log_figure", figure=figure,
                     has_figure=figure.load_figure() is not None)

    @hookimpl
    def loggerhub_log_artifact(self, artifact: Any) -> None:
        self._record("loggerhub_log_artifact", artifact=artifact)

    @hookimpl
    def loggerhub_log_text(self, text: Any) -> None:
        self._record("loggerhub_log_text", text=text)

    @hookimpl
    def loggerhub_log_table(self, table: Any) -> None:
        self._record("loggerhub_log_table", table=table)

    @hookimpl
    def loggerhub_log_system_metrics(self, points: Any) -> None:
        self._record("loggerhub_log_system_metrics", points=points)

    @hookimpl
    def loggerhub_log_console(self, output: Any) -> None:
        self._record("loggerhub_log_console", output=output)

    @hookimpl
    def loggerhub_log_context(self, context: Any) -> None:
        self._record("loggerhub_log_context", context=context)


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
