"""The fine-tune's logits for every training batch, kept in a scratch file on disk.

Written once in step order, read back a batch per step with a positioned read (not mmap,
which would count towards resident memory). float16 by default: its rounding moves the
teacher's log-probabilities by under 0.016 nats and halves the file. The size is checked
against free disk first. See docs/codecs.md, "Scale distillation".
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from compress.errors import DISK_FULL_ERRNOS, InvalidParameter, NonFiniteLoss, ScratchDiskFull

TEACHER_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_FILE_NAME = "teacher-logits.bin"
_ADVICE = ("free space there, or distil with fewer steps, smaller batches or shorter rows "
           "(the file holds steps × batch_size × seq_len × vocabulary logits)")


def teacher_file_bytes(steps: int, shape: tuple[int, int, int], dtype: str) -> int:
    """The scratch file's size: `steps` batches of `shape` logits in `dtype`."""
    return steps * math.prod(shape) * TEACHER_DTYPES[dtype].itemsize


def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


class TeacherLogits:
    """A scratch file of `batches` blocks of logits [batch, seq, vocab], in step order."""

    def __init__(self, file: io.FileIO, path: Path, shape: tuple[int, int, int],
                 dtype: torch.dtype) -> None:
        self._file, self.path, self.shape, self.dtype = file, path, shape, dtype
        self._written = 0

    @property
    def batch_bytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()

    @property
    def nbytes(self) -> int:
        return self._written * self.batch_bytes

    def append(self, logits: torch.Tensor, what: str) -> None:
        """Store the next batch's logits, refusing values that are or become non-finite."""
        if tuple(logits.shape) != self.shape:
            raise ValueError(f"teacher logits are {list(logits.shape)}, expected "
                             f"{list(self.shape)}")
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteLoss(f"the fine-tune's logits on {what} are NaN or Inf: its "
                                "weights overflow in this dtype; compute in float32 or check "
                                "the fine-tune")
        stored = logits.to(self.dtype)
        if not bool(torch.isfinite(stored).all()):
            raise NonFiniteLoss(f"the fine-tune's logits on {what} reach "
                                f"{float(logits.abs().max()):.3g}, beyond {self.dtype}; "
                                "store them as float32 (teacher_dtype)")
        self._file.seek(self._written * self.batch_bytes)
        try:
            self._file.write(stored.cpu().contiguous().view(-1).view(torch.uint8).numpy().data)
        except OSError as exc:
            if exc.errno not in DISK_FULL_ERRNOS:
                raise
            raise ScratchDiskFull(f"the fine-tune's logits ({what})", str(self.path.parent),
                                  None, free_bytes(self.path.parent), _ADVICE) from exc
        self._written += 1

    def read(self, batch: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Batch `batch`'s logits in the stored dtype, into `out` (reused) if given."""
        if not 0 <= batch < self._written:
            raise IndexError(f"batch {batch} of {self._written} stored")
        buffer = out if out is not None else torch.empty(self.shape, dtype=self.dtype)
        raw = buffer.view(-1).view(torch.uint8).numpy()
        self._file.seek(batch * self.batch_bytes)
        if self._file.readinto(raw.data) != self.batch_bytes:
            raise OSError(f"{self.path} is shorter than its {self._written} batches")
        return buffer


@contextlib.contextmanager
def teacher_file(directory: Path, shape: tuple[int, int, int], dtype: str, steps: int
                 ) -> Iterator[TeacherLogits]:
    """A new scratch file for `steps` batches in a private directory under `directory`,
    removed on exit; ScratchDiskFull at once if the disk has no room for all of them.

    Beside the output rather than in /tmp, which is often memory (tmpfs): the file can be
    gigabytes and must not cost the memory it exists to save.
    """
    if dtype not in TEACHER_DTYPES:
        raise InvalidParameter(f"teacher logits dtype must be one of "
                               f"{', '.join(TEACHER_DTYPES)}, got {dtype!r}")
    directory.mkdir(parents=True, exist_ok=True)
    needed, free = teacher_file_bytes(steps, shape, dtype), free_bytes(directory)
    if needed > free:
        raise ScratchDiskFull("the fine-tune's logits for every step", str(directory),
                              needed, free, _ADVICE)
    with tempfile.TemporaryDirectory(prefix=".deltahub-distill-", dir=directory) as scratch:
        path = Path(scratch) / _FILE_NAME
        with io.FileIO(path, "w+") as file:
            yield TeacherLogits(file, path, shape, TEACHER_DTYPES[dtype])
