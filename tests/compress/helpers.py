"""Helpers shared by the codec tests (fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path


def nothing_written(out: Path) -> bool:
    """True when neither `out` nor a scratch directory for it exists."""
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
