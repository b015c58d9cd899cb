"""Tensor sources: a model read from memory is the model read from disk, errors included.

`MemorySource` is a second, independent implementation of the TensorSource protocol (as
the registry's blob source is): a dictionary of file bytes. Everything a reader or a
codec sees through it must match what it sees through the files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from compress.bitdelta import compress_bitdelta, verify_delta
from compress.errors import CodecError, InvalidModel, NonFiniteTensor
from compress.lora import extract_lora
from compress.tensorio import (
    Checkpoint,
    LocalSource,
    ModelInput,
    ModelPair,
    ReadAheadSource,
    TensorSource,
    copy_config,
    describe_model,
)
from tests.compress.helpers import nothing_written
from tests.compress.tensorio.helpers import MemorySource
from tests.malformed import MALFORMED_CASES, PICKLE_CASES, MalformedCase, nan_safetensors


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("fixture", ["tiny_finetune", "tiny_sharded_finetune"])
def test_memory_and_disk_give_the_same_model(fixture: str,
                                             request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(fixture)
    memory = MemorySource.of(directory)
    with Checkpoint.open(directory) as disk, Checkpoint.open(memory) as held:
        assert held.manifest.to_dict() == disk.manifest.to_dict()
        assert held.manifest.digest() == disk.manifest.digest()
        assert held.config == disk.config is not None
        assert held.metadata == disk.metadata
        assert held.total_bytes == disk.total_bytes
        assert held.filenames == [f.name for f in disk.files]
        for name in disk.manifest.names:
            assert same_bits(held.tensor(name), disk.tensor(name)), name
    assert memory.closed >= 1


def test_each_tensor_is_one_read_of_exactly_its_bytes(tiny_finetune: Path) -> None:
    memory = MemorySource.of(tiny_finetune)
    with Checkpoint.open(memory) as ckpt:
        header_reads = list(memory.reads)
        memory.reads.clear()
        for name in ckpt.manifest.names:
            ckpt.tensor(name)
        header = ckpt.headers["model.safetensors"]
        expected = sorted(("model.safetensors", header.data_start + e.start, e.nbytes)
                          for e in header.tensors.values() if e.nbytes)
    # The header: its 8-byte length prefix and the header's first byte (which must be
    # '{'), then exactly the JSON it announces.
    assert header_reads == [("model.safetensors", 0, 9),
                            ("model.safetensors", 8, header.header_len)]
    assert sorted(memory.reads) == expected


def opened_error(model: Path | TensorSource) -> CodecError:
    with pytest.raises(CodecError) as info:
        Checkpoint.open(model)
    return info.value


@pytest.mark.parametrize("case", MALFORMED_CASES + PICKLE_CASES, ids=lambda c: c.id)
def test_bad_bytes_from_a_source_are_refused_as_from_a_file(case: MalformedCase,
                                                            tmp_path: Path) -> None:
    (tmp_path / case.filename).write_bytes(case.data)
    from_file = opened_error(tmp_path)
    from_memory = opened_error(MemorySource("served", {case.filename: case.data}))
    assert type(from_memory) is type(from_file) is case.error
    assert str(from_memory) == str(from_file)
    if case in MALFORMED_CASES:
        assert case.message in str(from_memory)


def test_non_finite_values_are_named_with_the_source(tmp_path: Path) -> None:
    source = MemorySource("model 'served'", {"model.safetensors": nan_safetensors()})
    with Checkpoint.open(source) as ckpt, pytest.raises(NonFiniteTensor) as info:
        ckpt.finite_tensor("layers.0.mlp.down_proj.weight")
    assert "in model 'served'" in str(info.value)


def test_model_level_errors_name_the_source(tiny_sharded_finetune: Path) -> None:
    files = MemorySource.of(tiny_sharded_finetune)._files
    index = json.loads(files["model.safetensors.index.json"])
    index["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"
    bad_index = {**files, "model.safetensors.index.json": json.dumps(index).encode()}
    ghost = re.escape("'ghost.weight' is in the index but in no shard")
    with pytest.raises(InvalidModel, match=ghost):
        Checkpoint.open(MemorySource("m", bad_index))
    with pytest.raises(InvalidModel, match=re.escape("model 'x' holds no .safetensors files")):
        Checkpoint.open(MemorySource("model 'x'", {"config.json": b"{}"}))
    with pytest.raises(InvalidModel, match=re.escape("config.json must hold a JSON object")):
        Checkpoint.open(MemorySource("m", {**files, "config.json": b"[1]"}))


def test_a_file_that_shrinks_while_read_is_an_error_not_garbage(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(64), "b": torch.ones(64)}, path)
    with Checkpoint.open(path) as ckpt:
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(InvalidModel, match="was the file changed while deltahub read it"):
            ckpt.tensor("b")


def test_local_source_reads_only_its_own_files(tiny_finetune: Path) -> None:
    source = LocalSource(tiny_finetune)
    assert "model.safetensors" in source.files()
    with pytest.raises(InvalidModel, match=re.escape("has no file '../finetune/config.json'")):
        source.read_bytes("../finetune/config.json")
    single = LocalSource(tiny_finetune / "model.safetensors")
    assert single.files() == ["model.safetensors"]  # its directory's config is not its own


def test_path_only_for_local_models_and_names_elsewhere(tiny_finetune: Path) -> None:
    with Checkpoint.open(MemorySource.of(tiny_finetune)) as ckpt:
        assert [str(f) for f in ckpt.files] == ["model.safetensors"]
        with pytest.raises(AttributeError, match="is not on local disk"):
            _ = ckpt.path
    assert describe_model(tiny_finetune) == str(tiny_finetune)
    assert describe_model(MemorySource("model 'x'", {})) == "model 'x'"


def test_copy_config_from_a_source(tiny_finetune: Path, tmp_path: Path) -> None:
    copy_config([tmp_path / "absent", MemorySource("m", {}), MemorySource.of(tiny_finetune)],
                tmp_path)
    assert (tmp_path / "config.json").read_bytes() == (tiny_finetune / "config.json").read_bytes()


def test_model_pair_opens_sources(tiny_base: Path, tiny_finetune: Path) -> None:
    with ModelPair.open(MemorySource.of(tiny_base), tiny_finetune) as pair, Checkpoint.open(
            tiny_base) as base:
        name = pair.names[0]
        assert same_bits(pair.read(name).base, base.tensor(name))


# --- the codecs read sources as they read directories -------------------------------------------


def output_files(out: Path, skip: tuple[str, ...] = ("report.json",)) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name not in skip}


def test_bitdelta_and_its_verification_read_sources_as_directories(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "disk", workers=1)
    base, tuned = MemorySource.of(tiny_base), MemorySource.of(tiny_finetune)
    compress_bitdelta(base, tuned, tmp_path / "memory", workers=1)
    assert output_files(tmp_path / "memory") == output_files(tmp_path / "disk")
    on_disk = verify_delta(tiny_base, tiny_finetune, tmp_path / "disk", "cpu")
    in_memory = verify_delta(base, tuned, tmp_path / "memory", "cpu")
    assert in_memory.layers == on_disk.layers
    assert (in_memory.base, in_memory.finetune) == (base.name, tuned.name)


def test_lora_reads_sources_as_directories(tiny_base: Path, tiny_finetune: Path,
                                           tmp_path: Path) -> None:
    runs: list[tuple[str, ModelInput, ModelInput]] = [
        ("disk", tiny_base, tiny_finetune),
        ("memory", MemorySource.of(tiny_base), MemorySource.of(tiny_finetune))]
    for out, base, tuned in runs:
        extract_lora(base, tuned, tmp_path / out, rank=4, base_model_name_or_path="tiny")
    assert output_files(tmp_path / "memory", ("report.json", "spectra.png")) == output_files(
        tmp_path / "disk", ("report.json", "spectra.png"))


def test_a_failing_source_leaves_no_output(tiny_base: Path, tiny_finetune: Path,
                                           tmp_path: Path) -> None:
    class Failing(MemorySource):
        def read_into(self, file: str, offset: int, buffer: memoryview) -> None:
            if offset > 100_000:
                raise InvalidModel("the store went away")
            super().read_into(file, offset, buffer)

    failing = Failing("failing", MemorySource.of(tiny_finetune)._files)
    with pytest.raises(InvalidModel, match="the store went away"):
        compress_bitdelta(tiny_base, failing, tmp_path / "out", workers=1)
    assert nothing_written(tmp_path / "out")


class HintedSource(MemorySource):
    """A MemorySource that can read ahead: records each `will_need` hint among the reads."""

    def __init__(self, name: str, files: dict[str, bytes]) -> None:
        super().__init__(name, files)
        self.events: list[tuple[str, str, int, int]] = []

    def will_need(self, file: str, offset: int, length: int) -> None:
        self.events.append(("hint", file, offset, length))

    def read_into(self, file: str, offset: int, buffer: memoryview) -> None:
        self.events.append(("read", file, offset, len(buffer)))
        super().read_into(file, offset, buffer)


def test_bitdelta_asks_for_each_tensor_ahead_of_reading_it(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    """Each compressed weight's exact byte range is hinted, in both models, before it is
    read, while an earlier tensor is still being read; the output is unchanged."""
    base = HintedSource("base", MemorySource.of(tiny_base)._files)
    tuned = HintedSource("tuned", MemorySource.of(tiny_finetune)._files)
    assert isinstance(tuned, ReadAheadSource)
    compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "plain", workers=1)
    report = compress_bitdelta(base, tuned, tmp_path / "hinted", workers=1)
    assert output_files(tmp_path / "hinted") == output_files(tmp_path / "plain")
    compressed = [t.name for t in report.tensors if t.kind == "bitdelta"]
    assert len(compressed) > 1
    for source, directory in ((base, tiny_base), (tuned, tiny_finetune)):
        hints = [e[1:] for e in source.events if e[0] == "hint"]
        with Checkpoint.open(directory) as ckpt:
            header = ckpt.headers["model.safetensors"]
            ranges = {("model.safetensors", header.data_start + header.tensors[n].start,
                       header.tensors[n].nbytes) for n in compressed[1:]}
        assert ranges <= set(hints)  # every weight after the first is asked for ahead
        for hint in hints:
            at = source.events.index(("hint", *hint))
            assert ("read", *hint) in source.events[at:]  # then read, not forgotten


def test_local_source_read_ahead_accepts_any_range_of_its_files(tiny_finetune: Path) -> None:
    source = LocalSource(tiny_finetune)
    assert isinstance(source, ReadAheadSource)
    size = source.size("model.safetensors")
    source.will_need("model.safetensors", 0, size)
    source.will_need("model.safetensors", size - 1, 0)
    with pytest.raises(InvalidModel, match="has no file"):
        source.will_need("../secrets", 0, 1)
    source.close()
    with Checkpoint.open(MemorySource.of(tiny_finetune)) as ckpt:
        ckpt.will_need(ckpt.manifest.names[0])  # a source that cannot read ahead: no-op
