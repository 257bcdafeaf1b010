"""Atomic directory replacement and the stopwatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from hikari.utils.io import Stopwatch, atomic_directory


def test_atomic_directory_replaces_the_old_folder_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_directory(out) as staging:
        (staging / "a.txt").write_text("2")
        raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "1"  # the old folder survives a failed write
    with atomic_directory(out) as staging:
        (staging / "b.txt").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or trash folders left


def test_stopwatch_records_named_laps() -> None:
    watch = Stopwatch()
    watch.lap("a")
    watch.lap("b")
    assert list(watch.timings) == ["a", "b"] and all(v >= 0 for v in watch.timings.values())
