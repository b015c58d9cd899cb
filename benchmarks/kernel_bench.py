"""Benchmark of the fused BitDelta kernels against dense matmuls, in one run on one device.

For each W shape [N, K] (Llama-2-7B: 4096×4096 attention, 11008×4096 MLP up/gate, 4096×11008
MLP down), rows per tenant M ∈ {1, 4, 16, 64, 256} and tenants T ∈ {1, 4, 16} it reports the
median time, the bytes the fused kernel must move (W_base once, every tenant's bits and α, x
and y), the achieved GB/s as a share of the device copy bandwidth measured in the same run, and
the speed-up over (a) one dense x·W_ftᵀ for T = 1 or (b) T dense matmuls, one per fine-tune.

    python benchmarks/kernel_bench.py                   # GPU: full shapes
    python benchmarks/kernel_bench.py --sweep           # also time candidate tile configs
    python benchmarks/kernel_bench.py --markdown out.md # also write the table
    TRITON_INTERPRET=1 python benchmarks/kernel_bench.py --tiny --backend triton  # CPU

Without CUDA it runs tiny shapes (automatically) to exercise the code end to end; those
timings say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import (  # after the sys.path fix-up above
    Backend,
    KernelConfig,
    bitdelta_linear,
    bitdelta_linear_multi,
    bitdelta_linear_multi_reference,
    pack_signs,
    packed_words,
    resolve_backend,
    select_config,
    unpack_signs,
)
from kernels.configs import gemv_config  # the decode tile the sweep varies

FULL_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (N, K)
TINY_SHAPES = [(64, 64), (172, 64), (64, 172)]  # the same aspect ratios, K not a multiple of 32
ROWS = [1, 4, 16, 64, 256]
TINY_ROWS = [1, 4, 16]
TENANTS = [1, 4, 16]
COPY_TARGET = 0.80  # goal: M = 1, one delta, at least 80% of the copy bandwidth
MULTI_TARGET = 6.0  # goal: T = 16, M = 1, at least 6× faster than 16 dense matmuls
MULTI_TENANTS = 16

# Candidate tiles for --sweep; the GEMV's block_m is not swept (it covers all rows, up to a cap).
SWEEP_GEMV = [(bn, bk, w) for bn in (4, 8, 16, 32) for bk in (256, 512, 1024) for w in (2, 4, 8)]
SWEEP_GEMM = [
    KernelConfig("gemm", block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=s)
    for bm in (16, 32, 64, 128) for bn in (64, 128) for bk in (32, 64, 128)
    for w, s in ((4, 3), (4, 4), (8, 3))
]


@dataclass
class Row:
    n: int
    k: int
    m: int
    tenants: int
    config: str
    kernel_ms: float
    bytes_moved: int
    dense_ms: float
    max_rel_error: float

    @property
    def gbps(self) -> float:
        return self.bytes_moved / (self.kernel_ms * 1e-3) / 1e9

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.kernel_ms


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (default without CUDA)")
    parser.add_argument("--sweep", action="store_true", help="time candidate tile configs")
    parser.add_argument("--backend", choices=["auto", "triton", "torch"], default="auto")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--markdown", type=Path, help="also write the results table here")
    parser.add_argument("--rows", type=int, nargs="+", help="rows per tenant (default: all)")
    parser.add_argument("--tenants", type=int, nargs="+", help=f"tenant counts (default {TENANTS})")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tiny = args.tiny or not cuda
    dtype = getattr(torch, args.dtype)
    backend: Backend = args.backend
    ran = resolve_backend(device, backend)
    shapes, rows = (TINY_SHAPES, TINY_ROWS) if tiny else (FULL_SHAPES, ROWS)
    rows = args.rows or rows
    tenant_counts: list[int] = args.tenants or TENANTS
    timer = _cuda_median_ms if cuda else _cpu_median_ms

    header = [
        f"device: {torch.cuda.get_device_name() if cuda else 'CPU (no CUDA)'}; backend: {ran}; "
        f"dtype: {args.dtype}; torch {torch.__version__}",
    ]
    copy_gbps = _copy_bandwidth_gbps(device, timer, tiny)
    header.append(f"device copy bandwidth (read + write, measured in this run): "
                  f"{copy_gbps:.1f} GB/s")
    if not cuda:
        header.append("GPU figures pending: this CPU run checks the benchmark end to end; its "
                      "timings say nothing about the kernels on a GPU.")
    for line in header:
        print(line)

    results: list[Row] = []
    for n, k in shapes:
        gen = torch.Generator(device=device).manual_seed(n * 7 + k)
        w_base = (torch.randn((n, k), generator=gen, device=device) * 0.02).to(dtype)
        most = max(tenant_counts)
        deltas = [torch.randn((n, k), generator=gen, device=device) for _ in range(most)]
        bits_all = torch.stack([pack_signs(d) for d in deltas])
        alpha_all = torch.rand((most, n), generator=gen, device=device) * 1e-3
        # W_ft = W_base + α·sign(ΔW): the dense fine-tunes the kernel stands in for.
        w_ft_all = [
            (w_base.float() + alpha_all[t, :, None] * unpack_signs(bits_all[t], k)).to(dtype)
            for t in range(most)
        ]
        del deltas
        for tenants in tenant_counts:
            bits = bits_all[:tenants]
            alpha = alpha_all[:tenants]
            for m in rows:
                row = _bench_case(
                    n, k, m, tenants, w_base, bits, alpha, w_ft_all[:tenants], dtype, device,
                    backend, timer, gen,
                )
                results.append(row)
                print(_format_row(row, copy_gbps))
                if args.sweep and ran == "triton":
                    _sweep(n, k, m, tenants, w_base, bits, alpha, dtype, device, timer, gen, row)

    table = _markdown(results, copy_gbps, header, judge=cuda and ran == "triton")
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    return 0


def _bench_case(
    n: int, k: int, m: int, tenants: int, w_base: torch.Tensor, bits: torch.Tensor,
    alpha: torch.Tensor, w_ft: list[torch.Tensor], dtype: torch.dtype, device: torch.device,
    backend: Backend, timer: Callable[[Callable[[], object]], float], gen: torch.Generator,
) -> Row:
    total = m * tenants
    x = torch.randn((total, k), generator=gen, device=device).to(dtype)
    seg = [t * m for t in range(tenants + 1)]

    def run() -> torch.Tensor:
        if tenants == 1:
            return bitdelta_linear(x, w_base, bits[0], alpha[0], backend=backend)
        return bitdelta_linear_multi(x, w_base, bits, alpha, seg, backend=backend)

    y = run()
    y_ref = bitdelta_linear_multi_reference(x, w_base, bits, alpha, seg, out_dtype=torch.float32)
    err = float((y.float() - y_ref).abs().max() / y_ref.abs().max().clamp_min(1e-30))

    def dense() -> None:
        for t in range(tenants):
            torch.matmul(x[seg[t]:seg[t + 1]], w_ft[t].t())

    esize = torch.finfo(dtype).bits // 8
    bytes_moved = (
        n * k * esize  # W_base, once
        + tenants * (packed_words(k) * n * 4 + n * 4)  # every tenant's bits and α
        + total * (k + n) * esize  # x in, y out
    )
    config = select_config(total, m)
    return Row(
        n=n, k=k, m=m, tenants=tenants,
        config=_config_name(config) if resolve_backend(device, backend) == "triton" else "torch",
        kernel_ms=timer(run), bytes_moved=bytes_moved, dense_ms=timer(dense), max_rel_error=err,
    )


def _sweep(
    n: int, k: int, m: int, tenants: int, w_base: torch.Tensor, bits: torch.Tensor,
    alpha: torch.Tensor, dtype: torch.dtype, device: torch.device,
    timer: Callable[[Callable[[], object]], float], gen: torch.Generator, default: Row,
) -> None:
    """Time every candidate tile for this case; prints what kernels/configs.py needs."""
    total = m * tenants
    x = torch.randn((total, k), generator=gen, device=device).to(dtype)
    seg = [t * m for t in range(tenants + 1)]
    block_m = gemv_config(total).block_m
    candidates = [
        KernelConfig("gemv", block_m=block_m, block_n=bn, block_k=bk, num_warps=w, num_stages=1)
        for bn, bk, w in SWEEP_GEMV
    ] + SWEEP_GEMM

    def launch(config: KernelConfig) -> None:
        bitdelta_linear_multi(x, w_base, bits, alpha, seg, backend="triton", config=config)

    best: tuple[float, KernelConfig] | None = None
    for candidate in candidates:
        try:
            ms = timer(functools.partial(launch, candidate))
        except Exception as exc:  # a tile that does not fit (shared memory) is not a result
            print(f"    sweep {_config_name(candidate)}: skipped ({type(exc).__name__})")
            continue
        if best is None or ms < best[0]:
            best = (ms, candidate)
    if best is not None:
        print(f"    sweep best for N={n} K={k} M={m} T={tenants}: {_config_name(best[1])} "
              f"{best[0] * 1e3:.1f} us ({default.kernel_ms / best[0]:.2f}x the default "
              f"{default.config})")


def _copy_bandwidth_gbps(
    device: torch.device, timer: Callable[[Callable[[], object]], float], tiny: bool
) -> float:
    # 1 GiB on a GPU: far beyond L2 (50 MB on an H100), so this is HBM read + write.
    nbytes = (16 if tiny else 1024) * 2**20
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _cuda_median_ms(fn: Callable[[], object]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, return_mode="median"))


def _cpu_median_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1e3
    if first > 500:  # the Triton interpreter: one more call would only cost minutes
        return first
    samples: list[float] = []
    deadline = time.perf_counter() + 0.2
    while len(samples) < 3 or (time.perf_counter() < deadline and len(samples) < 50):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _config_name(config: KernelConfig) -> str:
    return (f"{config.kind} {config.block_m}x{config.block_n}x{config.block_k} "
            f"w{config.num_warps} s{config.num_stages}")


def _format_row(row: Row, copy_gbps: float) -> str:
    return (f"N={row.n:>5} K={row.k:>5} M={row.m:>3} T={row.tenants:>2}  {row.config:<24} "
            f"{row.kernel_ms * 1e3:10.1f} us  {row.gbps:8.1f} GB/s "
            f"({row.gbps / copy_gbps:6.1%} of copy)  dense {row.dense_ms * 1e3:10.1f} us  "
            f"x{row.speedup:6.2f}  err {row.max_rel_error:.1e}")


def _markdown(results: list[Row], copy_gbps: float, header: list[str], judge: bool) -> str:
    lines = [f"- {line}" for line in header]
    lines += [
        "",
        "| W [N×K] | M/tenant | T | config | median µs | MB moved | GB/s | % copy BW | "
        "dense µs | speed-up vs dense | max rel err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.n}×{r.k} | {r.m} | {r.tenants} | {r.config} | {r.kernel_ms * 1e3:.1f} | "
            f"{r.bytes_moved / 1e6:.2f} | {r.gbps:.1f} | {r.gbps / copy_gbps:.1%} | "
            f"{r.dense_ms * 1e3:.1f} | {r.speedup:.2f}× | {r.max_rel_error:.1e} |"
        )
    lines += ["", "Goals (dense = one x·W_ftᵀ for T = 1, T separate ones otherwise):"]
    if not judge:
        lines.append("- not judged: the goals are for the Triton kernels on a GPU")
        return "\n".join(lines) + "\n"
    for r in results:
        if r.m == 1 and r.tenants == 1:
            share = r.gbps / copy_gbps
            verdict = "met" if share >= COPY_TARGET else "NOT met"
            lines.append(f"- {r.n}×{r.k}, M = 1, one delta: {share:.1%} of copy bandwidth "
                         f"(goal ≥ {COPY_TARGET:.0%}): {verdict}")
        if r.m == 1 and r.tenants == MULTI_TENANTS:
            lines.append(f"- {r.n}×{r.k}, M = 1, T = {r.tenants}: {r.speedup:.2f}× the dense "
                         f"matmuls (goal ≥ {MULTI_TARGET:.0f}×): "
                         f"{'met' if r.speedup >= MULTI_TARGET else 'NOT met'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
