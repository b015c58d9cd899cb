"""Every data set test checks that uploads leave no local copy behind (uploads/spool.py):
neither in the server's WORK_DIR/uploads, where copies go, nor in the temp directory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_spool_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The process's temporary directory, moved where the test can see all of it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield scratch
    assert list(scratch.iterdir()) == []
    spools = tmp_path / "work" / "uploads"  # the settings fixture's WORK_DIR
    assert not spools.exists() or list(spools.iterdir()) == []
