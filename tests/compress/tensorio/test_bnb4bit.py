"""bitsandbytes 4-bit checkpoints: the layout transformers saves, read through their
logical manifest, validated from headers and quant_state JSON, dequantized bit for bit
as bitsandbytes does."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.errors import InvalidModel
from compress.tensorio import Checkpoint
from compress.tensorio.bnb4bit import QuantizedWeight, dequantize, parse_quant_state
from tests.compress.conftest import TinyPairFactory
from tests.models import make_bnb4bit

bnb = pytest.importorskip("bitsandbytes.functional")

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _quantized(weight: torch.Tensor, quant_type: str, double: bool, blocksize: int
               ) -> tuple[QuantizedWeight, dict[str, torch.Tensor], torch.Tensor, object]:
    packed, state = bnb.quantize_4bit(weight, blocksize=blocksize, quant_type=quant_type,
                                      compress_statistics=double)
    tensors = {"w": packed} | {f"w.{k}": v for k, v in state.as_dict(packed=True).items()}
    state_name = next(k for k in tensors if ".quant_state." in k)
    parsed = parse_quant_state(bytes(tensors[state_name].numpy()), state_name)
    return QuantizedWeight("w", state_name, parsed), tensors, packed, state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_dequantize_is_bit_identical_to_bitsandbytes(quant_type: str, double: bool,
                                                     dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    for shape, blocksize in [((64, 128), 64), ((5, 256), 128), ((40, 640), 64), ((3, 64), 64)]:
        weight = (torch.randn(shape) * 0.05).to(dtype)
        spec, tensors, packed, state = _quantized(weight, quant_type, double, blocksize)
        ours = dequantize(spec, tensors.__getitem__)
        theirs = bnb.dequantize_4bit(packed, state)
        assert ours.dtype == theirs.dtype == dtype
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs), (shape, blocksize)


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_blocks_across_rows_match_bitsandbytes_reference_op(quant_type: str,
                                                            double: bool) -> None:
    """Where a block spans rows (the tiny Llama's 48 columns, blocksize 64), bitsandbytes
    0.50's native CPU kernel indexes blocks per row and gives other values; its reference
    op (what the CUDA kernel computes) indexes the flat tensor, as the quantizer does, and
    ours is bit-identical to it."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code

    reference = getattr(_dequantize_4bit_compute, "__wrapped__", _dequantize_4bit_compute)
    torch.manual_seed(1)
    weight = (torch.randn(120, 48) * 0.05).half()
    spec, tensors, packed, state = _quantized(weight, quant_type, double, 64)
    absmax = state.absmax  # type: ignore[attr-defined]
    if double:
        absmax = bnb.dequantize_blockwise(absmax, state.state2)  # type: ignore[attr-defined]
        absmax += state.offset  # type: ignore[attr-defined]
    theirs = reference(packed.reshape(-1), absmax.float(), _get_4bit_code(quant_type, "cpu"),
                       64, (120, 48), torch.float16)
    ours = dequantize(spec, tensors.__getitem__)
    assert torch.equal(ours, theirs)
    assert (ours.float() - weight.float()).abs().max() < 0.05  # it is the weight, too


@pytest.mark.parametrize(("quant_type", "double"),
                         [("nf4", True), ("nf4", False), ("fp4", True), ("fp4", False)])
def test_checkpoint_reads_logical_manifest_and_dequantized_weights(
        tiny_pair: TinyPairFactory, tmp_path: Path, quant_type: str, double: bool) -> None:
    base = tiny_pair(torch.float16).base
    quantized = make_bnb4bit(base, tmp_path / "q", quant_type, double)
    with Checkpoint.open(base) as full, Checkpoint.open(quantized) as ckpt:
        assert ckpt.manifest.to_dict() == full.manifest.to_dict()  # same names, shapes, dtypes
        assert ckpt.manifest.digest() == full.manifest.digest()
        assert len(ckpt.stored_manifest) > len(ckpt.manifest)
        assert ckpt.quantization is not None
        assert (ckpt.quantization.quant_type, ckpt.quantization.double_quant) == (quant_type,
                                                                                  double)
        name = "model.layers.1.mlp.down_proj.weight"
        weight = ckpt.tensor(name)
        assert weight.dtype == torch.float16
        assert weight.shape == (48, 120)
        assert ckpt.mapped_tensor(name) is None  # packed bytes are never handed out as-is
        error = (weight.float() - full.tensor(name).float()).abs().max()
        assert 0 < error < 0.1
        norm = "model.norm.weight"
        assert torch.equal(ckpt.tensor(norm), full.tensor(norm))


def test_transformers_saves_the_layout_the_helper_makes(tiny_pair: TinyPairFactory,
                                                        tmp_path: Path) -> None:
    """The helper's checkpoint has the very tensor names, dtypes and shapes that
    transformers' `save_pretrained` writes for a bitsandbytes 4-bit model on the CPU."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    base = tiny_pair(torch.float16).base
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float16)
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=config,
                                                 device_map="cpu", dtype=torch.float16)
    model.save_pretrained(tmp_path / "hf")
    ours = make_bnb4bit(base, tmp_path / "ours", "nf4", True)
    with Checkpoint.open(tmp_path / "hf") as hf, Checkpoint.open(ours) as helper:
        layout = [[s.name, s.dtype, list(s.shape)] for s in hf.stored_manifest]
        assert layout == [[s.name, s.dtype, list(s.shape)] for s in helper.stored_manifest]
        assert hf.manifest.digest() == helper.manifest.digest()
        assert hf.quantization == helper.quantization


Edit = Callable[[dict[str, torch.Tensor], dict[str, object]], None]
Q = "model.layers.0.self_attn.q_proj.weight"


def _state(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)


MALFORMED: dict[str, tuple[Edit, str]] = {
    "absmax too short": (lambda t, c: t.update({f"{Q}.absmax": t[f"{Q}.absmax"][:-1]}),
                         "absmax"),
    "quant_state not JSON": (lambda t, c: t.update(
        {f"{Q}.quant_state.bitsandbytes__nf4": _state("{not json")}), "not valid JSON"),
    "quant_state without shape": (lambda t, c: t.update(
        {f"{Q}.quant_state.bitsandbytes__nf4": _state('{"quant_type": "nf4", '
                                                      '"blocksize": 64, "dtype": "float16", '
                                                      '"nested_blocksize": 256, '
                                                      '"nested_offset": 0.1}')}), "'shape'"),
    "logical shape off the config": (lambda t, c: t.update(
        {f"{Q}.quant_state.bitsandbytes__nf4": _state(json.dumps({
            "quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [24, 96],
            "nested_blocksize": 256, "nested_offset": 0.1}))}), "none of config.json's sizes"),
    "config says fp4": (lambda t, c: c["quantization_config"].update(  # type: ignore[attr-defined]
        {"bnb_4bit_quant_type": "fp4"}), "config.json says fp4"),
    "8-bit": (lambda t, c: c["quantization_config"].update(  # type: ignore[attr-defined]
        {"load_in_4bit": False, "load_in_8bit": True}), "4-bit checkpoints only"),
    "config without quantization_config": (lambda t, c: c.pop("quantization_config"),
                                           "has no quantization_config"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_4bit_checkpoint_is_refused_with_the_reason(
        tiny_pair: TinyPairFactory, tmp_path: Path, case: str) -> None:
    edit, reason = MALFORMED[case]
    good = make_bnb4bit(tiny_pair(torch.float16).base, tmp_path / "good", "nf4", True)
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    tensors = load_file(bad / "model.safetensors")
    config = json.loads((bad / "config.json").read_text())
    edit(tensors, config)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModel, match=reason):
        Checkpoint.open(bad)
