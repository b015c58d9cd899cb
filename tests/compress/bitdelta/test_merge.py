"""Merging a BitDelta delta back: transformers loads the result and it is near the fine-tune."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.bitdelta import (
    BitDeltaReport,
    apply_bitdelta,
    compress_bitdelta,
    load_bitdelta,
    merge_bitdelta,
)
from compress.errors import (
    IncompatibleModels,
    InvalidDelta,
    InvalidSafetensors,
    NonFiniteTensor,
)
from compress.tensorio import Checkpoint
from tests.compress.bitdelta.helpers import tensors_of
from tests.compress.conftest import TinyPairFactory
from tests.compress.helpers import nothing_written


def logits(model_dir: Path) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir)  # in eval mode
    ids = torch.arange(64).reshape(2, 32) % 96
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids).logits
    return out.double()


@pytest.fixture(scope="module")
def merged(tiny_base: Path, tiny_finetune: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, tuple[Path, Path, BitDeltaReport]]:
    """For each scale mode: the delta, the merged model, and the compression report."""
    root = tmp_path_factory.mktemp("merge")
    result = {}
    for mode in ("row", "tensor"):
        report = compress_bitdelta(tiny_base, tiny_finetune, root / f"delta-{mode}", scale=mode)
        merge_bitdelta(tiny_base, root / f"delta-{mode}", root / f"merged-{mode}")
        result[mode] = (root / f"delta-{mode}", root / f"merged-{mode}", report)
    return result


def test_merged_model_loads_in_transformers_and_is_near_the_finetune(
        tiny_base: Path, tiny_finetune: Path,
        merged: dict[str, tuple[Path, Path, BitDeltaReport]]) -> None:
    target = logits(tiny_finetune)
    base_gap = float(torch.linalg.vector_norm(logits(tiny_base) - target))
    row_gap = float(torch.linalg.vector_norm(logits(merged["row"][1]) - target))
    tensor_gap = float(torch.linalg.vector_norm(logits(merged["tensor"][1]) - target))
    assert row_gap < tensor_gap < base_gap
    assert row_gap < 0.5 * base_gap


def test_merged_model_has_the_finetune_layout_and_exact_stored_tensors(
        tiny_base: Path, tiny_finetune: Path,
        merged: dict[str, tuple[Path, Path, BitDeltaReport]]) -> None:
    delta_dir, merged_dir, report = merged["row"]
    assert sorted(p.name for p in merged_dir.iterdir()) == ["config.json", "model.safetensors"]
    with Checkpoint.open(merged_dir) as out, Checkpoint.open(tiny_finetune) as ft:
        assert out.manifest.digest() == ft.manifest.digest()
        assert out.metadata == {"format": "pt"}
    base, finetune, out_tensors = (tensors_of(tiny_base), tensors_of(tiny_finetune),
                                   tensors_of(merged_dir))
    delta = load_bitdelta(delta_dir)
    for name, tensor in out_tensors.items():
        if name in delta.weights:
            expected = base[name].float() + delta.weights[name].delta()
            assert torch.equal(tensor, expected)
            assert not torch.equal(tensor, finetune[name])  # 1 bit is lossy
        else:
            assert torch.equal(tensor, finetune[name])
    # The report's error is the error of these merged weights (float32: no rounding here).
    for entry in report.compressed:
        error = torch.linalg.vector_norm(out_tensors[entry.name].double()
                                         - finetune[entry.name].double())
        relative = float(error / torch.linalg.vector_norm(finetune[entry.name].double()))
        assert relative == pytest.approx(entry.weight_rel_error, rel=1e-4)


def test_apply_in_memory_equals_the_merged_files(
        tiny_base: Path, merged: dict[str, tuple[Path, Path, BitDeltaReport]]) -> None:
    delta_dir, merged_dir, _ = merged["row"]
    state = apply_bitdelta(load_file(tiny_base / "model.safetensors"), load_bitdelta(delta_dir))
    on_disk = tensors_of(merged_dir)
    assert state.keys() == on_disk.keys()
    assert all(torch.equal(state[n], on_disk[n]) for n in on_disk)


def test_apply_checks_names_and_shapes(tiny_base: Path,
                                       merged: dict[str, tuple[Path, Path, BitDeltaReport]]
                                       ) -> None:
    state = load_file(tiny_base / "model.safetensors")
    del state["model.layers.0.self_attn.q_proj.weight"]
    state["model.norm.weight"] = torch.ones(50)
    with pytest.raises(IncompatibleModels) as caught:
        apply_bitdelta(state, load_bitdelta(merged["row"][0]))
    assert len(caught.value.mismatches) == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_merge_writes_the_finetune_dtypes(
        dtype: torch.dtype, tiny_pair: TinyPairFactory, tmp_path: Path) -> None:
    pair = tiny_pair(dtype)
    compress_bitdelta(pair.base, pair.finetune, tmp_path / "delta")
    merge_bitdelta(pair.base, tmp_path / "delta", tmp_path / "merged")
    base, out = tensors_of(pair.base), tensors_of(tmp_path / "merged")
    delta = load_bitdelta(tmp_path / "delta")
    for name, weight in delta.weights.items():
        assert out[name].dtype == dtype
        assert torch.equal(out[name], (base[name].float() + weight.delta()).to(dtype))


def test_sharded_merge_output_loads(tiny_base: Path, tiny_finetune: Path,
                                    merged: dict[str, tuple[Path, Path, BitDeltaReport]],
                                    tmp_path: Path) -> None:
    out = tmp_path / "merged"
    report = merge_bitdelta(tiny_base, merged["row"][0], out, max_shard_bytes=60_000)
    assert len(report.files) > 2
    assert (out / "model.safetensors.index.json").is_file()
    torch.testing.assert_close(logits(out), logits(merged["row"][1]), rtol=0, atol=0)
    assert report.reconstructed == 14
    assert report.copied == 0


def test_merge_against_another_base_writes_nothing(
        tiny_pair: TinyPairFactory, merged: dict[str, tuple[Path, Path, BitDeltaReport]],
        tmp_path: Path) -> None:
    out = tmp_path / "merged"
    with pytest.raises(InvalidDelta, match="made against a base"):
        merge_bitdelta(tiny_pair(torch.float16).base, merged["row"][0], out)
    assert nothing_written(out)


def test_merge_of_a_corrupt_delta_writes_nothing(
        tiny_base: Path, merged: dict[str, tuple[Path, Path, BitDeltaReport]],
        tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(merged["row"][0], bad)
    data = bytearray((bad / "delta.safetensors").read_bytes())
    data[10:14] = b"\xff\xff\xff\xff"  # inside the JSON header
    (bad / "delta.safetensors").write_bytes(bytes(data))
    out = tmp_path / "merged"
    with pytest.raises(InvalidSafetensors):
        merge_bitdelta(tiny_base, bad, out)
    assert nothing_written(out)


def test_a_nan_met_half_way_through_a_merge_writes_nothing(
        tiny_base: Path, merged: dict[str, tuple[Path, Path, BitDeltaReport]],
        tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(merged["row"][0], bad)
    tensors = load_file(bad / "delta.safetensors")
    with Checkpoint.open(bad) as ckpt:
        metadata = ckpt.metadata
    tensors["model.layers.1.mlp.up_proj.weight.scale"][0] = float("inf")
    save_file(tensors, bad / "delta.safetensors", metadata=metadata)
    out = tmp_path / "merged"
    with pytest.raises(NonFiniteTensor, match=r"model\.layers\.1\.mlp\.up_proj\.weight\.scale"):
        merge_bitdelta(tiny_base, bad, out)
    assert nothing_written(out)
