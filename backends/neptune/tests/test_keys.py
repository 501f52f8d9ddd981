"""The key mapping: reversible, injective, and only touching what Neptune would change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loggerhub_neptune.keys import (
    RESERVED_ROOTS,
    KeyCollision,
    KeyMap,
    from_segment_path,
    from_tracker,
    to_segment_path,
    to_tracker,
)

segments = st.one_of(
    st.text(max_size=6),
    st.text(alphabet="~", max_size=4),
    st.sampled_from(sorted(RESERVED_ROOTS)).map(lambda r: "_" * 2 + r),
    st.sampled_from(sorted(RESERVED_ROOTS)),
)
keys = st.lists(segments, min_size=1, max_size=5).map("/".join).filter(bool)


@settings(database=None)  # no .hypothesis folder in the repository
@given(keys)
def test_round_trip(key: str) -> None:
    assert from_tracker(to_tracker(key)) == key
    assert from_segment_path(to_segment_path(key)) == key


@settings(database=None)  # no .hypothesis folder in the repository
@given(keys)
def test_neptune_keeps_every_segment(key: str) -> None:
    # neptune.internal.utils.paths.parse_path drops empty segments; a mapped path has none.
    assert all(to_tracker(key).split("/"))
    assert all(to_segment_path(key).split("/"))


@settings(database=None)  # no .hypothesis folder in the repository
@given(keys)
def test_never_lands_in_a_reserved_root(key: str) -> None:
    assert to_tracker(key).split("/")[0] not in RESERVED_ROOTS


@settings(database=None)  # no .hypothesis folder in the repository
@given(keys, keys)
def test_injective(a: str, b: str) -> None:
    if a != b:
        assert to_tracker(a) != to_tracker(b)
        assert to_segment_path(a) != to_segment_path(b)


@pytest.mark.parametrize(("key", "path"), [
    ("train/loss", "train/loss"),
    ("metrics/mAP50-95(B)", "metrics/mAP50-95(B)"),
    ("odd key:#%@!", "odd key:#%@!"),
    ("größe/ü", "größe/ü"),
    ("a//b", "a/~/b"),
    ("/lead", "~/lead"),
    ("trail/", "trail/~"),
    ("/", "~/~"),
    ("a/~/b", "a/~~/b"),
    ("x~/~y", "x~/~y"),
    ("sys/failed", "_sys/failed"),
    ("_sys/failed", "__sys/failed"),
    ("parameters", "_parameters"),
    ("system/x", "system/x"),
    ("a/sys", "a/sys"),
])
def test_examples(key: str, path: str) -> None:
    assert to_tracker(key) == path
    assert from_tracker(path) == key


def test_namespaced_keys_keep_reserved_names() -> None:
    assert to_segment_path("sys/x") == "sys/x"


def test_paths_the_backend_never_writes_are_refused() -> None:
    with pytest.raises(ValueError):
        from_tracker("sys/failed")
    with pytest.raises(ValueError):
        from_segment_path("a//b")
    with pytest.raises(ValueError):
        to_tracker("")


def test_key_map_reports_a_collision() -> None:
    keymap = KeyMap()
    assert keymap.path("a//b") == "a/~/b"
    assert keymap.path("x", "parameters") == "parameters/x"
    keymap._owner["c/~/d"] = "someone-else"  # what a lossy rule would produce
    with pytest.raises(KeyCollision, match="'someone-else' and 'c//d' both map to the Neptune field 'c/~/d'"):
        keymap.path("c//d")
