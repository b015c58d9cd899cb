"""verify_delta on the tiny Llama, its fine-tune and real BitDelta deltas of it."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.bitdelta import ScaleMode, VerifyReport, verify_delta
from compress.bitdelta.format import bits_key, scale_key
from compress.bitdelta.verify import layer_activations
from compress.errors import IncompatibleModels, InvalidDelta, InvalidParameter
from compress.tensorio import Checkpoint
from kernels import pack_signs, unpack_signs
from tests.compress.bitdelta.helpers import make_delta, tensors_of, variant
from tests.compress.conftest import TinyPairFactory

DOWN = "model.layers.1.mlp.down_proj"  # [48, 120]: K is not a multiple of 32
SMALLEST = ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"]  # [24, 48]


@pytest.fixture(scope="module")
def deltas(tiny_base: Path, tiny_finetune: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> dict[ScaleMode, Path]:
    root = tmp_path_factory.mktemp("verify")
    return {mode: make_delta(tiny_base, tiny_finetune, root / mode.value, mode)
            for mode in ScaleMode}


@pytest.fixture(scope="module")
def row_report(tiny_base: Path, tiny_finetune: Path, deltas: dict[ScaleMode, Path]
               ) -> VerifyReport:
    return verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW], "cpu")


def rewrite_bits(delta: Path, out: Path, module: str, bits: torch.Tensor) -> Path:
    """A copy of `delta` with new bits for one module (metadata kept)."""
    shutil.copytree(delta, out)
    tensors = load_file(out / "delta.safetensors")
    with Checkpoint.open(out) as ckpt:
        metadata = ckpt.metadata
    tensors[bits_key(module)] = bits
    save_file(tensors, out / "delta.safetensors", metadata=metadata)
    return out


def test_every_kernel_check_agrees_and_errors_are_fractions(row_report: VerifyReport) -> None:
    report = row_report
    assert report.ok
    assert report.kernel_failures == []
    assert len(report.layers) == 14
    assert (report.device, report.backend, report.dtype, report.rows) == (
        "cpu", "torch", torch.float32, 64)
    for layer in report.layers:
        assert layer.kernel_agrees
        assert layer.kernel_max_rel_error <= layer.kernel_tolerance == 1e-4
        assert 0.0 < layer.compression_rel_error < 1.0
        assert layer.compression_rel_error <= layer.worst_row_rel_error < 1.0
        assert 0.3 < layer.effect_rel_error < 0.8  # 1-bit with a Gaussian-like ΔW: about 0.6
    errors = [layer.compression_rel_error for layer in report.layers]
    assert report.mean_compression_error == pytest.approx(sum(errors) / len(errors))
    assert report.max_compression_error == max(errors)


def test_compression_error_matches_a_direct_computation(
        tiny_base: Path, tiny_finetune: Path, deltas: dict[ScaleMode, Path],
        row_report: VerifyReport) -> None:
    base, finetune = tensors_of(tiny_base), tensors_of(tiny_finetune)
    delta = tensors_of(deltas[ScaleMode.ROW])
    w_base, w_ft = base[f"{DOWN}.weight"].double(), finetune[f"{DOWN}.weight"].double()
    signs = unpack_signs(delta[bits_key(DOWN)], 120, torch.float64)
    w_hat = w_base + delta[scale_key(DOWN)].double()[:, None] * signs
    x = layer_activations(DOWN, 64, 120, torch.float32, torch.device("cpu")).double()
    y, y_ft, y_base = x @ w_hat.t(), x @ w_ft.t(), x @ w_base.t()
    residual = y - y_ft
    layer = next(r for r in row_report.layers if r.module == DOWN)
    assert layer.shape == (48, 120)
    assert layer.compression_rel_error == pytest.approx(
        float(residual.norm() / y_ft.norm()), rel=1e-5)
    assert layer.worst_row_rel_error == pytest.approx(
        float((residual.norm(dim=1) / y_ft.norm(dim=1)).max()), rel=1e-5)
    assert layer.effect_rel_error == pytest.approx(
        float(residual.norm() / (y_ft - y_base).norm()), rel=1e-5)


def test_per_row_scales_beat_one_scale_per_matrix(
        tiny_base: Path, tiny_finetune: Path, deltas: dict[ScaleMode, Path],
        row_report: VerifyReport) -> None:
    per_matrix = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.TENSOR], "cpu")
    assert per_matrix.ok
    assert per_matrix.scale_mode == "tensor"
    assert row_report.mean_compression_error < per_matrix.mean_compression_error
    assert row_report.max_compression_error < per_matrix.max_compression_error


def test_flipped_bits_of_one_module_show_there_only_and_the_kernel_still_agrees(
        tiny_base: Path, tiny_finetune: Path, deltas: dict[ScaleMode, Path],
        row_report: VerifyReport, tmp_path: Path) -> None:
    bits = tensors_of(deltas[ScaleMode.ROW])[bits_key(DOWN)]
    flipped = pack_signs(-unpack_signs(bits, 120))  # every sign, padding bits left at 0
    bad = rewrite_bits(deltas[ScaleMode.ROW], tmp_path / "bad", DOWN, flipped)
    report = verify_delta(tiny_base, tiny_finetune, bad, "cpu")
    assert report.ok  # the kernel computes what the bits say: bits are bits
    clean = {r.module: r for r in row_report.layers}
    for layer in report.layers:
        if layer.module == DOWN:
            assert layer.effect_rel_error > 1.5  # worse than dropping the delta altogether
            assert layer.compression_rel_error > 2 * clean[DOWN].compression_rel_error
        else:  # the same activations per module: every other layer is unchanged
            assert layer == clean[layer.module]
    assert report.worst_compression_layer == DOWN
    assert report.worst_layers[0].module == DOWN


def test_set_padding_bits_are_refused(tiny_base: Path, tiny_finetune: Path,
                                      deltas: dict[ScaleMode, Path], tmp_path: Path) -> None:
    bits = tensors_of(deltas[ScaleMode.ROW])[bits_key(DOWN)]
    bad = rewrite_bits(deltas[ScaleMode.ROW], tmp_path / "bad", DOWN, ~bits)
    with pytest.raises(InvalidDelta, match="padding bits"):
        verify_delta(tiny_base, tiny_finetune, bad, "cpu")


def test_a_delta_for_another_base_or_a_mismatched_finetune_is_refused(
        tiny_pair: TinyPairFactory, tiny_base: Path, tiny_finetune: Path,
        deltas: dict[ScaleMode, Path], tmp_path: Path) -> None:
    half = tiny_pair(torch.float16)
    with pytest.raises(InvalidDelta, match="made against a base"):
        verify_delta(half.base, half.finetune, deltas[ScaleMode.ROW], "cpu")
    with pytest.raises(InvalidDelta, match="not a BitDelta delta"):
        verify_delta(tiny_base, tiny_finetune, tiny_finetune, "cpu")
    other = variant(tiny_finetune, tmp_path / "ft", {"lm_head.weight": torch.zeros(3, 48)})
    with pytest.raises(IncompatibleModels, match=r"'lm_head\.weight'"):
        verify_delta(tiny_base, other, deltas[ScaleMode.ROW], "cpu")


def test_seeded_activations_are_reproducible_and_per_module(
        tiny_base: Path, tiny_finetune: Path, deltas: dict[ScaleMode, Path],
        row_report: VerifyReport) -> None:
    only = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW], "cpu", modules=[DOWN])
    assert only.layers == [r for r in row_report.layers if r.module == DOWN]
    reseeded = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW], "cpu",
                            modules=[DOWN], seed=1)
    assert reseeded.layers[0].compression_rel_error != only.layers[0].compression_rel_error
    x = layer_activations(DOWN, 64, 120, torch.float32, torch.device("cpu"))
    assert x.shape == (64, 120)
    assert torch.allclose(x.pow(2).mean(dim=1), torch.ones(64))  # RMS-1 rows


def test_progress_counts_every_byte_read(tiny_base: Path, tiny_finetune: Path,
                                         deltas: dict[ScaleMode, Path]) -> None:
    calls: list[tuple[int, int, str]] = []
    report = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW], "cpu", rows=4,
                          progress=lambda done, total, item: calls.append((done, total, item)))
    assert [item for _, _, item in calls] == [r.module for r in report.layers]
    dones = [done for done, _, _ in calls]
    assert dones == sorted(dones)
    # W_base and W_ft float32 [N, K], bits int32 [ceil(K/32), N] and α float32 [N] per layer
    expected = sum(4 * (2 * n * k + math.ceil(k / 32) * n + n)
                   for n, k in (r.shape for r in report.layers))
    assert calls[-1][:2] == (expected, expected) == (report.bytes_read, report.bytes_read)


def test_bad_options_are_refused(tiny_base: Path, tiny_finetune: Path,
                                 deltas: dict[ScaleMode, Path]) -> None:
    delta = deltas[ScaleMode.ROW]
    missing = "model.layers.9.mlp.up_proj"
    with pytest.raises(InvalidParameter, match=re.escape(f"no module named {missing}")):
        verify_delta(tiny_base, tiny_finetune, delta, "cpu", modules=[missing])
    with pytest.raises(InvalidParameter, match="rows"):
        verify_delta(tiny_base, tiny_finetune, delta, "cpu", rows=0)
    with pytest.raises(InvalidParameter, match="dtype"):
        verify_delta(tiny_base, tiny_finetune, delta, "cpu", dtype=torch.int8)
    with pytest.raises(InvalidParameter, match="not a torch device"):
        verify_delta(tiny_base, tiny_finetune, delta, "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameter, match="CUDA is not available"):
            verify_delta(tiny_base, tiny_finetune, delta, "cuda")


def test_report_json_is_strict_json(row_report: VerifyReport) -> None:
    data = json.loads(json.dumps(row_report.to_dict(), allow_nan=False))
    summary = data["summary"]
    assert summary["ok"] is True
    assert summary["layers"] == 14
    assert summary["kernel_batches"] == [{"rows": 64, "kernel": "torch"}]
    assert summary["compression_rel_error_max"] == row_report.max_compression_error
    assert summary["compression_worst_layer"] == row_report.worst_compression_layer
    assert summary["dtype"] == "float32"
    assert [layer["module"] for layer in data["layers"]] == [
        r.module for r in row_report.layers]
    assert data["layers"][0]["shape"] == list(row_report.layers[0].shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_triton_kernels_agree_under_the_interpreter(
        tiny_base: Path, tiny_finetune: Path, deltas: dict[ScaleMode, Path],
        row_report: VerifyReport, dtype: torch.dtype) -> None:
    # On a machine without CUDA, tests/conftest.py set TRITON_INTERPRET=1: the real Triton
    # kernels run on CPU tensors, slowly, hence two small layers and 16 rows.
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW], device, rows=16,
                          dtype=dtype, backend="triton", modules=SMALLEST)
    assert report.backend == "triton"
    assert report.kernel_batches == {1: "decode", 16: "prefill"}  # decode and prefill kernels
    assert report.ok, report.layers
    assert [r.module for r in report.layers] == SMALLEST
    reference = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW], "cpu", rows=16,
                             backend="torch", modules=SMALLEST)
    for got, want in zip(report.layers, reference.layers, strict=True):
        assert got.compression_rel_error == pytest.approx(
            want.compression_rel_error, rel=1e-4 if dtype == torch.float32 else 3e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_by_default_in_the_bases_half_dtype(
        tiny_pair: TinyPairFactory, tiny_base: Path, tiny_finetune: Path,
        deltas: dict[ScaleMode, Path], row_report: VerifyReport, tmp_path: Path) -> None:
    report = verify_delta(tiny_base, tiny_finetune, deltas[ScaleMode.ROW])
    assert report.device.startswith("cuda")
    assert report.backend == "triton"
    assert report.dtype == torch.float16  # float32 base: served in fp16
    assert report.kernel_batches == {1: "decode", 64: "prefill"}
    assert report.ok, report.kernel_failures
    for got, want in zip(report.layers, row_report.layers, strict=True):
        assert got.compression_rel_error == pytest.approx(want.compression_rel_error, rel=3e-2)

    bf16 = tiny_pair(torch.bfloat16)
    delta = make_delta(bf16.base, bf16.finetune, tmp_path / "bf16")
    report = verify_delta(bf16.base, bf16.finetune, delta)
    assert report.dtype == torch.bfloat16
    assert report.ok, report.kernel_failures
    assert all(0.0 < r.compression_rel_error < 1.0 for r in report.layers)
