"""Benchmark of the fused BitDelta kernels against dense matmuls, in one run on one device.

For W [N, K] ∈ {4096×4096, 11008×4096, 4096×11008} (Llama-2-7B attention, MLP up/gate, MLP
down), rows per tenant M ∈ {1, 4, 16, 64, 256} and tenants T ∈ {1, 4, 16} it reports the
median time per launch, the bytes the fused kernel must move (W_base once, each tenant's bits
and α, x and y), the achieved GB/s and its share of the device copy bandwidth measured in the
same run, the speed-up over the dense baseline (one x·W_ftᵀ for T = 1; T matmuls, each
tenant's rows against its own materialised fine-tune, otherwise) and the max relative error
against the float32 reference. Aims (issue 11): T = 1, M = 1 at ≥ 80% of copy bandwidth;
T = 16, M = 1 ≥ 6× faster than 16 dense GEMVs.

    python benchmarks/kernel_bench.py                        # GPU: the full table
    python benchmarks/kernel_bench.py --markdown out.md --json out.json
    python benchmarks/kernel_bench.py --quick                # fewer cases: a smoke run
    python benchmarks/kernel_bench.py --sweep --markdown sweep.md   # decode tile sweep
    TRITON_INTERPRET=1 python benchmarks/kernel_bench.py --tiny --backend triton   # CPU
    python benchmarks/kernel_bench.py --tiny --backend torch                       # CPU

Only the kernel is timed: operands (tenant boundaries as a device int32 tensor, the dense
fine-tunes) are made beforehand, and batches of launches are replayed from CUDA graphs
between CUDA events (benchmarks/kernel_timing.py). Without CUDA it runs tiny shapes end to end
through the torch reference or the Triton interpreter; those timings mean nothing.
benchmarks/gpu_check.sh runs this on a GPU machine. Imports torch, triton (through kernels/)
and the standard library only: no server packages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above.
from kernel_operands import (
    Case,
    dense_launches,
    dense_weight_bytes,
    fused_bytes,
    fused_launches,
    make_case,
    make_layer,
    operand_copies,
    reference,
    relative_error,
)
from kernel_sweep import (
    COMPILE_BUDGET_S,
    SweepResult,
    grid_note,
    run_sweep,
    sweep_json,
    sweep_markdown,
)
from kernel_timing import (
    COPY_BYTES,
    Timer,
    copy_bandwidth_gbps,
    environment_lines,
    rotation_copies,
)

from kernels import Backend, resolve_backend, select_config, triton_interpreted

FULL_SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (N, K)
TINY_SHAPES = [(64, 64), (172, 64), (64, 172)]  # the same aspect ratios, K not a multiple of 32
ROWS = [1, 4, 16, 64, 256]
TINY_ROWS = [1, 4, 16]
TENANTS = [1, 4, 16]
QUICK_ROWS = [1, 4, 64]
QUICK_TENANTS = [1, 16]
COPY_AIM = 0.80  # T = 1, M = 1: at least 80% of the copy bandwidth
MULTI_AIM = 6.0  # T = 16, M = 1: at least 6× faster than 16 dense GEMVs
MULTI_TENANTS = 16
CPU_NOTE = ("CPU run: the timings are the host clock over the torch reference or the Triton "
            "interpreter and mean nothing about a GPU; only the errors and the code path are "
            "checked.")


@dataclass(frozen=True)
class Row:
    n: int
    k: int
    m: int  # rows per tenant
    tenants: int
    config: str
    timing: str  # how it was timed (kernel_timing.Timing.mode)
    kernel_us: float
    dense_us: float
    bytes_moved: int
    copies: int  # operand copies the launches cycled through (L2)
    max_rel_error: float

    @property
    def gbps(self) -> float:
        return self.bytes_moved / (self.kernel_us * 1e-6) / 1e9

    @property
    def speedup(self) -> float:
        return self.dense_us / self.kernel_us


@dataclass(frozen=True)
class Setup:
    device: torch.device
    dtype: torch.dtype
    backend: Backend
    ran: str  # "triton" or "torch": what the calls run
    tiny: bool
    timer: Timer

    @property
    def judged(self) -> bool:
        """The aims are for the Triton kernels on a GPU."""
        return self.device.type == "cuda" and self.ran == "triton"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    setup = _setup(args)
    if setup is None:
        return 2
    header = environment_lines(setup.device)
    header.append(f"dtype {args.dtype}; backend {setup.ran}")
    copy_gbps = copy_bandwidth_gbps(setup.timer, COPY_BYTES if not setup.tiny else 16 << 20)
    header.append(f"device copy bandwidth (read + write, this run): {copy_gbps:.0f} GB/s")
    if setup.device.type != "cuda":
        header.append(CPU_NOTE)
    for line in header:
        print(line, flush=True)
    # Outputs are rewritten after each shape (sweep: each case), so a run stopped by a time
    # limit still leaves what it measured.
    if args.sweep:
        results = []
        header.append(grid_note(setup.tiny))
        for result in run_sweep(setup.timer, setup.dtype, setup.tiny, args.compile_budget_s,
                                args.jobs):
            results.append(result)
            _write(args, _sweep_markdown(results, copy_gbps, header, args.dtype),
                   {"header": header, "copy_gbps": copy_gbps,
                    "cases": [sweep_json(r) for r in results]})
        return 0
    rows: list[Row] = []
    markdown = ""
    for table in run_table(setup, *_cases(args, setup.tiny), copy_gbps):
        rows += table
        notes = [*header, _timing_note(rows)]
        markdown = render_markdown(rows, copy_gbps, notes, setup.judged)
        _write(args, markdown, {"header": notes, "copy_gbps": copy_gbps, "judged": setup.judged,
                                "cases": [_row_json(r, copy_gbps, setup.judged) for r in rows]})
    print()
    print(markdown)
    return 0


def _write(args: argparse.Namespace, markdown: str, document: dict[str, Any]) -> None:
    if args.markdown:
        args.markdown.write_text(markdown, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _sweep_markdown(results: list[SweepResult], copy_gbps: float, header: list[str],
                    dtype: str) -> str:
    lines = [f"# Decode tile sweep ({dtype})", "", *(f"- {line}" for line in header), ""]
    lines += [line for r in results for line in sweep_markdown(r, copy_gbps)]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (always without CUDA)")
    parser.add_argument("--quick", action="store_true", help="one shape, fewer M and T")
    parser.add_argument("--sweep", action="store_true",
                        help="the decode tile sweep for 11008x4096 instead of the table")
    parser.add_argument("--backend", choices=["auto", "triton", "torch"], default="auto")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--rows", type=int, nargs="+", help="rows per tenant (M)")
    parser.add_argument("--tenants", type=int, nargs="+", help="tenant counts (T)")
    parser.add_argument("--no-graphs", action="store_true",
                        help="time eager launches instead of CUDA-graph replays")
    parser.add_argument("--compile-budget-s", type=float, default=COMPILE_BUDGET_S,
                        help="--sweep: seconds for compiling the candidates (GPU)")
    parser.add_argument("--jobs", type=int, default=max(1, min(len(os.sched_getaffinity(0))
                                                               - 2, 12)),
                        help="--sweep: compile processes (GPU)")
    return parser.parse_args(argv)


def _setup(args: argparse.Namespace) -> Setup | None:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    backend: Backend = args.backend
    ran = resolve_backend(device, backend)
    if args.sweep and ran != "triton":
        print("--sweep times the Triton kernels: add --backend triton (and TRITON_INTERPRET=1 "
              "without CUDA)", file=sys.stderr)
        return None
    if ran == "triton" and not cuda and not triton_interpreted():
        print("the Triton kernels need CUDA; on the CPU set TRITON_INTERPRET=1 in the "
              "environment, or use --backend torch", file=sys.stderr)
        return None
    if cuda:
        timer = (Timer(device, warmup=2, repeats=3, batch_ms=2.0, graphs=not args.no_graphs)
                 if args.sweep else Timer(device, graphs=not args.no_graphs))
    else:
        timer = Timer(device, warmup=1, repeats=3)
    return Setup(device, getattr(torch, args.dtype), backend, ran, args.tiny or not cuda, timer)


def _cases(args: argparse.Namespace,
           tiny: bool) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    shapes = TINY_SHAPES if tiny else FULL_SHAPES
    rows = TINY_ROWS if tiny else ROWS
    tenants = TENANTS
    if args.quick:
        shapes, tenants = shapes[1:2], QUICK_TENANTS
        rows = [r for r in QUICK_ROWS if r in rows]
    return shapes, args.rows or rows, args.tenants or tenants


def run_table(setup: Setup, shapes: list[tuple[int, int]], rows: list[int],
              tenant_counts: list[int], copy_gbps: float) -> Iterator[list[Row]]:
    """The rows of each shape, shape by shape."""
    for n, k in shapes:
        layer = make_layer(n, k, max(tenant_counts), setup.dtype, setup.device)
        results = []
        for tenants in tenant_counts:
            for m in rows:
                row = bench_case(setup, make_case(layer, m, tenants))
                results.append(row)
                print(format_row(row, copy_gbps), flush=True)
        del layer
        if setup.device.type == "cuda":
            torch.cuda.empty_cache()
        yield results


def bench_case(setup: Setup, case: Case) -> Row:
    copies = rotation_copies(setup.device, fused_bytes(case))
    launches = fused_launches(case, operand_copies(case, copies), setup.backend)
    error = relative_error(launches[0](), reference(case))
    fused = setup.timer.time(launches)
    dense = setup.timer.time(
        dense_launches(case, rotation_copies(setup.device, dense_weight_bytes(case))))
    config = "torch reference"
    if setup.ran == "triton":
        config = select_config(case.rows, case.rows_per_tenant, segmented=case.tenants > 1,
                               dtype=setup.dtype).label()
    return Row(n=case.layer.n, k=case.layer.k, m=case.rows_per_tenant, tenants=case.tenants,
               config=config, timing=fused.mode, kernel_us=fused.us, dense_us=dense.us,
               bytes_moved=fused_bytes(case), copies=copies, max_rel_error=error)


def aim(row: Row, copy_gbps: float, judged: bool) -> str:
    """The issue-11 aim this case carries, and whether it is met ("" if none)."""
    if row.m != 1:
        return ""
    if row.tenants == 1:
        goal, met = f"≥ {COPY_AIM:.0%} of copy BW", row.gbps / copy_gbps >= COPY_AIM
    elif row.tenants == MULTI_TENANTS:
        goal, met = f"≥ {MULTI_AIM:.0f}× dense", row.speedup >= MULTI_AIM
    else:
        return ""
    if not judged:
        return f"{goal}: not judged"
    return f"{goal}: {'met' if met else 'NOT met'}"


def format_row(row: Row, copy_gbps: float) -> str:
    return (f"N={row.n:>5} K={row.k:>5} M={row.m:>3} T={row.tenants:>2}  {row.config:<26} "
            f"{row.kernel_us:9.1f} us {row.gbps:7.0f} GB/s ({row.gbps / copy_gbps:5.0%} of copy)"
            f"  dense {row.dense_us:9.1f} us  x{row.speedup:5.2f}  err {row.max_rel_error:.1e}")


def render_markdown(rows: list[Row], copy_gbps: float, header: list[str], judged: bool) -> str:
    lines = ["# Fused BitDelta kernels vs dense matmuls", ""]
    lines += [f"- {line}" for line in header]
    lines += ["", "| W [N×K] | M/tenant | T | config | µs | MB moved | GB/s | % copy BW | "
              "dense µs | speed-up | max rel err | aim |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r.n}×{r.k} | {r.m} | {r.tenants} | {r.config} | {r.kernel_us:.1f} | "
            f"{r.bytes_moved / 1e6:.3g} | {r.gbps:.0f} | {r.gbps / copy_gbps:.0%} | "
            f"{r.dense_us:.1f} | {r.speedup:.2f}× | {r.max_rel_error:.1e} | "
            f"{aim(r, copy_gbps, judged)} |")
    lines += ["", "µs: median time per launch. MB moved: W_base once + each tenant's bits and α "
              "+ x + y. Dense: one x·W_ftᵀ for T = 1, else T matmuls, each tenant's rows "
              "against its own W_ft. max rel err: max |y − y_ref| / max |y_ref| against the "
              "float32 reference."]
    if not judged:
        lines.append("Aims not judged: they are for the Triton kernels on a GPU.")
    return "\n".join(lines) + "\n"


def _timing_note(rows: list[Row]) -> str:
    modes = ", ".join(sorted({r.timing for r in rows}))
    if modes == "cpu clock":
        return "timing: host clock (CPU)"
    copies = "/".join(str(c) for c in sorted({r.copies for r in rows}))
    return (f"timing: {modes}; median over batches of launches between CUDA events; weights "
            f"cycled through {copies} copies (≥ 3× L2) so each launch reads them from HBM")


def _row_json(row: Row, copy_gbps: float, judged: bool) -> dict[str, Any]:
    return {**asdict(row), "gbps": row.gbps, "copy_share": row.gbps / copy_gbps,
            "speedup": row.speedup, "aim": aim(row, copy_gbps, judged)}


if __name__ == "__main__":
    raise SystemExit(main())
