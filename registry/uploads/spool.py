"""A local copy of an upload, for checks that need the whole file at once (data sets).

The copy sits in a private directory under the upload's own (already checked) file name:
the readers that check it name the file they refuse by its path, and the kind of a data
file is its suffix. The directory is a `Scratch` (registry/infra/scratch.py) under the
rule's `spool_dir` (the server's `WORK_DIR/uploads`): it is locked while the upload runs,
so a server killed mid-upload leaves a directory that the next upload removes (each
new copy sweeps the unlocked ones beside it). Without a `spool_dir` it goes in the
system temp directory.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from registry.infra.scratch import Scratch


class Spool:
    def __init__(self, filename: str, parent: Path | None = None) -> None:
        root = parent if parent is not None else Path(tempfile.gettempdir()) / "deltahub-uploads"
        self._scratch = Scratch(root, f"upload-{uuid.uuid4().hex}")
        self.path = self._scratch.acquire() / filename
        self._file = self.path.open("wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def close(self) -> Path:
        """The finished copy's path."""
        self._file.close()
        return self.path

    def remove(self) -> None:
        self._file.close()
        self._scratch.release()
