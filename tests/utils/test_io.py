"""Atomic writes (and the modes they leave), the writer lock, the stopwatch."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hikari.utils.io import (
    Stopwatch,
    WriterBusy,
    atomic_directory,
    atomic_write_json,
    current_umask,
    exclusive_writer,
)


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


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_and_folders_follow_the_umask(tmp_path: Path, mask: int) -> None:
    """mkstemp/mkdtemp make 0600/0700 whatever the umask; results on a shared server must be as readable as any
    file the user writes."""
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        written = atomic_write_json(tmp_path / "run_info.json", {"a": 1})
        with atomic_directory(tmp_path / "index") as staging:
            (staging / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "index").stat().st_mode) == 0o777 & ~mask


def test_a_second_writer_is_refused_at_once_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    target = tmp_path / "predictions.jsonl"
    with exclusive_writer(target):
        busy = rf"predictions.jsonl is being written by another process \(pid {os.getpid()}\)"
        with pytest.raises(WriterBusy, match=busy), exclusive_writer(target):
            pass
    with exclusive_writer(target):  # released on exit
        pass
    code = (f"import sys\nfrom hikari.utils.io import exclusive_writer\nwith exclusive_writer({str(target)!r}):\n"
            "    print('held', flush=True)\n    sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
    with pytest.raises(WriterBusy, match=f"pid {holder.pid}"), exclusive_writer(target):
        pass
    holder.kill()  # killed, not closed: the kernel drops the lock
    holder.wait()
    with exclusive_writer(target):
        pass
