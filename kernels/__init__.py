"""Layer 0: the 1-bit sign layout and the fused binary-GEMM kernels (torch and Triton only).

`pack_signs` / `unpack_signs` (the layout); `bitdelta_linear` / `bitdelta_linear_multi`
(y = x·W_baseᵀ + α ⊙ (x·sign(ΔW)ᵀ), Triton on CUDA, else the torch `*_reference`);
`bitdelta_linear_trainable` (with gradients for α and x); `verify_layer`, judged by
`KERNEL_TOLERANCE`. Importing this package does not import triton. See docs/codecs.md, "Kernels".
"""

from kernels.bitdelta_linear import (
    Backend,
    bitdelta_linear,
    bitdelta_linear_multi,
    resolve_backend,
    triton_interpreted,
)
from kernels.configs import KernelConfig, select_config
from kernels.packing import BITS_PER_WORD, pack_signs, packed_words, unpack_signs
from kernels.reference import bitdelta_linear_multi_reference, bitdelta_linear_reference
from kernels.trainable import bitdelta_linear_trainable
from kernels.verify import KERNEL_TOLERANCE, LayerCheck, random_activations, verify_layer

__all__ = [
    "BITS_PER_WORD",
    "KERNEL_TOLERANCE",
    "Backend",
    "KernelConfig",
    "LayerCheck",
    "bitdelta_linear",
    "bitdelta_linear_multi",
    "bitdelta_linear_multi_reference",
    "bitdelta_linear_reference",
    "bitdelta_linear_trainable",
    "pack_signs",
    "packed_words",
    "random_activations",
    "resolve_backend",
    "select_config",
    "triton_interpreted",
    "unpack_signs",
    "verify_layer",
]
