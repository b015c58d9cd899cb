"""Compile the Triton kernels for a GPU this machine does not have, and read what ptxas made.

A stand-in driver reports the target, the kernel's own ``warmup`` compiles it as a launch
would, and the bundled ``ptxas -v`` and ``cuobjdump -sass`` give resources and SASS for the
cost model. Needs a process without TRITON_INTERPRET (hence compilecheck in a subprocess).
See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class GpuTarget:
    name: str
    capability: int
    # Largest dynamic + static shared memory one block may opt into (CUDA occupancy tables):
    # 227 KiB on sm_90 (H100/H200), 163 KiB on sm_80 (A100).
    max_shared_per_block: int


SM80 = GpuTarget("sm_80", 80, 166_912)
SM90 = GpuTarget("sm_90", 90, 232_448)
TARGETS = (SM80, SM90)


@dataclass(frozen=True)
class KernelLaunch:
    """One launch as the dispatcher would make it: which kernel, its bound arguments, its
    compile-time parameters. Pointer arguments are given as torch dtypes."""

    kernel: str  # attribute name of the @triton.jit function in its module
    module: str  # e.g. "kernels.decode_kernel"
    args: tuple[Any, ...]
    constexprs: Mapping[str, Any]
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class CompiledVariant:
    target: GpuTarget
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int
    sass: str = field(repr=False)

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads

    @property
    def shared_fits(self) -> bool:
        return self.shared_bytes <= self.target.max_shared_per_block


class _TargetDriver:
    """The part of Triton's driver interface that `JITFunction.warmup` uses, for a target
    without a device. The device id is negative so its caches never mix with a real GPU's."""

    def __init__(self, target: GpuTarget) -> None:
        self.target = target

    def get_current_device(self) -> int:
        return -self.target.capability

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.target.capability, 32)

    def is_active(self) -> bool:
        return True


@contextlib.contextmanager
def _targeting(target: GpuTarget) -> Iterator[None]:
    from triton.runtime.driver import driver

    # DriverConfig has no public getter for "nothing chosen yet", and asking for `active` on a
    # machine without a GPU raises; so the previous choice is read from its private slot.
    previous = getattr(driver, "_active", None)
    driver.set_active(_TargetDriver(target))  # duck-typed: the methods warmup calls
    try:
        yield
    finally:
        driver._active = previous


def warm(launch: KernelLaunch, target: GpuTarget) -> Any:
    """Compile one launch for `target` through the kernel's own JIT cache (a launch with the
    same specialisation compiles nothing new); returns Triton's compiled kernel."""
    import importlib

    fn = getattr(importlib.import_module(launch.module), launch.kernel)
    if not hasattr(fn, "warmup"):
        raise RuntimeError(
            "the kernels were built for the Triton interpreter (TRITON_INTERPRET is set); "
            "compile them in a process without it: python -m kernels.compilecheck")
    with _targeting(target):
        return fn.warmup(*launch.args, grid=(1,), num_warps=launch.num_warps,
                         num_stages=launch.num_stages, **launch.constexprs)


def compile_launch(launch: KernelLaunch, target: GpuTarget) -> CompiledVariant:
    """Compile one launch for `target` and read its resources and SASS."""
    kernel = warm(launch, target)
    resources = ptxas_resources(kernel.asm["ptx"], target)
    return CompiledVariant(
        target=target,
        registers=resources["registers"],
        spill_stores=resources["spill_stores"],
        spill_loads=resources["spill_loads"],
        stack_bytes=resources["stack"],
        shared_bytes=int(kernel.metadata.shared),
        sass=disassemble(kernel.asm["cubin"], target),
    )


def _tool(name: str, target: GpuTarget) -> Path:
    """The binary Triton itself uses for this target (ptxas, cuobjdump), from its own bundle.

    Where Triton keeps it has moved between releases: `get_ptxas(arch)` returning a path and
    version (3.3) or a tool with `.path` (3.6+), `get_ptxas()` with one ptxas for every
    target (3.4, 3.5).
    """
    from triton.backends.nvidia import compiler

    try:
        found: Any = compiler.get_ptxas(target.capability)
    except TypeError:
        found = compiler.get_ptxas()
    ptxas = Path(found.path if hasattr(found, "path") else found[0])
    return ptxas if name == "ptxas" else ptxas.with_name(name)


_PTXAS_FIELDS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def ptxas_resources(ptx: str, target: GpuTarget) -> dict[str, int]:
    arch = f"sm_{target.capability}" + ("a" if target.capability >= 90 else "")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(  # noqa: S603  (Triton's own bundled ptxas, our own file)
            [str(_tool("ptxas", target)), "-v", f"--gpu-name={arch}", str(source),
             "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True, text=True, check=True)
    log = done.stdout + done.stderr
    found = {key: pattern.search(log) for key, pattern in _PTXAS_FIELDS.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise RuntimeError(f"ptxas -v did not report {missing}; its output was:\n{log}")
    return {key: int(match.group(1)) for key, match in found.items() if match is not None}


def disassemble(cubin: bytes, target: GpuTarget) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([str(_tool("cuobjdump", target)), "-sass", str(path)],  # noqa: S603
                              capture_output=True, text=True, check=True)
    return done.stdout


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
