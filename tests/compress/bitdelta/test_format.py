"""The header-only validator, as the registry calls it and as load_bitdelta calls it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.bitdelta import (
    DELTA_INDEX,
    BitDeltaSummary,
    ScaleMode,
    compress_bitdelta,
    inspect_bitdelta,
    is_delta_file,
    load_bitdelta,
)
from compress.errors import (
    CodecError,
    IncompatibleModels,
    InvalidDelta,
    InvalidSafetensors,
    NonFiniteTensor,
)
from compress.tensorio import Checkpoint, Manifest, SafetensorsHeader, read_header
from tests.compress.conftest import TinyPairFactory

Q = "model.layers.0.self_attn.q_proj"  # [48, 48]: K = 48 leaves 16 padding bits
DOWN = "model.layers.1.mlp.down_proj"  # [48, 120]


def headers_of(delta: Path) -> tuple[dict[str, SafetensorsHeader], dict[str, str] | None]:
    """What the registry has for an uploaded delta: parsed headers and the index's map."""
    headers = {p.name: read_header(p) for p in sorted(delta.glob("*.safetensors"))}
    index = delta / DELTA_INDEX
    weight_map = json.loads(index.read_text())["weight_map"] if index.exists() else None
    return headers, weight_map


def validate_both_ways(delta: Path, base: Manifest) -> BitDeltaSummary:
    """The registry's call (headers only) and the file loader must agree."""
    headers, weight_map = headers_of(delta)
    summary = inspect_bitdelta(headers, weight_map, base)
    assert load_bitdelta(delta, base).summary == summary
    return summary


def expect(error: type[CodecError], match: str, delta: Path, base: Manifest) -> None:
    headers, weight_map = headers_of(delta)
    with pytest.raises(error, match=match):
        inspect_bitdelta(headers, weight_map, base)
    with pytest.raises(error, match=match):
        load_bitdelta(delta, base)


@pytest.fixture(scope="module")
def delta(tiny_base: Path, tiny_finetune: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Path:
    out = tmp_path_factory.mktemp("format") / "delta"
    compress_bitdelta(tiny_base, tiny_finetune, out)
    return out


@pytest.fixture(scope="module")
def base(tiny_base: Path) -> Manifest:
    return Checkpoint.open(tiny_base).manifest


Edit = Callable[[dict[str, torch.Tensor], dict[str, str]], None]


def rewritten(delta: Path, out: Path, edit: Edit) -> Path:
    out.mkdir()
    tensors = load_file(delta / "delta.safetensors")
    with Checkpoint.open(delta) as ckpt:
        metadata = ckpt.metadata
    edit(tensors, metadata)
    save_file(tensors, out / "delta.safetensors", metadata=metadata)
    shutil.copyfile(delta / "config.json", out / "config.json")
    return out


def test_a_good_delta_is_summarised(delta: Path, base: Manifest) -> None:
    summary = validate_both_ways(delta, base)
    assert summary.scale_mode is ScaleMode.ROW
    assert len(summary.compressed) == 14
    assert summary.compressed[DOWN].shape == (48, 120)
    assert summary.compressed[DOWN].dtype == "F32"
    assert "model.norm.weight" in summary.full_tensors
    params = summary.to_params()
    assert params["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj",
                                               "gate_proj", "up_proj", "down_proj"])
    assert params["compressed_count"] == 14
    assert params["scale_mode"] == "row"


def test_a_sharded_delta_is_checked_with_its_index(tiny_base: Path, tiny_finetune: Path,
                                                   base: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "delta"
    compress_bitdelta(tiny_base, tiny_finetune, out, max_shard_bytes=20_000)
    assert len(validate_both_ways(out, base).compressed) == 14
    assert len(list(out.glob("delta-*-of-*.safetensors"))) > 1
    assert all(is_delta_file(p.name) for p in out.iterdir())  # shards, index, config, report
    index = json.loads((out / DELTA_INDEX).read_text())
    index["weight_map"][f"{Q}.weight.bits"] = "delta-00009-of-00009.safetensors"
    headers, _ = headers_of(out)
    with pytest.raises(InvalidDelta, match="index disagrees"):
        inspect_bitdelta(headers, index["weight_map"], base)


@pytest.mark.parametrize("name", [
    "delta.safetensors", "delta-00001-of-00003.safetensors", "delta.safetensors.index.json",
    "config.json", "report.json", "README.md"])
def test_the_files_of_a_delta(name: str) -> None:
    assert is_delta_file(name)


@pytest.mark.parametrize("name", [
    "model.safetensors", "delta-1-of-3.safetensors", "delta.safetensors\n", "delta.bin",
    "adapter_config.json", "adapter_model.safetensors", "training_args.bin", "spectra.png"])
def test_other_files_are_not_part_of_a_delta(name: str) -> None:
    assert not is_delta_file(name)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("format", "peft", "not a BitDelta delta.*format='peft'"),
    ("format_version", "2", "format version '2' is not supported.*reads version 1"),
    ("scale_mode", "column", "scale_mode 'column'"),
    ("compressed_modules", "[not json", "compressed_modules is not valid JSON"),
    ("compressed_modules", "[" * 100_000 + "]" * 100_000,
     "compressed_modules is not valid JSON.*nested 100000 deep"),
    ("compressed_shapes", '{"a": [NaN, 1]}', "compressed_shapes is not valid JSON.*NaN"),
    ("compressed_dtypes", json.dumps({Q: "F16"}), "exactly the modules"),
])
def test_bad_metadata_is_refused(key: str, value: str, match: str, delta: Path,
                                 base: Manifest, tmp_path: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        metadata[key] = value

    expect(InvalidDelta, match, rewritten(delta, tmp_path / "bad", edit), base)


def test_missing_metadata_keys_are_listed(delta: Path, base: Manifest, tmp_path: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        del metadata["compressed_shapes"], metadata["base_manifest_digest"]

    expect(InvalidDelta, "lacks base_manifest_digest, compressed_shapes",
           rewritten(delta, tmp_path / "bad", edit), base)


def test_missing_scale_and_misshapen_bits_are_each_named(delta: Path, base: Manifest,
                                                         tmp_path: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        del tensors[f"{Q}.weight.scale"]
        tensors[f"{DOWN}.weight.bits"] = tensors[f"{DOWN}.weight.bits"].t().contiguous()

    bad = rewritten(delta, tmp_path / "bad", edit)
    expect(InvalidDelta, rf"missing '{Q}.weight.scale' \(F32 \[48\]\)", bad, base)
    expect(InvalidDelta, rf"'{DOWN}.weight.bits' is I32 \[48, 4\], expected I32 \[4, 48\]",
           bad, base)


def test_bits_of_the_wrong_dtype_and_orphans_are_refused(delta: Path, base: Manifest,
                                                         tmp_path: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        tensors[f"{Q}.weight.bits"] = tensors[f"{Q}.weight.bits"].to(torch.int64)
        tensors["model.layers.7.mlp.up_proj.weight.scale"] = torch.ones(3)

    bad = rewritten(delta, tmp_path / "bad", edit)
    expect(InvalidDelta, rf"'{Q}.weight.bits' is I64", bad, base)
    expect(InvalidDelta, "'model.layers.7.mlp.up_proj.weight.scale' belongs to no module", bad,
           base)


def test_a_delta_for_another_base_is_refused(delta: Path, tiny_pair: TinyPairFactory) -> None:
    # Same names and shapes, other dtypes: a different base.
    fp16_base = Checkpoint.open(tiny_pair(torch.float16).base).manifest
    expect(InvalidDelta, "made against a base with manifest digest", delta, fp16_base)


def test_tensors_that_do_not_fit_the_base_are_named(delta: Path, base: Manifest,
                                                    tmp_path: Path) -> None:
    def edit(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        tensors["model.extra.weight"] = torch.zeros(2)
        tensors["model.norm.weight"] = torch.zeros(47)

    bad = rewritten(delta, tmp_path / "bad", edit)
    headers, _ = headers_of(bad)
    with pytest.raises(IncompatibleModels) as caught:
        inspect_bitdelta(headers, None, base)
    assert caught.value.mismatches == [
        "tensor 'model.extra.weight' is not in the base",
        "tensor 'model.norm.weight' has shape [47], base has [48]",
    ]


def test_data_checks_padding_bits_and_finite_scales(delta: Path, base: Manifest,
                                                    tmp_path: Path) -> None:
    def set_padding(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        tensors[f"{Q}.weight.bits"][-1, 0] |= 1 << 20  # K = 48: bits 16-31 of word 1 are padding

    with pytest.raises(InvalidDelta, match="padding bits set past K=48"):
        load_bitdelta(rewritten(delta, tmp_path / "padding", set_padding), base)

    def nan_scale(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        tensors[f"{Q}.weight.scale"][3] = float("nan")

    with pytest.raises(NonFiniteTensor, match=f"{Q}.weight.scale"):
        load_bitdelta(rewritten(delta, tmp_path / "nan", nan_scale), base)


def test_a_truncated_delta_file_is_refused(delta: Path, base: Manifest, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(delta, bad)
    data = (bad / "delta.safetensors").read_bytes()
    (bad / "delta.safetensors").write_bytes(data[:-100])
    with pytest.raises(InvalidSafetensors, match="truncated"):
        load_bitdelta(bad, base)
