"""Offline Ultralytics and tiny synthetic datasets, for tests, benchmarks and examples.

Nothing here imports ultralytics: set the environment from :func:`offline_environment` before the
first ``import ultralytics``, which reads it once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Two classes a detector tells apart by colour alone.
CLASSES = {0: "red", 1: "blue"}
COLOURS = {0: (220, 40, 40), 1: (40, 40, 220)}


def offline_environment(root: Path) -> dict[str, str]:
    """Environment variables that keep Ultralytics off the network, with its config under ``root``."""
    config = root / "yolo-config"
    fonts = config / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    import matplotlib

    # Ultralytics downloads Arial for its plots even when offline; DejaVu Sans stands in.
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copyfile(dejavu, fonts / name)
    return {
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(config),
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


def detect_dataset(root: Path, *, train_images: int = 8, val_images: int = 4, size: int = 64,
                   seed: int = 0) -> Path:
    """A detection dataset in YOLO format of coloured rectangles; returns its data.yaml."""
    return task_dataset(root, "detect", train_images=train_images, val_images=val_images, size=size, seed=seed)


def task_dataset(root: Path, task: str, *, train_images: int = 8, val_images: int = 4, size: int = 64,
                 seed: int = 0) -> Path:
    """Coloured rectangles labelled for ``task``: detect, segment (the rectangle as a polygon),
    pose (two keypoints, the middles of the left and right edges) or obb (four corners).
    Returns the data.yaml."""
    import numpy as np
    from PIL import Image

    if task not in ("detect", "segment", "pose", "obb"):
        raise ValueError(f"no synthetic {task} dataset")
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_images), ("val", val_images)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = np.full((size, size, 3), 96, dtype=np.uint8)
            lines = []
            for _ in range(2):
                cls = int(rng.integers(0, len(CLASSES)))
                width, height = (int(v) for v in rng.integers(size // 5, size // 2, 2))
                x0, y0 = int(rng.integers(0, size - width)), int(rng.integers(0, size - height))
                image[y0:y0 + height, x0:x0 + width] = COLOURS[cls]
                lines.append(f"{cls} {_label(task, x0 / size, y0 / size, width / size, height / size)}\n")
            Image.fromarray(image).save(root / "images" / split / f"{split}{index}.jpg")
            (root / "labels" / split / f"{split}{index}.txt").write_text("".join(lines))
    names = "".join(f"  {i}: {name}\n" for i, name in CLASSES.items())
    extra = "kpt_shape: [2, 3]\nflip_idx: [1, 0]\n" if task == "pose" else ""
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\n{extra}names:\n{names}")
    return data


def _label(task: str, x0: float, y0: float, w: float, h: float) -> str:
    """One YOLO label line after the class, coordinates normalised to 0-1."""
    corners = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
    if task in ("segment", "obb"):
        return " ".join(f"{c:.6f}" for c in corners)
    box = f"{x0 + w / 2:.6f} {y0 + h / 2:.6f} {w:.6f} {h:.6f}"
    if task == "pose":
        return f"{box} {x0:.6f} {y0 + h / 2:.6f} 2 {x0 + w:.6f} {y0 + h / 2:.6f} 2"
    return box


def classify_dataset(root: Path, *, train_images: int = 4, val_images: int = 2, size: int = 64,
                     seed: int = 1) -> Path:
    """A classification dataset, ``<root>/{train,val}/<class>/*.jpg``; returns ``root``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_images), ("val", val_images)):
        for cls, name in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image = np.full((size, size, 3), COLOURS[cls], dtype=np.int16)
                noise = rng.integers(-20, 20, image.shape)
                Image.fromarray(np.clip(image + noise, 0, 255).astype(np.uint8)).save(folder / f"{index}.jpg")
    return root
