"""The key mapping: reversible, accepted by MLflow's own validators, collisions refused."""

from __future__ import annotations

import posixpath
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from loggerhub_mlflow.keys import (
    IMAGE_KEY_MAX_LENGTH,
    NAME_MAX_LENGTH,
    KeyCollision,
    KeyMap,
    UnmappableKey,
    from_tracker,
    to_tracker,
)
from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

# MlflowClient.log_image checks its key with this pattern (mlflow/tracking/client.py).
IMAGE_KEY = re.compile(r"^[a-zA-Z0-9_\-./ ]+$")
# What MLflow's HTTP artifact client mangles in a path (cut at # and ?, %xx decoded).
ARTIFACT_MANGLED = re.compile(r"[#?%\x00-\x1f\x7f]")
# Table artifact paths may not hold these (MlflowClient._check_artifact_file_string).
TABLE_FORBIDDEN = set("\"',:[]{}")

keys = st.text(min_size=1, max_size=60)
path_like = st.lists(st.sampled_from(["", ".", "..", "a", "_", "__", "2f", "(x)", "ü", " ", ":"]),
                     min_size=1, max_size=8).map("/".join).filter(bool)


@pytest.mark.parametrize(("key", "expected"), [
    ("train/loss", "train/loss"),
    ("metrics/mAP50-95(B)", "metrics/mAP50-95__28B__29"),
    ("lr/pg0", "lr/pg0"),
    ("odd key:#%@!", "odd key__3a__23__25__40__21"),
    ("größe", "größe"),
    ("clf__C", "clf__C"),
    ("__init__", "__init__"),
    ("a__ab", "a__5f_ab"),
    ("/a//b/", "__2fa/__2fb__2f"),
    ("a/./b", "a/__2e/b"),
    ("..x", "__2e.x"),
    ("emoji😀", "emoji__U0001f600"),
])
def test_documented_examples(key: str, expected: str) -> None:
    assert to_tracker(key) == expected
    assert from_tracker(expected) == key


def test_image_keys_are_ascii() -> None:
    assert to_tracker("größe/bild", "image") == "gr__f6__dfe/bild"
    assert to_tracker("samples/rgb", "image") == "samples/rgb"


def test_artifact_names_keep_everything_mlflow_stores_intact() -> None:
    assert to_tracker("dataset/sub/b.txt", "artifact") == "dataset/sub/b.txt"
    assert to_tracker("größe ✓ (1).txt", "artifact") == "größe ✓ (1).txt"
    assert to_tracker("a#b?c%41.txt", "artifact") == "a__23b__3fc__2541.txt"


@settings(max_examples=800, deadline=None)
@given(st.one_of(keys, path_like))
@example("_" * 5 + "28")
@example("a/../b")
def test_names_round_trip_and_pass_mlflow_validation(key: str) -> None:
    try:
        name = to_tracker(key)
    except UnmappableKey:
        assert len(key) * 11 > NAME_MAX_LENGTH  # only escapes make a short key too long
        return
    assert from_tracker(name) == key
    _validate_metric_name(name)
    _validate_param_name(name)
    _validate_tag_name(name)
    assert not TABLE_FORBIDDEN & set(name)
    assert posixpath.normpath(name) == name


@settings(max_examples=800, deadline=None)
@given(st.one_of(keys, path_like))
def test_image_keys_round_trip_and_pass_log_image_check(key: str) -> None:
    try:
        name = to_tracker(key, "image")
    except UnmappableKey:
        return
    assert from_tracker(name) == key
    assert IMAGE_KEY.match(name)
    assert posixpath.normpath(name) == name


@settings(max_examples=500, deadline=None)
@given(st.one_of(keys, path_like))
def test_artifact_names_round_trip_and_survive_the_http_client(key: str) -> None:
    name = to_tracker(key, "artifact")
    assert from_tracker(name) == key
    assert not ARTIFACT_MANGLED.search(name)
    assert ".." not in name.split("/") and not name.startswith("/")


@settings(max_examples=500, deadline=None)
@given(keys, keys)
def test_distinct_keys_never_share_a_name(a: str, b: str) -> None:
    for kind in ("name", "image", "artifact"):
        try:
            same = to_tracker(a, kind) == to_tracker(b, kind)
        except UnmappableKey:
            continue
        assert same == (a == b)


def test_too_long_keys_are_refused_with_the_limit() -> None:
    assert to_tracker("k" * NAME_MAX_LENGTH) == "k" * NAME_MAX_LENGTH
    with pytest.raises(UnmappableKey, match="250"):
        to_tracker("k" * (NAME_MAX_LENGTH + 1))
    with pytest.raises(UnmappableKey, match="250"):
        to_tracker("(" * 63)  # 252 characters once escaped
    with pytest.raises(UnmappableKey, match=str(IMAGE_KEY_MAX_LENGTH)):
        to_tracker("k" * (IMAGE_KEY_MAX_LENGTH + 1), "image")
    with pytest.raises(UnmappableKey):
        to_tracker("")


def test_keymap_refuses_a_second_key_for_one_name() -> None:
    lossy = KeyMap(lambda key, kind: key.lower())
    assert lossy("Loss") == "loss"
    assert lossy("Loss") == "loss"
    with pytest.raises(KeyCollision, match="'Loss' and 'loss'"):
        lossy("loss")
    assert lossy("loss", "image") == "loss"  # another namespace


def test_keymap_with_the_real_rule_maps_and_remembers() -> None:
    mapping = KeyMap()
    assert mapping("metrics/mAP50-95(B)") == "metrics/mAP50-95__28B__29"
    assert mapping("metrics/mAP50-95__28B__29") == "metrics/mAP50-95__5f_28B__5f_29"
