"""The decode kernel's static cost model: compiled SASS → instructions per weight element →
predicted time and share of the roofline on an H100 and an H200, without a GPU.

    python benchmarks/kernel_cost.py                 # the table (compiles for sm_90 on the CPU)
    python benchmarks/kernel_cost.py --markdown F    # also write it as markdown

For each case it compiles the variant the dispatcher picks for 11008×4096 fp16, counts the
instructions a thread issues per K step (kernels/costmodel.py) and divides by the weight
elements × rows it covers. Budgets (issue 11): T = 1, M = 1 at ≥ 80% of copy bandwidth; T = 16
tenants of one row each ≥ 6× faster than 16 dense fp16 GEMVs, which needs about 2.5
instructions per (tenant × element). Predictions are floors (perfect overlap of memory and
issue, no tail or launch cost); benchmarks/gpu_check.sh measures the real thing.

Imports only torch, triton and kernels/ (runs on the GPU image, which has no server packages).
Unset TRITON_INTERPRET before running it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.compilecheck import kernel_launch  # after the sys.path fix-up above
from kernels.configs import select_config
from kernels.costmodel import (
    GPUS,
    decode_bytes,
    dense_gemv_us,
    k_step_cost,
    parse_sass,
    predict,
    resident_programs,
    wave_efficiency,
)
from kernels.toolchain import SM90, compile_launch

N, K = 11008, 4096
COPY_TARGET = 0.80
MULTI_TARGET = 6.0


@dataclass(frozen=True)
class Case:
    tenants: int
    rows_per_tenant: int

    @property
    def rows(self) -> int:
        return self.tenants * self.rows_per_tenant


CASES = [Case(1, 1), Case(1, 4), Case(16, 1), Case(16, 2), Case(16, 4), Case(64, 1)]


def cost_rows(dtype: torch.dtype = torch.float16) -> list[list[str]]:
    table = []
    for case in CASES:
        segmented = case.tenants > 1
        config = select_config(case.rows, case.rows_per_tenant, segmented=segmented, dtype=dtype)
        launch = kernel_launch(dtype, segmented, config, m=case.rows, tenants=case.tenants)
        compiled = compile_launch(launch, SM90)
        # The prefill kernel's tenant loop runs once per tenant with rows in the M tile.
        tenants_per_tile = min(case.tenants, -(-config.block_m // case.rows_per_tenant))
        trips = (1.0, float(tenants_per_tile)) if config.kind == "prefill" else (1.0,)
        cost = k_step_cost(parse_sass(compiled.sass), trips)
        # Per useful (row × weight element): lanes past the real rows of a tile still issue.
        rows_in_tile = min(config.block_m, case.rows)
        useful = config.block_n * config.block_k * rows_in_tile / (32 * config.num_warps)
        ipe = cost.instructions / useful
        moved = decode_bytes(N, K, tenants=case.tenants, rows=case.rows)
        programs = -(-N // config.block_n) * -(-case.rows // config.block_m)
        for gpu in GPUS:
            resident = resident_programs(gpu, registers=compiled.registers,
                                         threads=32 * config.num_warps,
                                         shared_bytes=compiled.shared_bytes)
            p = predict(gpu, n=N, k=K, rows=case.rows, bytes_moved=moved,
                        instructions_per_element=ipe,
                        waves=wave_efficiency(programs, resident))
            dense = dense_gemv_us(gpu, n=N, k=K, launches=case.tenants)
            verdict = _verdict(case, p.roofline_share, dense / p.kernel_us)
            table.append([
                f"T={case.tenants} M={case.rows_per_tenant}", config.label(), gpu.name,
                f"{cost.instructions:.0f}", f"{cost.barriers:.0f}", f"{cost.shuffles:.0f}",
                f"{ipe:.2f}", f"{moved / 1e6:.1f}", f"{p.memory_us:.1f}", f"{p.issue_us:.1f}",
                f"{p.wave_efficiency:.0%}",
                f"{p.kernel_us:.1f}", f"{p.roofline_share:.0%}", f"{dense / p.kernel_us:.2f}x",
                verdict,
            ])
    return table


def _verdict(case: Case, share: float, speedup: float) -> str:
    if case.tenants == 1 and case.rows_per_tenant == 1:
        return "meets" if share >= COPY_TARGET else f"below {COPY_TARGET:.0%}"
    if case.tenants == 16 and case.rows_per_tenant == 1:
        return "meets" if speedup >= MULTI_TARGET else f"below {MULTI_TARGET:.0f}x"
    return ""


HEADER = ["case", "tile", "GPU", "instr/K step", "barriers", "shuffles", "instr/(row·elem)",
          "MB moved", "memory µs", "issue µs", "waves used", "predicted µs", "of roofline",
          "vs dense",
          "aim"]


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description="static cost model of the decode kernel")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown")
    options = parser.parse_args()
    rows = cost_rows()
    print(f"W {N}x{K} fp16, compiled for sm_90; copy bandwidth assumed 90% of HBM spec")
    print(render(rows, markdown=False))
    if options.markdown:
        options.markdown.write_text(render(rows, markdown=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
