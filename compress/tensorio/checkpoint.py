"""Read a safetensors model (one file or a sharded set) one tensor at a time.

From any `TensorSource`, each tensor read into a buffer rather than mapped: touched mapped
pages count towards resident memory, so reads keep peak memory at the tensors in flight.
See docs/codecs.md, "Reading and writing models".
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath, PurePosixPath
from types import TracebackType
from typing import Any

import torch

from compress.errors import InvalidModel, NonFiniteTensor
from compress.filenames import CONFIG_FILE as CONFIG_FILE
from compress.filenames import MODEL_CARD as MODEL_CARD
from compress.filenames import is_model_file as is_model_file
from compress.tensorio import bnb4bit
from compress.tensorio.header import SafetensorsHeader, TensorEntry, header_from_reader
from compress.tensorio.manifest import (
    Manifest,
    TensorSpec,
    manifest_from_headers,
    parse_weight_map,
)
from compress.tensorio.pickles import PICKLE_SUFFIXES, pickle_refusal, refuse_pickle_name
from compress.tensorio.sources import (
    LocalSource,
    MappableSource,
    ModelInput,
    ReadAheadSource,
    TensorSource,
    as_source,
    read_range,
)

INDEX_SUFFIX = ".safetensors.index.json"


class Checkpoint:
    """A safetensors model: its manifest, config, metadata and tensors, read from a source."""

    def __init__(self, source: TensorSource) -> None:
        self.source = source
        self.filenames = _weight_files(source)
        self.headers: dict[str, SafetensorsHeader] = {
            name: _read_header(source, name) for name in self.filenames
        }
        weight_map = _read_weight_map(source)
        # What the files hold; `manifest` is the model they stand for (the two differ
        # for a bitsandbytes 4-bit checkpoint, read dequantized: see bnb4bit.py).
        self.stored_manifest: Manifest = manifest_from_headers(self.headers, weight_map)
        self.config: dict[str, Any] | None = _read_config(source)
        self.quantization = bnb4bit.declared_quantization(self.stored_manifest, self.config)
        self.quantized: dict[str, bnb4bit.QuantizedWeight] = {}
        self.manifest: Manifest = self.stored_manifest
        if self.quantization is not None:
            self.quantized = bnb4bit.quantized_weights(
                self.stored_manifest, self.quantization, self._spec_bytes, self.config)
            self.manifest = bnb4bit.logical_manifest(self.stored_manifest, self.quantized)
        # Let go of what validation opened: a Checkpoint only inspected (its manifest, its
        # headers) holds no file open, and tensors reopen theirs on demand.
        source.close()

    @classmethod
    def open(cls, model: ModelInput) -> Checkpoint:
        """Open a path (a directory or one .safetensors file) or any TensorSource."""
        source = as_source(model)
        try:
            return cls(source)
        except BaseException:
            source.close()
            raise

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.source.close()

    @property
    def path(self) -> Path:
        """Where a model on local disk is; other sources have no path."""
        if isinstance(self.source, LocalSource):
            return self.source.path
        raise AttributeError(f"{self.source.name} is not on local disk; read it through "
                             "`Checkpoint.source`")

    @property
    def files(self) -> list[PurePath]:
        """The weight files: their paths on local disk, their bare names elsewhere."""
        root = self.source.root if isinstance(self.source, LocalSource) else PurePosixPath()
        return [root / name for name in self.filenames]

    @property
    def _handles(self) -> dict[str, io.FileIO]:
        # What tests/compress/tensorio/test_checkpoint.py looks at; new code asks the source.
        return self.source.open_files if isinstance(self.source, LocalSource) else {}

    @property
    def metadata(self) -> dict[str, str]:
        """The `__metadata__` of the first shard (writers put the same on every shard)."""
        first = self.headers[self.filenames[0]]
        return dict(first.metadata)

    @property
    def total_bytes(self) -> int:
        return sum(h.file_size for h in self.headers.values())

    def entry(self, name: str) -> TensorEntry:
        """The header record of a stored tensor (a 4-bit weight's: its packed bytes)."""
        spec = self.stored_manifest[name]
        return self.headers[spec.file].tensors[name]

    def tensor(self, name: str, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """Read one tensor with its stored dtype and shape, into new CPU memory or into
        the first bytes of `buffer` (1-D contiguous uint8, e.g. from a `BufferPool`).

        A 4-bit weight comes dequantized, in new memory, with its logical dtype and shape.
        """
        weight = self.quantized.get(name)
        if weight is not None:
            return bnb4bit.dequantize(weight, self._stored_tensor)
        return self._stored_tensor(name, buffer)

    def _spec_bytes(self, spec: TensorSpec) -> bytes:
        header = self.headers[spec.file]
        entry = header.tensors[spec.name]
        return read_range(self.source, spec.file, header.data_start + entry.start, entry.nbytes)

    def _stored_tensor(self, name: str, buffer: torch.Tensor | None = None) -> torch.Tensor:
        spec = self.stored_manifest[name]
        header = self.headers[spec.file]
        entry = header.tensors[name]
        if buffer is None:
            buffer = torch.empty(entry.nbytes, dtype=torch.uint8)
        elif (buffer.dtype != torch.uint8 or buffer.dim() != 1 or buffer.device.type != "cpu"
              or not buffer.is_contiguous() or buffer.numel() < entry.nbytes):
            raise ValueError(f"reading {name!r} needs a contiguous 1-D uint8 CPU buffer of "
                             f"at least {entry.nbytes} bytes, got {buffer.dtype} "
                             f"{list(buffer.shape)}")
        data = buffer[: entry.nbytes]
        if entry.nbytes:  # the source fills the tensor's own memory: no second copy
            self.source.read_into(spec.file, header.data_start + entry.start,
                                  data.numpy().data)
        return data.view(entry.torch_dtype).reshape(entry.shape)

    @property
    def can_map(self) -> bool:
        """Whether tensors can be mapped rather than read (`mapped_tensor`)."""
        return isinstance(self.source, MappableSource) and self.source.can_map

    def mapped_tensor(self, name: str) -> torch.Tensor | None:
        """Tensor `name` mapped from its file rather than read (`MappableSource`), or None
        where the source cannot map it. Only for tensors read once, front to back: its
        pages come from the page cache as they are touched, and count towards resident
        memory until the tensor is let go."""
        if not self.can_map or name in self.quantized:
            return None
        assert isinstance(self.source, MappableSource)
        spec = self.stored_manifest[name]
        header = self.headers[spec.file]
        entry = header.tensors[name]
        view = self.source.mapped(spec.file, header.data_start + entry.start, entry.nbytes)
        if view is None:
            return None
        data = torch.frombuffer(view, dtype=torch.uint8, count=entry.nbytes)
        return data.view(entry.torch_dtype).reshape(entry.shape)

    def will_need(self, name: str) -> None:
        """Hint that tensor `name` will be read soon (see `ReadAheadSource`); a source
        that cannot prefetch ignores it."""
        if isinstance(self.source, ReadAheadSource):
            spec = self.stored_manifest[name]
            header = self.headers[spec.file]
            entry = header.tensors[name]
            self.source.will_need(spec.file, header.data_start + entry.start, entry.nbytes)

    def finite_tensor(self, name: str) -> torch.Tensor:
        """`tensor(name)`, refusing NaN and Inf with the tensor's name."""
        value = self.tensor(name)
        ensure_finite(name, value, self.source.name)
        return value

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.manifest.names:
            yield name, self.tensor(name)


def copy_config(sources: Iterable[ModelInput], out_dir: Path) -> None:
    """Copy the config.json of the first model among `sources` that has one.

    A path that is not a directory (a single .safetensors file, a missing path) has none.
    """
    for model in sources:
        if isinstance(model, str | os.PathLike) and not Path(model).is_dir():
            continue
        source = as_source(model)
        if CONFIG_FILE in source.files():
            (out_dir / CONFIG_FILE).write_bytes(source.read_bytes(CONFIG_FILE))
            return


def ensure_finite(name: str, tensor: torch.Tensor, where: str = "") -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise NonFiniteTensor(name, where)


def _weight_files(source: TensorSource) -> list[str]:
    names = source.files()
    weights = [n for n in names if n.endswith(".safetensors")]
    if not weights:
        pickles = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise pickle_refusal(pickles[0], "a pickle checkpoint and the model has no "
                                 ".safetensors weights")
        raise InvalidModel(f"{source.name} holds no .safetensors files")
    for name in weights:
        refuse_pickle_name(name)  # content sniffing happens with the header, on 8 bytes
    return weights


def _read_header(source: TensorSource, file: str) -> SafetensorsHeader:
    def read(offset: int, length: int) -> bytes:
        return read_range(source, file, offset, length)

    return header_from_reader(read, source.size(file), file)


def _read_weight_map(source: TensorSource) -> dict[str, str] | None:
    indexes = [n for n in source.files() if n.endswith(INDEX_SUFFIX)]
    if not indexes:
        return None
    if len(indexes) > 1:
        raise InvalidModel(f"{source.name} has several shard indexes: {indexes}")
    return parse_weight_map(_read_json(source, indexes[0]), indexes[0])


def _read_config(source: TensorSource) -> dict[str, Any] | None:
    if CONFIG_FILE not in source.files():
        return None
    config = _read_json(source, CONFIG_FILE)
    if not isinstance(config, dict):
        raise InvalidModel(f"{CONFIG_FILE} must hold a JSON object")
    return config


def _read_json(source: TensorSource, file: str) -> Any:
    try:
        return json.loads(source.read_bytes(file).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{file} is not valid JSON: {exc}") from exc
