"""Local files are mapped for the BitDelta encoder: the same bytes as a read, at any
offset; the mapping (and its file) let go with the tensor; read-ahead advice in pieces
that cover the whole range; sources that cannot map say so."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

import compress.tensorio.sources as sources
from compress.bitdelta import compress_bitdelta
from compress.tensorio import Checkpoint, LocalSource, MappableSource, advise_will_need
from tests.compress.tensorio.helpers import MemorySource


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="Linux only")


def test_a_mapped_tensor_is_the_tensor_read(tiny_finetune: Path) -> None:
    with Checkpoint.open(tiny_finetune) as ckpt:
        assert ckpt.can_map
        for name in ckpt.manifest.names:
            mapped = ckpt.mapped_tensor(name)
            assert mapped is not None
            read = ckpt.tensor(name)
            assert mapped.dtype == read.dtype
            assert mapped.shape == read.shape
            assert torch.equal(mapped.reshape(-1).view(torch.uint8),
                               read.reshape(-1).view(torch.uint8))


def test_any_range_maps_to_the_files_bytes(tiny_finetune: Path) -> None:
    source = LocalSource(tiny_finetune)
    assert isinstance(source, MappableSource)
    data = (tiny_finetune / "model.safetensors").read_bytes()
    for offset, length in [(0, 1), (1, 4095), (4095, 2), (4096, 4096), (12345, 70001),
                           (len(data) - 3, 3)]:
        view = source.mapped("model.safetensors", offset, length)
        assert view is not None
        assert bytes(view) == data[offset:offset + length]
        del view
    assert source.mapped("model.safetensors", 10, 0) is None  # nothing to map
    source.close()


def test_a_mapping_is_let_go_with_its_tensor(tiny_finetune: Path) -> None:
    with Checkpoint.open(tiny_finetune) as ckpt:
        name = max(ckpt.manifest.names, key=lambda n: ckpt.entry(n).nbytes)
        ckpt.tensor(name)  # opens the file, held until close
        before = open_fds()
        mapped = ckpt.mapped_tensor(name)
        assert open_fds() == before + 1  # the mapping holds its own descriptor
        del mapped
        gc.collect()
        assert open_fds() == before


def test_compression_leaves_no_mapping_open(tiny_base: Path, tiny_finetune: Path,
                                            tmp_path: Path) -> None:
    compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "warm", workers=2)  # imports
    gc.collect()
    before = open_fds()
    compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "out", workers=2)
    gc.collect()
    assert open_fds() == before


def test_a_source_in_memory_is_read_not_mapped(tiny_finetune: Path) -> None:
    with Checkpoint.open(MemorySource.of(tiny_finetune)) as ckpt:
        assert not ckpt.can_map
        assert ckpt.mapped_tensor(ckpt.manifest.names[0]) is None


def test_read_ahead_advice_covers_the_range_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux reads one readahead window per advice: a long range is advised in pieces
    that together cover exactly it."""
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, offset, length, advice: calls.append((offset, length, advice)),
                        raising=False)
    piece = sources._ADVICE_BYTES
    advise_will_need(7, 100, 2 * piece + 5)
    assert [(o, n) for o, n, _ in calls] == [(100, piece), (100 + piece, piece),
                                            (100 + 2 * piece, 5)]
    assert {a for _, _, a in calls} == {os.POSIX_FADV_WILLNEED}
    calls.clear()
    advise_will_need(7, 100, 0)
    assert calls == []
