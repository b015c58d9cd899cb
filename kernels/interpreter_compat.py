"""Let the Triton interpreter of releases before 3.7 run the kernels on NumPy ≥ 2.4.

NumPy 2.4 refuses the interpreter's ``__index__`` on one-element arrays; Triton 3.7 fixes it
(triton-lang/triton#9172), and on 3.4–3.6 this installs the same fix at every launch. Only
the interpreter is touched. See docs/codecs.md, "Kernels".
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
