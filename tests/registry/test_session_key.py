"""The web pages' session key: one per data directory, whichever process draws it first."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from registry.infra.session_key import SessionKeyError, key_path, shared_session_secret
from registry.settings import Settings

PROCESSES = 8

DRAW = """
import sys
from registry.infra.session_key import shared_session_secret
from registry.settings import Settings
settings = Settings(_env_file=None, WORK_DIR=sys.argv[1])
print("ready", flush=True)
sys.stdin.read()  # every process is ready: draw together
print(shared_session_secret(settings))
"""


def settings_for(work_dir: Path, secret: str | None = None) -> Settings:
    return Settings(_env_file=None, WORK_DIR=str(work_dir),  # type: ignore[call-arg]
                    SESSION_SECRET=secret)


def test_drawn_once_private_and_kept(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "work")
    key = shared_session_secret(settings)
    assert len(key) == 64
    assert stat.S_IMODE(key_path(settings).stat().st_mode) == 0o600
    assert shared_session_secret(settings_for(tmp_path / "work")) == key
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["session.key"]  # no drafts


def test_processes_starting_together_agree(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    drawers = [subprocess.Popen([sys.executable, "-c", DRAW, str(tmp_path / "work")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env) for _ in range(PROCESSES)]
    for drawer in drawers:
        assert drawer.stdout is not None
        assert drawer.stdout.readline().strip() == "ready"
    for drawer in drawers:
        assert drawer.stdin is not None
        drawer.stdin.close()
    keys = set()
    for drawer in drawers:
        assert drawer.stdout is not None
        keys.add(drawer.stdout.read().strip())
        drawer.stdout.close()
        drawer.wait(timeout=120)
    assert all(drawer.returncode == 0 for drawer in drawers)
    assert len(keys) == 1, keys
    assert keys == {key_path(settings_for(tmp_path / "work")).read_text().strip()}


def test_a_set_secret_wins_and_no_file_is_made(tmp_path: Path) -> None:
    secret = "s" * 40
    assert shared_session_secret(settings_for(tmp_path / "work", secret)) == secret
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(("content", "mode", "says"), [
    ("a" * 64, 0o644, "chmod 600"),
    ("short", 0o600, "fewer than the 32"),
])
def test_an_unusable_key_file_is_refused_with_what_to_do(
        tmp_path: Path, content: str, mode: int, says: str) -> None:
    settings = settings_for(tmp_path / "work")
    path = key_path(settings)
    path.parent.mkdir()
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(SessionKeyError, match=says):
        shared_session_secret(settings)
