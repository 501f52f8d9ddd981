"""The key mapping: reversible, injective, and strict about names comet_ml would truncate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loggerhub_comet.keys import (
    ESCAPE,
    MAX_NAME_LENGTH,
    RESERVED,
    NameTooLong,
    from_tracker,
    metric_name,
    to_tracker,
)

keys = st.text(min_size=1)
prefixes = st.sampled_from([ESCAPE, "~", ESCAPE * 2, "~" + ESCAPE])
tricky = st.one_of(keys, st.sampled_from(sorted(RESERVED)), st.builds(lambda p, k: p + k, prefixes, keys))


@given(tricky)
def test_round_trip(key: str) -> None:
    assert from_tracker(to_tracker(key)) == key


@given(tricky, tricky)
def test_no_two_keys_share_a_comet_name(a: str, b: str) -> None:
    if a != b:
        assert to_tracker(a) != to_tracker(b)


@pytest.mark.parametrize("key", ["train/loss", "metrics/mAP50-95(B)", "lr/pg0", "odd key:#%@!", "größe",
                                 "a~b", "x!"])
def test_ordinary_keys_are_unchanged(key: str) -> None:
    assert to_tracker(key) == key


@pytest.mark.parametrize(("key", "name"), [
    ("curr_step", "!curr_step"),
    ("curr_epoch", "!curr_epoch"),
    ("process duration", "!process duration"),
    ("!x", "!!x"),
    ("~/secret", "!~/secret"),
])
def test_escaped_keys(key: str, name: str) -> None:
    assert to_tracker(key) == name
    assert from_tracker(name) == key


@given(st.text(min_size=1, max_size=MAX_NAME_LENGTH - 1))
def test_short_names_pass(key: str) -> None:
    assert metric_name(key) == to_tracker(key)


def test_names_comet_would_truncate_are_refused() -> None:
    assert metric_name("k" * MAX_NAME_LENGTH) == "k" * MAX_NAME_LENGTH
    with pytest.raises(NameTooLong, match="truncates"):
        metric_name("k" * (MAX_NAME_LENGTH + 1))
    # The escape counts: a key that needs it can grow past the limit.
    with pytest.raises(NameTooLong):
        metric_name("~" + "k" * (MAX_NAME_LENGTH - 1))
