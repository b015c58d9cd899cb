"""Kernel tests: Triton kernels on CUDA when there is a GPU, else through the Triton interpreter.

Without CUDA this file sets TRITON_INTERPRET=1 when pytest imports it (collection, before any
test runs), and leaves it set: the interpreter only works when the variable is set before
``triton`` itself is imported, because Triton's own library functions (tl.sum, tl.cdiv) are
``@triton.jit`` functions built at that import, and it has to stay set through the first
launch. Nothing in deltahub imports triton before the first Triton call (kernels/
bitdelta_linear.py imports kernels/binary_gemm.py lazily), and torch and transformers do not
import it either, so collecting other test packages first is harmless. If something did
import triton earlier, ``triton_kernels`` fails with that explanation instead of running
kernels in a broken interpreter. The variable changes nothing else: the ``auto`` backend
never picks the interpreter on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

_TRITON_IMPORTED_TOO_EARLY = False
if not HAS_CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    _TRITON_IMPORTED_TOO_EARLY = "triton" in sys.modules
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture(scope="session")
def triton_kernels() -> ModuleType:
    """kernels.binary_gemm, compiled for the GPU or, without one, run by the interpreter."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    if _TRITON_IMPORTED_TOO_EARLY:
        pytest.fail(
            "triton was imported before tests/kernels/conftest.py could set TRITON_INTERPRET=1, "
            "so the interpreter cannot run the kernels on this CPU-only machine; run pytest "
            "with TRITON_INTERPRET=1 in the environment, or set it in tests/conftest.py"
        )
    module = importlib.import_module("kernels.binary_gemm")
    if not HAS_CUDA:
        assert module.kernels_interpreted(), "Triton kernels were not built for the interpreter"
    return module
