"""Kernel tests: Triton kernels on CUDA when there is a GPU, else through the Triton interpreter.

Without CUDA, TRITON_INTERPRET=1 is set before any test module is imported (here, and in
tests/conftest.py, which `--confcutdir=tests/kernels` skips on the GPU image):
the interpreter only works when the variable is set before ``triton`` itself is imported
(Triton's own library functions, tl.sum and tl.cdiv, are ``@triton.jit`` functions built at
that import). Nothing in deltahub imports triton before the first Triton call (kernels/
bitdelta_linear.py imports kernels/binary_gemm.py lazily). The variable changes nothing else:
the ``auto`` backend never picks the interpreter on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture(scope="session")
def triton_kernels() -> ModuleType:
    """kernels.binary_gemm, compiled for the GPU or, without one, run by the interpreter."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    module = importlib.import_module("kernels.binary_gemm")
    if not HAS_CUDA:
        assert module.kernels_interpreted(), (
            "the Triton kernels were not built for the interpreter: run pytest with "
            "TRITON_INTERPRET=1 in the environment (tests/conftest.py sets it unless it is "
            "set to something else)")
    return module
