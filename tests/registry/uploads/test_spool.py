"""Upload copies (registry/uploads/spool.py) live in WORK_DIR/uploads, locked while in use:
a copy whose process died is removed by the next one, a live one is never touched."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from registry.settings import Settings
from registry.uploads.rules import dataset_file_rule
from registry.uploads.spool import Spool


def test_a_data_set_rule_spools_under_the_work_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, WORK_DIR=str(tmp_path / "work"))  # type: ignore[call-arg]
    assert dataset_file_rule("train.txt", settings).spool_dir == tmp_path / "work" / "uploads"


def test_a_copy_is_removed_with_its_directory_and_lock(tmp_path: Path) -> None:
    spool = Spool("train.txt", tmp_path)
    spool.write(b"hello\n")
    path = spool.close()
    assert path.read_bytes() == b"hello\n"
    assert path.parent.parent == tmp_path
    spool.remove()
    assert list(tmp_path.iterdir()) == []


def test_a_dead_copy_goes_and_a_live_one_stays(tmp_path: Path) -> None:
    # A copy left by a killed server: its directory and an unlocked lock file.
    (tmp_path / "upload-dead").mkdir()
    (tmp_path / "upload-dead" / "train.txt").write_bytes(b"x" * 1000)
    (tmp_path / "upload-dead.lock").touch()
    # A copy another process is writing now: its lock is held.
    (tmp_path / "upload-live").mkdir()
    held = os.open(tmp_path / "upload-live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        spool = Spool("train.txt", tmp_path)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert "upload-dead" not in names
        assert "upload-dead.lock" not in names
        assert {"upload-live", "upload-live.lock"} <= set(names)
        spool.remove()
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload-live", "upload-live.lock"]
