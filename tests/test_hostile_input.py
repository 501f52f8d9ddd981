"""Property-based tests: hostile values thrown at every ``log_*``.

The invariant: each call either journals its record (normalised as docs/conventions.md says) or
journals a ``rejected`` record with a reason, warns, and returns. It never raises (unless
``strict=True``), never loses the call, and never leaves the journal unreadable.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import loggerhub
from loggerhub import codec
from loggerhub import journal as j
from loggerhub.run import LoggerhubWarning

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

keys = st.one_of(
    st.text(max_size=30),
    st.text(min_size=5000, max_size=5001),
    st.integers(),
    st.none(),
    st.tuples(st.integers()),
    st.sampled_from(["", " ", "a/b", "🚀/損失", "a//b/", "x\x00y", "key with spaces", "%2F"]),
)
scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(10**400),  # OverflowError in float()
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.lists(st.floats(), max_size=2),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)
steps = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.booleans(),
)


def fresh(tmp_path: Path) -> Path:
    """A new folder per example: hypothesis runs many examples in one test's tmp_path."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


class Journal:
    """One run per example; counts what each call left in the journal."""

    def __init__(self, root: Path) -> None:
        self.run = loggerhub.init(project="fuzz", dir=root, flush_interval=10)
        self.seen = 1  # run_start

    def new_entries(self) -> list[j.Entry]:
        self.run.flush()
        entries = list(j.JournalReader(self.run.dir).entries())
        fresh, self.seen = entries[self.seen:], len(entries)
        return fresh

    def close(self) -> None:
        self.run.finish()
        types = [e.type for e in j.JournalReader(self.run.dir).entries()]
        assert types[0] == "run_start" and types[-1] == "run_end"


def call(journal: Journal, method: str, *args, **kwargs) -> j.Entry:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(journal.run, method)(*args, **kwargs)
    entries = journal.new_entries()
    assert len(entries) == 1, (method, args, kwargs, entries)
    entry = entries[0]
    if entry.type == codec.REJECTED:
        assert entry.data["api"] == method and entry.data["reason"]
        assert [w for w in caught if issubclass(w.category, LoggerhubWarning)], "rejected without a warning"
    else:
        assert not caught, [str(w.message) for w in caught]
    return entry


@SETTINGS
@given(metrics=st.one_of(st.dictionaries(keys, scalars, max_size=4), st.none(), st.integers(), st.lists(st.floats())),
       step=steps)
def test_log_metrics(tmp_path: Path, metrics: dict, step) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_metrics", metrics, step=step)
    if entry.type == codec.METRICS:
        assert isinstance(metrics, dict)
        assert 0 <= entry.data["step"] < 2**63
        assert set(entry.data["values"]) == set(metrics)
        for key, value in metrics.items():
            stored = entry.data["values"][key]
            assert isinstance(key, str) and key.strip()
            assert stored == float(value) or (math.isnan(stored) and math.isnan(float(value)))
    journal.close()


@SETTINGS
@given(params=st.recursive(
    st.dictionaries(keys, scalars, max_size=3),
    lambda children: st.dictionaries(st.text(min_size=1, max_size=5), children, max_size=3),
    max_leaves=8,
))
def test_log_params(tmp_path: Path, params: dict) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_params", params)
    if entry.type == codec.PARAMS:
        assert all(isinstance(k, str) and k for k in entry.data["params"])
    journal.close()


@SETTINGS
@given(image=hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    elements=None,
))
def test_log_image_arrays(tmp_path: Path, image: np.ndarray) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_image", "img", image)
    if entry.type == codec.IMAGE:
        record = codec.decode(entry, journal.run.dir)
        assert record.png_bytes().startswith(b"\x89PNG")
        assert record.width >= 1 and record.height >= 1
    journal.close()


@SETTINGS
@given(boxes=st.one_of(st.lists(st.one_of(
    st.fixed_dictionaries({"box": st.lists(st.floats(), min_size=0, max_size=5)},
                          optional={"label": st.text(max_size=4),
                                    "score": st.one_of(st.floats(), st.text(max_size=3)),
                                    "class_id": st.one_of(st.integers(-5, 5), st.floats())}),
    st.builds(loggerhub.Box, st.one_of(st.floats(), st.text(max_size=2)), st.floats(), st.floats(), st.floats(),
              score=st.one_of(st.none(), st.floats(), st.text(max_size=2)),
              class_id=st.one_of(st.none(), st.integers(-3, 3), st.floats())),
    st.integers(), st.none(), st.text(max_size=3),
), max_size=3), st.integers(), st.text(max_size=3)))
def test_log_image_boxes(tmp_path: Path, boxes: list) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_image", "img", np.zeros((4, 4), np.uint8), boxes=boxes)
    if entry.type == codec.IMAGE:
        for box in codec.decode(entry, journal.run.dir).boxes:
            assert box.x0 <= box.x1 and box.y0 <= box.y1
    journal.close()


@SETTINGS
@given(key=keys, text=st.one_of(st.text(), st.integers(), st.none(), st.binary(max_size=4)), step=steps)
def test_log_text(tmp_path: Path, key, text, step) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_text", key, text, step=step)
    if entry.type == codec.TEXT:
        assert entry.data["text"] == text
    journal.close()


@SETTINGS
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(["../x", "/abs", "a/../../b", "ok/name.bin", "."])),
       kind=st.one_of(st.sampled_from(["model", "dataset", "file"]), st.text(max_size=5)),
       target=st.sampled_from(["file", "dir", "missing", "symlink"]))
def test_log_artifact(tmp_path: Path, name: str, kind: str, target: str) -> None:
    tmp_path = fresh(tmp_path)
    source = tmp_path / "source"
    if target == "file":
        source.write_bytes(b"x")
    elif target == "dir":
        source.mkdir()
        (source / "f").write_bytes(b"x")
    elif target == "symlink":
        source.symlink_to(tmp_path / "nowhere")
    journal = Journal(tmp_path / "runs")
    entry = call(journal, "log_artifact", source, name=name, kind=kind)
    if entry.type == codec.ARTIFACT:
        copy = (journal.run.dir / entry.data["file"]).resolve()
        assert copy.is_relative_to((journal.run.dir / "artifacts").resolve())
    journal.close()


@SETTINGS
@given(rows=st.one_of(st.lists(st.one_of(st.lists(scalars, max_size=3), st.integers()), max_size=3), st.integers(),
                      st.none()),
       columns=st.one_of(st.lists(st.text(max_size=3), max_size=3), st.integers()))
def test_log_table(tmp_path: Path, rows: list, columns: list) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_table", "t", columns, rows)
    if entry.type == codec.TABLE:
        assert all(len(row) == len(columns) for row in entry.data["rows"])
    journal.close()


@SETTINGS
@given(phase=st.one_of(st.sampled_from([p.value for p in loggerhub.Phase]), st.text(max_size=8)),
       step=steps, epoch=steps)
def test_log_event(tmp_path: Path, phase: str, step, epoch) -> None:
    journal = Journal(fresh(tmp_path))
    call(journal, "log_event", phase, step=step, epoch=epoch)
    journal.close()


@pytest.mark.parametrize("figure", [None, 3, "missing.png", object()])
def test_log_figure_rejects_non_figures(tmp_path: Path, figure) -> None:
    journal = Journal(fresh(tmp_path))
    entry = call(journal, "log_figure", "f", figure)
    assert entry.type == codec.REJECTED
    journal.close()
