"""Layer 0: the 1-bit sign layout and the fused binary-GEMM kernels (torch and Triton only).

- the layout: `pack_signs` / `unpack_signs` (the one definition, kernels/packing.py);
- the fused linear y = x·W_baseᵀ + α ⊙ (x·sign(ΔW)ᵀ): `bitdelta_linear` (one delta) and
  `bitdelta_linear_multi` (many tenants of one base), Triton on CUDA, the torch reference
  elsewhere; `*_reference` are those references, called directly;
- `bitdelta_linear_trainable`: the same fused linear with gradients for α and x (what
  BitDelta scale distillation trains), kernels/trainable.py;
- verification of one layer: `verify_layer`, judged by `KERNEL_TOLERANCE`.

Importing this package does not import triton: the Triton kernels are loaded on their
first call.
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
