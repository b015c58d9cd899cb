"""Read a safetensors model (one file or a sharded directory) one tensor at a time.

Tensors are read with plain positioned reads into a fresh buffer rather than through
mmap: mapped pages that have been touched count towards resident memory until the file
is closed, so a memory-mapped pass over a 13 GB model looks like a 13 GB process.
With reads, peak memory is the few tensors in flight, whatever the model size.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from compress.errors import InvalidModel, NonFiniteTensor
from compress.tensorio.header import SafetensorsHeader, TensorEntry, read_header
from compress.tensorio.manifest import Manifest, manifest_from_headers, parse_weight_map
from compress.tensorio.pickles import PICKLE_SUFFIXES, pickle_refusal, refuse_pickle_name

INDEX_SUFFIX = ".safetensors.index.json"
CONFIG_FILE = "config.json"  # what `transformers` needs to load the weights
MODEL_CARD = "README.md"  # a model's (or an adapter's) card, as the Hugging Face Hub shows it
# The files of a model: safetensors weights, JSON (config.json, the shard index, tokenizer
# files), a sentencepiece tokenizer.model, and text (merges.txt, README.md).
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".md")


def is_model_file(name: str) -> bool:
    """Whether `name` is one of a model's files (not trainer state, a pickle or a dotfile)."""
    return not name.startswith(".") and name.endswith(MODEL_FILE_SUFFIXES)


class Checkpoint:
    """A safetensors model on local disk: its manifest, config, metadata and tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = _weight_files(path)
        self.headers: dict[str, SafetensorsHeader] = {
            f.name: read_header(f) for f in self.files
        }
        weight_map = _read_weight_map(path)
        self.manifest: Manifest = manifest_from_headers(self.headers, weight_map)
        self.config: dict[str, Any] | None = _read_config(path)
        self._dir = path if path.is_dir() else path.parent
        self._handles: dict[str, io.FileIO] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Checkpoint:
        return cls(Path(path))

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    @property
    def metadata(self) -> dict[str, str]:
        """The `__metadata__` of the first shard (writers put the same on every shard)."""
        first = self.headers[self.files[0].name]
        return dict(first.metadata)

    @property
    def total_bytes(self) -> int:
        return sum(h.file_size for h in self.headers.values())

    def entry(self, name: str) -> TensorEntry:
        spec = self.manifest[name]
        return self.headers[spec.file].tensors[name]

    def tensor(self, name: str) -> torch.Tensor:
        """Read one tensor from disk into new CPU memory, with its stored dtype and shape."""
        spec = self.manifest[name]
        header = self.headers[spec.file]
        entry = header.tensors[name]
        buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
        if entry.nbytes:
            handle = self._handle(spec.file)
            handle.seek(header.data_start + entry.start)
            view = buffer.numpy().data
            filled = 0
            while filled < entry.nbytes:  # one read(2) returns at most ~2 GB on Linux
                got = handle.readinto(view[filled:])
                if not got:
                    raise InvalidModel(f"{spec.file}: short read of tensor {name!r}; "
                                       "was the file changed while deltahub read it?")
                filled += got
        return buffer.view(entry.torch_dtype).reshape(entry.shape)

    def finite_tensor(self, name: str) -> torch.Tensor:
        """`tensor(name)`, refusing NaN and Inf with the tensor's name."""
        value = self.tensor(name)
        ensure_finite(name, value, self.path.name)
        return value

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.manifest.names:
            yield name, self.tensor(name)

    def _handle(self, filename: str) -> io.FileIO:
        handle = self._handles.get(filename)
        if handle is None:
            handle = io.FileIO(self._dir / filename, "rb")
            self._handles[filename] = handle
        return handle


def copy_config(sources: Iterable[Path], out_dir: Path) -> None:
    """Copy the config.json of the first model directory among `sources` that has one."""
    for source in sources:
        config = source / CONFIG_FILE
        if source.is_dir() and config.is_file():
            shutil.copyfile(config, out_dir / CONFIG_FILE)
            return


def ensure_finite(name: str, tensor: torch.Tensor, where: str = "") -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise NonFiniteTensor(name, where)


def _weight_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InvalidModel(f"{path} does not exist")
    if path.is_file():
        return [_refuse_pickle_file(path)]
    files = sorted(p for p in path.iterdir() if p.suffix == ".safetensors" and p.is_file())
    if not files:
        pickles = sorted(p.name for p in path.iterdir() if p.name.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            raise pickle_refusal(pickles[0], "a pickle checkpoint and the directory has no "
                                 ".safetensors weights")
        raise InvalidModel(f"{path} holds no .safetensors files")
    return [_refuse_pickle_file(f) for f in files]


def _refuse_pickle_file(path: Path) -> Path:
    refuse_pickle_name(path.name)  # content sniffing happens in read_header, on 8 bytes
    return path


def _read_weight_map(path: Path) -> dict[str, str] | None:
    if not path.is_dir():
        return None
    indexes = sorted(path.glob("*" + INDEX_SUFFIX))
    if not indexes:
        return None
    if len(indexes) > 1:
        raise InvalidModel(f"{path} has several shard indexes: {[p.name for p in indexes]}")
    return parse_weight_map(_read_json(indexes[0]), indexes[0].name)


def _read_config(path: Path) -> dict[str, Any] | None:
    config_path = (path if path.is_dir() else path.parent) / CONFIG_FILE
    if not path.is_dir() or not config_path.exists():
        return None
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise InvalidModel(f"{config_path.name} must hold a JSON object")
    return config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{path.name} is not valid JSON: {exc}") from exc
