"""Triton helpers shared by the decode and prefill kernels: wide offsets and sign expansion.

Kept apart so the tests can run exactly these functions under the interpreter (for instance
offsets past 2³¹ without allocating tensors that large: tests/kernels/test_offsets.py).
"""

# Parameters of @triton.jit functions stay unannotated (Triton reads annotations as
# specialisation hints); mypy's strict checks stay on for the rest.
# mypy: disable-error-code="no-untyped-def, untyped-decorator"

import triton
import triton.language as tl

# Bit 31 of an int32: the IEEE-754 sign bit of a float32 reinterpreted as int32.
SIGN_BIT = tl.constexpr(-2147483648)


@triton.jit
def wide_offset(index, stride):
    """index · stride in int64: rows × N of a 16K-token prefill against a 128K vocabulary, or
    tenants × ⌈K/32⌉ × N for a few hundred tenants, pass 2³¹ and would wrap in int32."""
    return tl.cast(index, tl.int64) * stride  # tl.cast also takes a plain int (interpreter loops)


@triton.jit
def sign_flips(words, offs_bit):
    """Per element, the IEEE sign bit of a value negated where ΔW ≥ 0.

    `words` [..., W, 1] broadcasts against `offs_bit` [32]: bit b of a word is the sign of
    element 32·w + b, 1 meaning ΔW ≥ 0; moving it to bit 31 is one shift. XOR-ing the result
    into the bits of −v gives v·sign, in one three-input logical op with the mask (complementing
    the word instead costs a third op per element wherever words are not shared). Padding bits
    past K are 0, so they decode to −1, but they meet x = 0 there (masked loads).
    """
    return (words << (31 - offs_bit)) & SIGN_BIT


@triton.jit
def signed_values(negated, flips):
    """v·sign in fp32 from −v (fp32) and `sign_flips`: exact, a sign-bit XOR."""
    return (negated.to(tl.int32, bitcast=True) ^ flips).to(tl.float32, bitcast=True)


@triton.jit
def signed_scale(words, offs_bit, alpha):
    """α·sign per element in fp32 (exact for any α, distilled scales included)."""
    return signed_values(-alpha, sign_flips(words, offs_bit))
