"""The compiled loop of the CPU encoder, value by value: every fp16 and bf16 bit pattern
widens to the float32 torch gives, every byte of sign flags packs to the layout, and the
inputs the loop cannot read in place (float64, fp8, strided) are converted the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.bitdelta import ScaleMode
from compress.bitdelta.codec import compress_pair
from compress.bitdelta.fused_cpu import encode_rows, flag_scratch, kernel_view
from kernels import pack_signs
from tests.compress.bitdelta.helpers import assert_same, pair, reference


def _every_pattern(dtype: torch.dtype) -> torch.Tensor:
    """All 65536 values of a 16-bit float type but NaN, as one row."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    return values[~torch.isnan(values)].reshape(1, -1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_16_bit_value_widens_and_signs_as_torch_does(dtype: torch.dtype) -> None:
    """ΔW itself (no base): |ΔW| and the sign bits of every finite and infinite value,
    subnormals and −0.0 included, against torch's own conversion."""
    row = _every_pattern(dtype)
    k = row.shape[1]
    view = kernel_view(row)
    assert view is not None
    absd = np.empty((1, k), np.float32)
    packed = np.empty((1, 4 * (-(-k // 32))), np.uint8)
    encode_rows(view, None, absd, packed, flag_scratch(k))
    wide = row.float()
    assert torch.equal(torch.from_numpy(absd).view(torch.int32), wide.abs().view(torch.int32))
    want = pack_signs(wide)  # int32 [words, 1], little-endian words of the row's bytes
    assert torch.equal(torch.from_numpy(packed).view(torch.int32).t(), want)


def test_every_byte_of_sign_flags_packs_to_the_layout() -> None:
    """256 rows of 8 columns, one per byte value: the multiply that gathers eight flags
    into a byte gives bit t = flag t for all of them."""
    flags = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
    finetune = torch.where(flags.bool(), 1.0, -1.0).half()
    base = torch.zeros_like(finetune)
    encoded = compress_pair(base, finetune, ScaleMode.ROW, "w")
    assert torch.equal(encoded.bits, pack_signs(finetune.float()))
    assert encoded.bits[0].tolist() == list(range(256))  # word 0 of row r is the byte r


@pytest.mark.parametrize("dtype", [torch.float64, torch.float8_e4m3fn, torch.float8_e5m2])
def test_inputs_the_loop_cannot_read_in_place_are_widened_first(dtype: torch.dtype) -> None:
    base, finetune = pair((37, 300), torch.float32, seed=21)
    base, finetune = base.to(dtype), finetune.to(dtype)
    want = reference(finetune.float() - base.float(), finetune.float(), ScaleMode.ROW)
    assert_same(compress_pair(base, finetune, ScaleMode.ROW, "w"), want, finetune=True)


def test_strided_inputs_give_what_contiguous_ones_give() -> None:
    base, finetune = pair((300, 37), torch.float16, seed=22)
    base_t, finetune_t = base.t(), finetune.t()  # [37, 300], not contiguous
    assert not finetune_t.is_contiguous()
    want = reference(finetune_t.float() - base_t.float(), finetune_t.float(), ScaleMode.ROW)
    assert_same(compress_pair(base_t, finetune_t, ScaleMode.ROW, "w"), want, finetune=True)
