"""Train a tiny YOLO detector on a synthetic dataset and log it to loggerhub.

::

    python examples/ultralytics_train.py                                   # the local journal only
    LOGGERHUB_BACKENDS=tensorboard,mlflow python examples/ultralytics_train.py

It runs offline on CPU in well under a minute: the model is built from ``yolo11n.yaml`` (no
weights to download) and trained on 12 generated 64-pixel images of red and blue rectangles.
Afterwards, ``loggerhub runs`` lists the run and ``loggerhub show <run id>`` summarises it.
Trackers are chosen by ``LOGGERHUB_BACKENDS`` (or ``loggerhub.toml``); their options, such as an
MLflow tracking URI, come from their own environment variables or ``loggerhub.toml``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from loggerhub.testing.ultralytics import detect_dataset, offline_environment


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", default=None, help="loggerhub run store (default: ./loggerhub-runs)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loggerhub-yolo-example-"))
    try:
        # Offline before the first import of ultralytics, which reads these once.
        for variable, value in offline_environment(work).items():
            os.environ.setdefault(variable, value)
        data = detect_dataset(work / "data")

        from ultralytics import YOLO

        from loggerhub.integrations.ultralytics import attach

        model = YOLO("yolo11n.yaml")
        init = {"dir": args.dir} if args.dir else {}
        # No backends= here: LOGGERHUB_BACKENDS (or loggerhub.toml) decides, "local" by default.
        run = attach(model, project="examples", name="yolo-synthetic", **init)
        # Steps are optimizer steps. Ultralytics accumulates gradients up to nbs=64 images by
        # default, so 8 images would take one step in all; nbs=batch steps once per batch.
        model.train(data=str(data), epochs=args.epochs, imgsz=64, batch=4, nbs=4, workers=0, device="cpu",
                    amp=False, plots=True, project=str(work / "ultralytics-runs"), name="train",
                    verbose=False)
        # The training ended the run; its summary says what each tracker received.
        print(f"\nrun {run.id}: {run.summary['status']}, logged to {run.dir}")
        for tracker, report in run.summary["trackers"].items():
            print(f"  {tracker}: {report['undelivered']} undelivered, {report['rejected']} rejected")
        print(f"see it with: loggerhub{' --dir ' + args.dir if args.dir else ''} show {run.id}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
