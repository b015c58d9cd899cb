"""Write safetensors files tensor by tensor, and publish output directories atomically.

`safetensors.torch.save_file` needs every tensor in memory at once. Our codecs know the
name, dtype and shape of every output tensor before computing any of them, so the header
can be written first and each tensor appended as soon as it exists: memory stays at one
tensor however large the model.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from compress.errors import InvalidParameter, OutputExists
from compress.tensorio.header import DTYPE_BYTES, SAFETENSORS_DTYPES

DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # the size transformers' save_pretrained uses


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: str  # safetensors dtype name, e.g. "F16", "I32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def plan_for(name: str, tensor_dtype: torch.dtype, shape: Sequence[int]) -> PlannedTensor:
    return PlannedTensor(name, SAFETENSORS_DTYPES[tensor_dtype], tuple(shape))


class SafetensorsWriter:
    """One safetensors file whose tensors are appended in the planned order."""

    def __init__(self, path: Path, plan: Sequence[PlannedTensor],
                 metadata: Mapping[str, str] | None = None) -> None:
        self.path = path
        self._plan = list(plan)
        _refuse_duplicates(self._plan)
        self._next = 0
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for item in self._plan:
            header[item.name] = {"dtype": item.dtype, "shape": list(item.shape),
                                 "data_offsets": [offset, offset + item.nbytes]}
            offset += item.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        # Pad with spaces so the data section starts 8-byte aligned, as safetensors does.
        encoded += b" " * (-len(encoded) % 8)
        self._file: BinaryIO = path.open("wb")
        self._file.write(len(encoded).to_bytes(8, "little"))
        self._file.write(encoded)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._plan):
            raise ValueError(f"{self.path.name}: {name!r} was not planned for this file")
        item = self._plan[self._next]
        got_dtype = SAFETENSORS_DTYPES.get(tensor.dtype)
        if name != item.name or got_dtype != item.dtype or tuple(tensor.shape) != item.shape:
            raise ValueError(
                f"{self.path.name}: expected {item.name!r} {item.dtype} {list(item.shape)}, "
                f"got {name!r} {got_dtype} {list(tensor.shape)}"
            )
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._file.write(data.numpy().data)
        self._next += 1

    def close(self) -> None:
        missing = [p.name for p in self._plan[self._next:]]
        self._file.close()
        if missing:
            raise ValueError(f"{self.path.name}: closed before writing {missing[:5]}")

    def abort(self) -> None:
        """Close the file without completing it; the caller discards it."""
        self._file.close()


class ShardedWriter:
    """Write a planned set of tensors as one file, or as shards plus an index past a size."""

    def __init__(self, out_dir: Path, plan: Sequence[PlannedTensor],
                 metadata: Mapping[str, str] | None = None, stem: str = "model",
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
        if max_shard_bytes <= 0:
            raise InvalidParameter("max_shard_bytes must be positive")
        self._metadata = dict(metadata or {})
        _refuse_duplicates(plan)
        groups = _split(plan, max_shard_bytes)
        if len(groups) == 1:
            names = [f"{stem}.safetensors"]
        else:
            names = [f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors"
                     for i in range(1, len(groups) + 1)]
        self.index_name = f"{stem}.safetensors.index.json" if len(groups) > 1 else None
        self._out_dir = out_dir
        self._groups = list(zip(names, groups, strict=True))
        self._file_of = {item.name: fname for fname, group in self._groups for item in group}
        self._total = sum(item.nbytes for item in plan)
        self._current: SafetensorsWriter | None = None
        self._group = -1
        self.files: list[Path] = [out_dir / n for n in names]

    def write(self, name: str, tensor: torch.Tensor) -> None:
        target = self._file_of.get(name)
        if target is None:
            raise ValueError(f"{name!r} was not planned")
        while self._current is None or self._current.path.name != target:
            self._open_next()
        self._current.write(name, tensor)

    def close(self) -> list[Path]:
        while self._group < len(self._groups) - 1:
            self._open_next()  # raises for a shard that was never written
        if self._current is not None:
            self._current.close()
        if self.index_name is not None:
            index = {"metadata": {"total_size": self._total, **self._metadata},
                     "weight_map": dict(sorted(self._file_of.items()))}
            (self._out_dir / self.index_name).write_text(json.dumps(index, indent=2) + "\n")
            return [*self.files, self._out_dir / self.index_name]
        return list(self.files)

    def abort(self) -> None:
        """Close the open shard after a failure, leaving it incomplete.

        For a writer inside `atomic_output_dir`, whose scratch directory is removed on
        error: without this the open file would only be closed by the garbage collector.
        """
        if self._current is not None:
            self._current.abort()
            self._current = None

    def _open_next(self) -> None:
        if self._current is not None:
            self._current.close()
        self._group += 1
        if self._group >= len(self._groups):
            raise ValueError("tensors were written out of the planned order")
        fname, group = self._groups[self._group]
        self._current = SafetensorsWriter(self._out_dir / fname, group, self._metadata)


def _refuse_duplicates(plan: Sequence[PlannedTensor]) -> None:
    names = [item.name for item in plan]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"tensors planned twice: {twice[:5]}")


def _split(plan: Sequence[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    groups: list[list[PlannedTensor]] = [[]]
    size = 0
    for item in plan:
        if groups[-1] and size + item.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item.nbytes
    return groups


@contextlib.contextmanager
def atomic_output_dir(out: Path) -> Iterator[Path]:
    """Yield a scratch directory that becomes `out` only if the block succeeds.

    On any error the scratch directory is removed, so a failed run writes nothing.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExists(f"{out} already exists and is not empty; choose a new output path")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield scratch
        for child in scratch.iterdir():
            fsync_path(child)
        # mkdtemp makes the directory private (0700); publish it readable like the files
        # in it. (Not from the umask: reading it means setting it, process-wide.)
        scratch.chmod(0o755)
        scratch.replace(out)  # replaces an empty `out`; atomic on one filesystem
        fsync_path(out.parent)  # make the rename itself durable
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (making a rename or create in it durable), by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some file systems cannot fsync a directory
            raise
    finally:
        os.close(fd)
