"""A local copy of an upload, for checks that need the whole file at once (data sets).

The copy sits in a private temporary directory under the upload's own (already checked)
file name: the readers that check it name the file they refuse by its path, and the
kind of a data file is its suffix.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


class Spool:
    def __init__(self, filename: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="deltahub-upload-"))
        self.path = self._dir / filename
        self._file = self.path.open("wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def close(self) -> Path:
        """The finished copy's path."""
        self._file.close()
        return self.path

    def remove(self) -> None:
        self._file.close()
        shutil.rmtree(self._dir, ignore_errors=True)
