"""BitDelta and LoRA against a bitsandbytes 4-bit base: the delta is taken against the
dequantized weights, so base + delta lands near the fine-tune."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.bitdelta import compress_bitdelta, merge_bitdelta
from compress.lora import extract_lora
from compress.tensorio import Checkpoint
from tests.compress.conftest import TinyPairFactory
from tests.models import make_bnb4bit

pytest.importorskip("bitsandbytes")


def _distance(a: Checkpoint, b: Checkpoint, name: str) -> float:
    return float((a.tensor(name).float() - b.tensor(name).float()).norm())


@pytest.mark.parametrize(("quant_type", "double"), [("nf4", True), ("fp4", False)])
def test_bitdelta_against_a_4bit_base_runs_end_to_end(
        tiny_pair: TinyPairFactory, tmp_path: Path, quant_type: str, double: bool) -> None:
    pair = tiny_pair(torch.float16)
    q4 = make_bnb4bit(pair.base, tmp_path / "q4", quant_type, double)
    report = compress_bitdelta(q4, pair.finetune, tmp_path / "delta")
    assert report.to_dict()["compressed_count"] == 14  # 7 Linear weights × 2 layers
    merge_bitdelta(q4, tmp_path / "delta", tmp_path / "merged")
    name = "model.layers.0.self_attn.q_proj.weight"
    with (Checkpoint.open(q4) as base, Checkpoint.open(pair.finetune) as ft,
          Checkpoint.open(tmp_path / "merged") as merged):
        assert merged.quantization is None  # the merge is a full-precision model
        assert merged.manifest.digest() == ft.manifest.digest()
        # Against the dequantized weights: the 1-bit delta carries the fine-tune's
        # change and part of the base's quantization error with it.
        assert _distance(merged, ft, name) < _distance(base, ft, name)


def test_lora_against_a_4bit_base(tiny_pair: TinyPairFactory, tmp_path: Path) -> None:
    pair = tiny_pair(torch.float16)
    q4 = make_bnb4bit(pair.base, tmp_path / "q4")
    extract_lora(q4, pair.finetune, tmp_path / "lora", rank=4)
    with Checkpoint.open(tmp_path / "lora") as lora:
        a = lora.manifest["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
        assert a.shape == (4, 48)
