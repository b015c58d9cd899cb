"""Finding the Chromium the browser tests drive, and what to say when there is none."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

INSTALL_HINT = ("install Debian's Chromium (`sudo apt-get install -y chromium`) or set "
                "DELTAHUB_CHROMIUM to a Chromium executable; Playwright comes with "
                "`pip install -e '.[test]'`")


def browser_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("DELTAHUB_REQUIRE_BROWSER") == "1"


def chromium() -> str:
    path = os.environ.get("DELTAHUB_CHROMIUM") or shutil.which("chromium") or ""
    if not path or not Path(path).exists():
        message = f"no Chromium found for the browser tests: {INSTALL_HINT}"
        if browser_required():
            pytest.fail(message)
        pytest.skip(message)
    return path
