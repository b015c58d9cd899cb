"""Files a pull writes get the mode the user's umask gives, like any file they create."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.client.files import write_checked


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_pulled_file_honours_the_umask(tmp_path: Path, umask: None, mask: int,
                                         mode: int) -> None:
    os.umask(mask)
    data = b"weights"
    dest = tmp_path / "model.safetensors"
    write_checked(dest, [data], hashlib.sha256(data).hexdigest(), "u")
    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
