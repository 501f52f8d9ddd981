"""The key <-> tag mapping: identity except for the reserved prefixes, and a bijection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loggerhub_tensorboard.keys import from_tracker, is_reserved, reserved, to_tracker

KEYS = st.one_of(
    st.text(min_size=1),
    st.builds(lambda n, word, rest: "_" * n + word + rest,
              st.integers(0, 4), st.sampled_from(["hparams_/", "loggerhub_/", "hparams_", "loggerhub"]),
              st.text()),
)


@pytest.mark.parametrize("key", ["train/loss", "metrics/mAP50-95(B)", "odd key:#%@!", "größe", "a//b",
                                 "/lead", "trail/", ".", "..", "new\nline", "_private", "_hparams_",
                                 "hparams_/x", "__init__/x", "_loggerhub_x/y"])
def test_ordinary_keys_are_their_own_tags(key: str) -> None:
    assert to_tracker(key) == key
    assert from_tracker(key) == key


@pytest.mark.parametrize(("key", "tag"), [
    ("_hparams_/session_start_info", "__hparams_/session_start_info"),
    ("_loggerhub_/status", "__loggerhub_/status"),
    ("__hparams_/x", "___hparams_/x"),
    ("___loggerhub_/", "____loggerhub_/"),
])
def test_reserved_prefixes_are_escaped(key: str, tag: str) -> None:
    assert to_tracker(key) == tag
    assert from_tracker(tag) == key


def test_reserved_tags_have_no_key() -> None:
    for tag in ("_hparams_/session_start_info", "_hparams_/experiment", reserved("status"),
                reserved("annotations/samples/boxes")):
        assert is_reserved(tag)
        assert from_tracker(tag) is None
    assert reserved("status") == "_loggerhub_/status"


@given(KEYS)
def test_round_trip(key: str) -> None:
    tag = to_tracker(key)
    assert from_tracker(tag) == key
    assert not is_reserved(tag)


@given(KEYS, KEYS)
def test_no_two_keys_share_a_tag(a: str, b: str) -> None:
    if a != b:
        assert to_tracker(a) != to_tracker(b)
