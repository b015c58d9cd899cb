"""Let the Triton interpreter of releases before 3.7 run the kernels on NumPy ≥ 2.4.

The interpreter holds every runtime scalar as a one-element 1-D array and gives
``tl.tensor`` the ``__index__`` ``int(handle.data)``, which NumPy 2.4 refuses (a TypeError;
a DeprecationWarning since 1.25, an error under this suite's warning filter). Every loop
whose bound is a runtime value (K, T, a segment end) goes through it. Triton 3.7 squeezes
first (triton-lang/triton#9172). On older releases this installs the same ``__index__``
after the interpreter's own patches, at every launch; on 3.7 and later it does nothing.

Only the interpreter is touched (CPU tests, ``--backend triton`` on the CPU): compiled
kernels never call ``__index__``. Rewriting the loops as ``while`` loops would avoid the
patch but switch off Triton's software pipelining on the GPU, which pipelines ``for`` loops
only. The function patched is private; its signature changed in 3.6, and both are handled.
Needed on 3.4–3.6 of the supported range (benchmarks/triton_range.sh).
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _needs_fix() -> bool:
    import triton

    major, minor = (int(part) for part in triton.__version__.split(".")[:2])
    return (major, minor) < (3, 7)


def fix_interpreter_loop_bounds() -> None:
    if not _needs_fix():
        return
    from triton.runtime import interpreter

    patch_tensor = interpreter._patch_lang_tensor
    if getattr(patch_tensor, "deltahub_index_fix", False):
        return

    def index(self: Any) -> int:
        return int(self.handle.data.item())

    def patched(tensor: Any, *scope: Any) -> None:
        patch_tensor(tensor, *scope)
        if scope:  # Triton 3.6 undoes its patches after each launch, through this scope
            scope[0].set_attr(tensor, "__index__", index)
        else:
            tensor.__index__ = index

    patched.deltahub_index_fix = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched
