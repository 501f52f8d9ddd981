"""``loggerhub yolo MODE key=value ...``: the ``yolo`` command, logged to loggerhub trackers.

::

    loggerhub yolo train model=yolo11n.pt data=coco8.yaml epochs=10 --backends mlflow,tensorboard

The ``key=value`` arguments are those of Ultralytics' ``yolo`` command, parsed by its own helpers;
``--backends``, ``--project`` and ``--name`` belong to loggerhub. ultralytics is imported only
when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

MODES = ("train", "val", "predict", "export")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "yolo",
        help="run an Ultralytics YOLO mode (train, val, predict, export) and log it",
        description=(
            "Run `yolo MODE key=value ...` with the run logged to loggerhub. "
            "Example: loggerhub yolo train model=yolo11n.pt data=coco8.yaml epochs=10 --backends mlflow"
        ),
    )
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="Ultralytics arguments, as for the yolo command (model=, data=, epochs=, ...)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated trackers (default: LOGGERHUB_BACKENDS, then loggerhub.toml)")
    parser.add_argument("--project", default=None, help="loggerhub project (default: ultralytics)")
    parser.add_argument("--name", default=None, help="loggerhub run name (default: the run id)")
    parser.set_defaults(handler=run_yolo)


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``key=value`` tokens the way the ``yolo`` command reads them, checked against its arguments."""
    from ultralytics.cfg import check_dict_alignment, merge_equals_args, parse_key_value_pair
    from ultralytics.utils import DEFAULT_CFG_DICT

    overrides: dict[str, Any] = {}
    try:
        for token in merge_equals_args(tokens):
            if "=" in token:
                key, value = parse_key_value_pair(token)
                overrides[key] = value
            elif isinstance(DEFAULT_CFG_DICT.get(token), bool):
                overrides[token] = True  # a bare flag, as `yolo train plots` means plots=True
            else:
                raise ValueError(f"{token!r} is not a key=value argument")
        check_dict_alignment(DEFAULT_CFG_DICT, overrides)
    except (SyntaxError, AssertionError) as error:
        raise ValueError(str(error).strip()) from None
    return overrides


def run_yolo(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    model_name = overrides.pop("model", None)
    if model_name is None:
        raise ValueError("give the model, e.g. model=yolo11n.pt or model=yolo11n.yaml")
    overrides.pop("mode", None)

    from ultralytics import YOLO

    import loggerhub
    from loggerhub.integrations.ultralytics import attach

    backends = [name.strip() for name in args.backends.split(",") if name.strip()] if args.backends else None
    model = YOLO(model_name, task=overrides.pop("task", None))
    init: dict[str, Any] = {"dir": args.dir} if args.dir is not None else {}
    with loggerhub.init(project=args.project or "ultralytics", name=args.name, backends=backends,
                        **init) as run:
        attach(model, run=run)
        if args.mode == "predict":
            # stream=True keeps a long video from piling up every result in memory.
            for _ in model.predict(stream=True, **overrides):
                pass
        else:
            getattr(model, args.mode)(**overrides)
    print(f"loggerhub: run {run.id} logged to {Path(run.dir)}", file=sys.stderr)
    return 0
