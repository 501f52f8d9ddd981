"""Validation and normalisation of what users log: the rules documented in docs/conventions.md.

Everything here runs in the caller's thread. The metric path is kept to a dict lookup and a float
conversion per scalar; images, figures and artifacts are only checked here and encoded or copied
by the journal writer.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loggerhub_hookspecs import Box

MAX_STEP = 2**63 - 1
MAX_KEY_LENGTH = 4096
MAX_IMAGE_SIDE = 16384
REDACTED = "***REDACTED***"

# The userinfo of a URL (``scheme://user:password@host``): a password, or a token as the user name.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*)(?P<password>:[^/\s@]*)?@")
_SECRET_KEY = re.compile(
    r"(token|secret|passw(or)?d|api[_-]?key|apikey|credential|private[_-]?key|auth)", re.IGNORECASE
)
# Environment values shorter than this are too likely to collide with ordinary parameter values.
_MIN_SECRET_LENGTH = 6


class InvalidInput(ValueError):
    """A value given to ``run.log_*`` that loggerhub cannot record as it is."""


def check_key(key: object) -> str:
    """A canonical key: any non-empty string up to 4096 characters; ``/`` groups."""
    if not isinstance(key, str):
        raise InvalidInput(f"keys must be str, got {type(key).__name__}: {_short(key)}")
    if not key or key.isspace():
        raise InvalidInput("keys must be non-empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"key longer than {MAX_KEY_LENGTH} characters: {_short(key)}")
    return key


def check_step(step: object) -> int:
    """An integer ``0 <= step < 2**63``; integral floats and numpy integers are accepted."""
    if type(step) is int and 0 <= step <= MAX_STEP:
        return step
    if isinstance(step, (bool, str, bytes)):
        raise InvalidInput(f"step must be an integer, got {type(step).__name__}")
    if isinstance(step, int):
        value = step
    else:
        try:
            as_float = float(step)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput(f"step must be an integer, got {type(step).__name__}") from None
        if not as_float.is_integer():
            raise InvalidInput(f"step must be an integer, got {_short(step)}")
        value = int(as_float)
    if not 0 <= value <= MAX_STEP:
        raise InvalidInput(f"step must be between 0 and 2**63-1, got {value}")
    return value


def check_epoch(epoch: object) -> int | None:
    return None if epoch is None else check_step(epoch)


def metric_value(value: object) -> float:
    """A scalar as float. NaN and infinities are kept; strings and containers are refused."""
    if type(value) is float:
        return value  # type: ignore[return-value]
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise InvalidInput(f"metric values must be numbers, got {type(value).__name__}")
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise InvalidInput(f"metric value too large for a float: {_short(value)}") from None
    except Exception:  # noqa: BLE001 - any failing __float__ is the caller's input, not our error
        raise InvalidInput(
            f"metric values must be numbers or 0-d arrays, got {type(value).__name__}: {_short(value)}"
        ) from None


# --------------------------------------------------------------------------- params


def flatten_params(params: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings with ``/``: ``{"opt": {"lr": 1}}`` becomes ``{"opt/lr": 1}``.

    Lists and tuples stay single values (their items normalised). Keys are turned into strings.
    """
    flat: dict[str, Any] = {}
    for raw_key, value in params.items():
        key = f"{prefix}/{raw_key}" if prefix else str(raw_key)
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten_params(value, key))
            else:
                # An empty group keeps its key; ParamValue has no mappings, so it is written "{}".
                flat[check_key(key)] = "{}"
        else:
            flat[check_key(key)] = param_value(value)
    return flat


def param_value(value: Any) -> Any:
    """JSON scalars stay; numpy scalars become Python ones; anything else becomes its ``str``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return [param_value(item) for item in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        with contextlib.suppress(Exception):  # a failing item() falls back to str below
            return param_value(item())
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break logging
        return f"<unprintable {type(value).__name__}>"


class Redactor:
    """Replaces secrets in params and messages before they reach the journal or any tracker.

    A value is secret when its key looks like a credential (token, secret, password, api_key, ...)
    or when it equals a credential found in the environment when the run started.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._env_secrets = sorted(
            {v for k, v in env.items() if _SECRET_KEY.search(k) and len(v) >= _MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )

    def params(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        return {key: self._value(key, value) for key, value in flat.items()}

    def _value(self, key: str, value: Any) -> Any:
        if value is not None and _SECRET_KEY.search(key.rsplit("/", 1)[-1]):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._value("", item) for item in value]
        if isinstance(value, Mapping):  # nested options, e.g. {"mlflow": {"auth": {...}}}
            return {str(k): self._value(f"{key}/{k}", v) for k, v in value.items()}
        return value

    def text(self, text: str) -> str:
        """``text`` with every known secret replaced, and any URL's userinfo redacted: the password
        when there is one (``user:***REDACTED***@``), otherwise the user name, often a token."""
        for secret in self._env_secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "@" in text:
            text = _URL_USERINFO.sub(_redact_userinfo, text)
        return text


def _redact_userinfo(match: re.Match[str]) -> str:
    if match["password"] is not None:
        return f"{match['scheme']}{match['user']}:{REDACTED}@"
    return f"{match['scheme']}{REDACTED}@"


# --------------------------------------------------------------------------- images

ACCEPTED_IMAGES = (
    "numpy arrays HW, HWC or CHW (1, 3 or 4 channels; uint8, bool, or float in 0-1), "
    "PIL images, torch tensors, and paths to image files"
)


def image_array(image: Any) -> Any:
    """Normalise an image to a C-contiguous uint8 numpy array of shape HW, HWx3 or HWx4.

    Always returns a copy, so the caller may reuse its buffer at once.
    """

    module = type(image).__module__
    if module.startswith("PIL."):
        return _pil_array(image)
    if module.startswith("torch"):
        image = image.detach().cpu().numpy()
    if isinstance(image, (str, os.PathLike)):
        return _file_array(os.fspath(image))
    return _checked_array(image)


def image_source(image: Any) -> ImageFile:
    """What ``log_image`` journals: a file's checked bytes, or a normalised array copy."""
    if isinstance(image, (str, os.PathLike)):
        return image_file(image)
    array = image_array(image)
    return ImageFile(array.shape[1], array.shape[0], array=array)


def _checked_array(image: Any) -> Any:
    import numpy as np

    if not isinstance(image, np.ndarray):
        raise InvalidInput(f"cannot log {type(image).__name__} as an image; accepted: {ACCEPTED_IMAGES}")
    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidInput(f"image shape {image.shape} is not HW, HWC or CHW with 1, 3 or 4 channels")
    height, width = array.shape[:2]
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise InvalidInput(f"image sides must be 1 to {MAX_IMAGE_SIDE} pixels, got {width}x{height}")
    if array.dtype == np.uint8:
        return np.array(array, dtype=np.uint8, order="C", copy=True)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidInput("float images must not contain NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise InvalidInput(
                f"float images must lie in 0-1, got values from {low:g} to {high:g}; "
                "scale them, or pass uint8"
            )
        return np.ascontiguousarray(np.rint(array * 255.0), dtype=np.uint8)
    raise InvalidInput(f"image dtype {array.dtype} is not accepted; accepted: {ACCEPTED_IMAGES}")


def _pil_array(image: Any) -> Any:
    import numpy as np

    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    array = np.array(image, dtype=np.uint8)
    height, width = array.shape[:2]
    if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
        raise InvalidInput(f"image sides must be 1 to {MAX_IMAGE_SIDE} pixels, got {width}x{height}")
    return array


def _file_array(path: str) -> Any:
    image = image_file(path)
    return image.array if image.array is not None else decode(image.png or image.encoded or b"")


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image file's bytes, checked but not decoded: ``png`` to store as it is, or ``encoded``
    (another format, or a PNG mode the journal does not keep) for the writer to convert."""

    width: int
    height: int
    png: bytes | None = None
    encoded: bytes | None = None
    array: Any = None


_STORED_MODES = ("L", "RGB", "RGBA")


def image_file(path: str | os.PathLike[str]) -> ImageFile:
    """Read an image file and check its header (and a PNG's checksums) without decoding it:
    decoding and re-encoding belong to the journal writer, not to the training loop."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidInput(f"image file not found: {path}")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise InvalidInput(f"cannot read image {path}: {error}") from None
    return image_bytes(data, path)


def image_bytes(data: bytes, path: str = "<bytes>") -> ImageFile:
    """Encoded image bytes (any format Pillow reads), checked as :func:`image_file` checks them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height, image_format, mode = opened.width, opened.height, opened.format, opened.mode
            if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
                raise InvalidInput(f"image sides must be 1 to {MAX_IMAGE_SIDE} pixels: {path}")
            opened.verify()  # a PNG's chunks and CRCs: a truncated file fails here, not later
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput(f"not an image file: {path}") from None
    except Exception as error:  # noqa: BLE001 - truncated, corrupt or unreadable: the caller goes on
        raise InvalidInput(f"cannot read image {path}: {type(error).__name__}: {error}") from None
    if image_format == "PNG" and mode in _STORED_MODES:
        return ImageFile(width, height, png=data)
    return ImageFile(width, height, encoded=data)


def decode(data: bytes) -> Any:
    """Encoded image bytes as the uint8 array ``image_array`` would give."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        return _pil_array(opened)


def boxes(raw: Iterable[Any] | None, width: int, height: int) -> tuple[Box, ...]:
    """Boxes as :class:`Box`, or mappings with ``box`` = ``[x0, y0, x1, y1]`` in pixels plus
    optional ``label``, ``score`` and ``class_id``. Corners are ordered and must be finite."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes, Mapping, Box)) or not isinstance(raw, Iterable):
        raise InvalidInput(f"boxes must be a list of boxes, got {type(raw).__name__}")
    return tuple(_box(item) for item in raw)


def _box(item: Any) -> Box:
    if isinstance(item, Box):
        corners: Any = (item.x0, item.y0, item.x1, item.y1)
        label, score, class_id = item.label, item.score, item.class_id
    elif isinstance(item, Mapping):
        corners = item.get("box")
        label, score, class_id = item.get("label"), item.get("score"), item.get("class_id")
    else:
        raise InvalidInput(f"a box must be a loggerhub.Box or a mapping, got {type(item).__name__}")
    try:
        x0, y0, x1, y1 = (float(v) for v in corners)
    except Exception:  # noqa: BLE001 - wrong count, non-numbers, None: all the caller's input
        raise InvalidInput(f"each box needs corners [x0, y0, x1, y1] in pixels; got {_short(item)}") from None
    if not all(math.isfinite(c) for c in (x0, y0, x1, y1)):
        raise InvalidInput(f"box corners must be finite: {(x0, y0, x1, y1)}")
    if score is not None:
        try:
            score = float(score)
        except Exception:  # noqa: BLE001
            raise InvalidInput(f"a box score must be a number, got {_short(score)}") from None
    if class_id is not None:
        if isinstance(class_id, bool) or not _is_integral(class_id):
            raise InvalidInput(f"a box class_id must be an integer, got {_short(class_id)}")
        class_id = int(class_id)
    if label is not None:
        label = str(label)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return Box(x0, y0, x1, y1, label, score, class_id)


def _is_integral(value: Any) -> bool:
    try:
        as_float = float(value)
    except Exception:  # noqa: BLE001
        return False
    return math.isfinite(as_float) and as_float.is_integer()


# --------------------------------------------------------------------------- artifacts


def artifact_name(name: str) -> str:
    """A relative ``/``-separated name that cannot leave the run directory."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("artifact names must be non-empty strings")
    if "\x00" in name:
        raise InvalidInput(f"artifact names must not contain NUL: {name!r}")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        raise InvalidInput(f"artifact names must be relative: {name!r}")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidInput(f"artifact names must not contain '..': {name!r}")
    return posixpath.join(*parts)


def _short(value: object, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
