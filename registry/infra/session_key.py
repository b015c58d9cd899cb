"""The key that signs page sessions and CSRF tokens, the same in every server process.

With DELTAHUB_SESSION_SECRET set, that is the key. Unset, `deltahub serve` uses the key in
`WORK_DIR/session.key`, drawing it on the first start: every process of the server (and
every later start on this data directory) signs with the same key, so a sign-in made on
one process is honoured by the others and survives a restart. Servers on several
machines must be given one DELTAHUB_SESSION_SECRET: each machine has its own WORK_DIR.

N processes may start together: each draws a key into a private temporary file and
hard-links it to the final name; `link` fails when the name exists, so exactly one key
wins and nobody ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from registry.settings import Settings

KEY_FILE = "session.key"
_KEY_BYTES = 32  # 256 bits, for HMAC-SHA256
_MIN_KEY_CHARS = 32  # as Settings.SESSION_SECRET


class SessionKeyError(ValueError):
    """The key file cannot be used; the message says which file and what to do."""


def key_path(settings: Settings) -> Path:
    return Path(settings.WORK_DIR) / KEY_FILE


def shared_session_secret(settings: Settings) -> str:
    """DELTAHUB_SESSION_SECRET, or the data directory's key (drawn on first use)."""
    if settings.SESSION_SECRET:
        return settings.SESSION_SECRET
    path = key_path(settings)
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(_KEY_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        # FileExistsError: another process of this server drew the key first; use theirs.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def _read(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SessionKeyError(
            f"{path} (the key signing web sign-ins) is readable by others (mode {mode:o}); "
            f"run `chmod 600 {path}`, or set DELTAHUB_SESSION_SECRET")
    key = path.read_text(encoding="ascii", errors="replace").strip()
    if len(key) < _MIN_KEY_CHARS:
        raise SessionKeyError(
            f"{path} holds {len(key)} characters, fewer than the {_MIN_KEY_CHARS} of a key; "
            "delete it to draw a new key (everyone signed in to the web pages is signed "
            "out), or set DELTAHUB_SESSION_SECRET")
    return key
