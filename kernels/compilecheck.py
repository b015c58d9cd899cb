"""Compile every kernel variant the dispatcher can choose for sm_80 and sm_90, on any machine.

    python -m kernels.compilecheck              # a table: registers, spills, shared memory
    python -m kernels.compilecheck --json       # one JSON object per (variant, target)
    python -m kernels.compilecheck --recompiles # kernels compiled for many (M, T) launches

A variant fails on a compile error, a spill or shared memory past the block limit.
See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from kernels.configs import (
    DispatchVariant,
    KernelConfig,
    base_on_dot,
    dispatch_variants,
    select_config,
)
from kernels.packing import packed_words
from kernels.toolchain import (
    SM90,
    TARGETS,
    GpuTarget,
    KernelLaunch,
    compile_launch,
    dtype_name,
    warm,
)

# The Llama-2-7B MLP up/gate projection: the shape the decode aims are stated for.
SHAPE_N, SHAPE_K = 11008, 4096


def rows_and_tenants(variant: DispatchVariant) -> tuple[int, int]:
    """A launch that picks this variant: one delta uses BLOCK_M rows; tenants one row each
    (decode) or 64 rows each (prefill)."""
    config = variant.config
    if not variant.segmented:
        return (config.block_m if config.kind == "decode" else 256), 1
    if config.kind == "decode":
        return config.block_m, config.block_m
    return 256, 4


def kernel_launch(dtype: torch.dtype, segmented: bool, config: KernelConfig, *, m: int,
                  tenants: int, n: int = SHAPE_N, k: int = SHAPE_K) -> KernelLaunch:
    """The arguments `kernels.binary_gemm.launch` binds for contiguous operands, α per row."""
    words = packed_words(k)
    args = (dtype, dtype, torch.int32, torch.float32, torch.int32, dtype,
            m, n, k, tenants,
            k, 1,  # x
            k, 1,  # W_base
            words * n, n, 1,  # bits [T, words, N]
            n, 1,  # α [T, N]
            n, 1)  # y
    if config.kind == "decode":
        constexprs: dict[str, object] = dict(
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_WORDS=config.block_k // 32,
            SEGMENTED=segmented, BASE_ON_DOT=base_on_dot(config, segmented=segmented,
                                                          dtype=dtype),
            DOT_UPCAST=False, K_STAGES=config.num_stages)
        return KernelLaunch("bitdelta_decode_kernel", "kernels.decode_kernel", args, constexprs,
                            config.num_warps, config.num_stages)
    constexprs = dict(
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m, SEGMENTED=segmented,
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32", UPCAST_DOT=False)
    return KernelLaunch("bitdelta_gemm_kernel", "kernels.gemm_kernel", args, constexprs,
                        config.num_warps, config.num_stages)


@dataclass(frozen=True)
class CheckResult:
    variant: str
    target: str
    registers: int = 0
    spills: int = 0
    shared_bytes: int = 0
    shared_limit: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.spills == 0 and self.shared_bytes <= self.shared_limit


def variant_label(variant: DispatchVariant) -> str:
    layout = "tenants" if variant.segmented else "one delta"
    return f"{variant.config.label()} {dtype_name(variant.dtype)} {layout}"


def check(variant: DispatchVariant, target: GpuTarget) -> CheckResult:
    m, tenants = rows_and_tenants(variant)
    launch = kernel_launch(variant.dtype, variant.segmented, variant.config, m=m, tenants=tenants)
    label = variant_label(variant)
    try:
        compiled = compile_launch(launch, target)
    except Exception as error:  # any compiler failure is a finding, reported per variant
        return CheckResult(label, target.name, shared_limit=target.max_shared_per_block,
                           error=f"{type(error).__name__}: {str(error)[:400]}")
    return CheckResult(label, target.name, compiled.registers, compiled.spills,
                       compiled.shared_bytes, target.max_shared_per_block)


def _check_pair(pair: tuple[DispatchVariant, GpuTarget]) -> CheckResult:
    return check(*pair)


def check_all(jobs: int | None = None) -> list[CheckResult]:
    pairs = [(variant, target) for variant in dispatch_variants() for target in TARGETS]
    workers = jobs or max(1, min(len(os.sched_getaffinity(0)), 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_check_pair, pairs))


def markdown(results: Iterable[CheckResult]) -> str:
    lines = ["| variant | target | registers | spills (B) | shared (B) | limit (B) | ok |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        status = "yes" if r.ok else (r.error or "no")
        lines.append(f"| {r.variant} | {r.target} | {r.registers} | {r.spills} | "
                     f"{r.shared_bytes} | {r.shared_limit} | {status} |")
    return "\n".join(lines)


# (rows, tenants) of launches that must share compiled kernels: one-delta decode at 1 row,
# tenant decode at one row each, prefill at many rows each, each at several M and T.
RECOMPILE_LAUNCHES = (
    [(1, 1)] * 2
    + [(16, 16), (17, 17), (64, 64), (333, 333)]
    + [(256, 2), (1000, 5), (4096, 31)]
)


def recompiles(launches: Iterable[tuple[int, int]] = RECOMPILE_LAUNCHES) -> dict[str, int]:
    """Kernels Triton compiles for `launches` (rows, tenants), by config: one per config
    means M and T never specialise a kernel. Counted in a fresh Triton cache directory."""
    import tempfile
    from pathlib import Path

    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        for m, tenants in launches:
            segmented = tenants > 1
            config = select_config(m, -(-m // tenants), segmented=segmented,
                                   dtype=torch.float16)
            before = sum(1 for _ in Path(cache).rglob("*.cubin"))
            warm(kernel_launch(torch.float16, segmented, config, m=m, tenants=tenants), SM90)
            added = sum(1 for _ in Path(cache).rglob("*.cubin")) - before
            counts[config.label()] = counts.get(config.label(), 0) + added
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--jobs", type=int, default=None, help="compiler processes")
    parser.add_argument("--recompiles", action="store_true",
                        help="count the kernels compiled for launches at many M and T")
    options = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled",
              file=sys.stderr)
        return 2
    if options.recompiles:
        print(json.dumps(recompiles()))
        return 0
    results = check_all(options.jobs)
    if options.json:
        for r in results:
            print(json.dumps({**r.__dict__, "ok": r.ok}))
    else:
        print(markdown(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
