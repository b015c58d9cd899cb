"""The decode tile sweep behind `python benchmarks/kernel_bench.py --sweep`.

For W 11008×4096 it times every decode tile of the grid (block_n × block_k × num_warps ×
num_stages) for one delta at M = 1 (block_m 1) and for 16 tenants of one row each (block_m
16), ranks them, and says where the default of kernels/configs.py stands: the measurement a
constant there needs.

Compiling 288 variants one after another would take longer than timing them, so on a GPU
they are compiled first by worker processes (this file run with --worker), each launching
its share of the configs once; the main process then finds them in Triton's on-disk cache. A
config that fails to compile or launch is reported with its error, not timed. Tiles whose
products per thread (block_m·block_n·block_k / (32·num_warps)) pass MAX_PRODUCTS_PER_THREAD
are not compiled at all: the decode kernel keeps that many fp32 values live per thread, more
than the 255 registers a thread may have, so such a tile spills (and compiles slowly: 16x64x512
on 2 warps was still compiling after 4 minutes on a CPU).

Imports torch, the standard library and kernels/ only.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for the compile workers

from kernel_operands import (
    Case,
    Layer,
    Operand,
    dense_launches,
    fused_bytes,
    fused_launches,
    make_case,
    make_layer,
    operand_copies,
    reference,
    relative_error,
)
from kernel_timing import Timer, rotation_copies

from kernels import KernelConfig, select_config

SHAPE = (11008, 4096)  # (N, K): Llama-2-7B MLP up/gate, where the decode aims are stated
TINY_SHAPE = (172, 64)
GRID = ((8, 16, 32, 64), (64, 128, 256, 512), (2, 4, 8), (1, 2, 3))  # n, k, warps, stages
TINY_GRID = ((8, 16), (64, 128), (4,), (1, 3))  # the interpreter ignores warps and stages
MAX_PRODUCTS_PER_THREAD = 256
COMPILE_BUDGET_S = 90.0
_RESULT = "SWEEP-RESULT "  # prefix of a worker's result lines on its stdout


@dataclass(frozen=True)
class SweepCase:
    tenants: int
    block_m: int  # rows of the tile: one delta at M = 1 has 1, 16 tenants of one row 16

    def label(self) -> str:
        return f"T={self.tenants}, M=1" + (" (one delta)" if self.tenants == 1 else "")


CASES = (SweepCase(1, 1), SweepCase(16, 16))


@dataclass(frozen=True)
class Trial:
    config: KernelConfig
    default: bool
    us: float | None = None  # median per launch; None when not timed
    max_rel_error: float | None = None
    error: str = ""  # why it was not timed
    timing: str = ""  # how it was timed (kernel_timing.Timing.mode)


@dataclass(frozen=True)
class SweepResult:
    case: SweepCase
    n: int
    k: int
    bytes_moved: int
    dense_us: float
    trials: list[Trial]

    def ranked(self) -> list[Trial]:
        timed = [t for t in self.trials if t.us is not None]
        return sorted(timed, key=lambda t: t.us or 0.0)


def grid_note(tiny: bool) -> str:
    block_n, block_k, warps, stages = TINY_GRID if tiny else GRID
    return (f"candidates: block_n ∈ {set(block_n)} × block_k ∈ {set(block_k)} × num_warps ∈ "
            f"{set(warps)} × num_stages ∈ {set(stages)}, and the default of kernels/configs.py; "
            f"tiles over {MAX_PRODUCTS_PER_THREAD} products per thread are not compiled (they "
            "spill); µs is the median time per launch, weights cycled through copies beyond L2")


def products_per_thread(config: KernelConfig) -> int:
    return config.block_m * config.block_n * config.block_k // (32 * config.num_warps)


def candidates(case: SweepCase, tiny: bool, dtype: torch.dtype) -> tuple[list[KernelConfig],
                                                                          KernelConfig]:
    """The grid for this case, plus the default (added if the grid lacks it)."""
    default = select_config(case.tenants, 1, segmented=case.tenants > 1, dtype=dtype)
    block_n, block_k, warps, stages = TINY_GRID if tiny else GRID
    grid = [KernelConfig("decode", block_m=case.block_m, block_n=n, block_k=k, num_warps=w,
                         num_stages=s)
            for n in block_n for k in block_k for w in warps for s in stages]
    return (grid if default in grid else [default, *grid]), default


Job = tuple[int, KernelConfig]  # (tenants, tile): one variant to compile and time


def run_sweep(timer: Timer, dtype: torch.dtype, tiny: bool, compile_budget_s: float,
              jobs: int) -> Iterator[SweepResult]:
    """Each case's result as soon as it is timed (a caller can save them as they come)."""
    n, k = TINY_SHAPE if tiny else SHAPE
    layer = make_layer(n, k, max(c.tenants for c in CASES), dtype, timer.device)
    plans = {case: candidates(case, tiny, dtype) for case in CASES}
    errors: dict[Job, str] = {
        (case.tenants, c): f"{products_per_thread(c)} products per thread (over "
                           f"{MAX_PRODUCTS_PER_THREAD}): would spill, not compiled"
        for case, (configs, default) in plans.items() for c in configs
        if products_per_thread(c) > MAX_PRODUCTS_PER_THREAD and c != default}
    if timer.device.type == "cuda":  # the interpreter compiles nothing
        todo = [(case.tenants, c) for case, (configs, _) in plans.items() for c in configs
                if (case.tenants, c) not in errors]
        errors.update(precompile(todo, (n, k), dtype, compile_budget_s, jobs))
    for case, (configs, default) in plans.items():
        mine = {c: why for (tenants, c), why in errors.items() if tenants == case.tenants}
        result = _time_case(timer, layer, case, configs, default, mine)
        print(summary_line(result), flush=True)
        yield result


def _time_case(timer: Timer, layer: Layer, sweep: SweepCase, configs: Sequence[KernelConfig],
               default: KernelConfig, errors: dict[KernelConfig, str]) -> SweepResult:
    case = make_case(layer, 1, sweep.tenants)
    copies = rotation_copies(timer.device, fused_bytes(case))
    sets = operand_copies(case, copies)
    y_ref = reference(case)
    trials = []
    for config in configs:
        if errors.get(config):
            trials.append(Trial(config, config == default, error=errors[config]))
            continue
        launches = fused_launches(case, sets, "triton", config)
        try:
            err = relative_error(launches[0](), y_ref)
            timing = timer.time(launches)
        except Exception as error:  # a tile that cannot launch is a finding, not a crash
            first = (str(error).strip().splitlines() or [""])[0][:160]
            trials.append(Trial(config, config == default,
                                error=f"{type(error).__name__}: {first}"))
            continue
        trials.append(Trial(config, config == default, us=timing.us, max_rel_error=err,
                            timing=timing.mode))
    dense_us = timer.time(dense_launches(case, rotation_copies(
        timer.device, case.tenants * layer.n * layer.k * layer.w_base.element_size()))).us
    return SweepResult(sweep, layer.n, layer.k, fused_bytes(case), dense_us, trials)


def precompile(todo: Sequence[Job], shape: tuple[int, int], dtype: torch.dtype,
               budget_s: float, jobs: int) -> dict[Job, str]:
    """Compile and launch `todo` in `jobs` worker processes; returns each job's error ("" if
    it ran). Jobs still pending when the budget runs out get an error instead."""
    heavy_first = sorted(todo, key=lambda job: products_per_thread(job[1]), reverse=True)
    shares = [heavy_first[i::jobs] for i in range(jobs) if heavy_first[i::jobs]]
    started = time.monotonic()
    errors: dict[Job, str] = {}
    with contextlib.ExitStack() as files:
        procs = []
        for share in shares:
            spec = {"n": shape[0], "k": shape[1], "tenants": max(c.tenants for c in CASES),
                    "dtype": str(dtype).removeprefix("torch."),
                    "jobs": [[t, c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages]
                             for t, c in share]}
            # Files, not pipes: a worker never stalls on a full pipe nobody reads yet.
            out = files.enter_context(tempfile.TemporaryFile("w+"))
            err = files.enter_context(tempfile.TemporaryFile("w+"))
            command = [sys.executable, __file__, "--worker", json.dumps(spec)]
            procs.append((share, out, err, subprocess.Popen(command, stdout=out, stderr=err)))
        for share, out, err, proc in procs:
            why = f"not compiled within the sweep's compile budget ({budget_s:.0f} s)"
            try:
                if proc.wait(timeout=max(0.1, started + budget_s - time.monotonic())):
                    err.seek(0)
                    why = f"compile worker exited {proc.returncode}: {_last_line(err.read())}"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.seek(0)
            errors.update(_parse_results(out.read()))
            errors.update({job: why for job in share if job not in errors})
    print(f"compiled {sum(1 for e in errors.values() if not e)} of {len(todo)} variants in "
          f"{time.monotonic() - started:.0f} s ({len(shares)} processes)", flush=True)
    return errors


def _parse_results(out: str) -> dict[Job, str]:
    found = {}
    for line in out.splitlines():
        if line.startswith(_RESULT):
            record = json.loads(line.removeprefix(_RESULT))
            tenants, *tile = record["job"]
            found[(int(tenants), _config(tile))] = str(record["error"])
    return found


def _config(fields: Sequence[int]) -> KernelConfig:
    block_m, block_n, block_k, warps, stages = fields
    return KernelConfig("decode", block_m=block_m, block_n=block_n, block_k=block_k,
                        num_warps=warps, num_stages=stages)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _worker(spec: dict[str, Any]) -> int:
    """Compile and launch each job once, printing one result line per job.

    Without CUDA (a check of this plumbing under TRITON_INTERPRET=1) it runs on the CPU."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    layer = make_layer(spec["n"], spec["k"], spec["tenants"], getattr(torch, spec["dtype"]),
                       device, fine_tunes=False)
    sets: dict[int, tuple[Case, list[Operand]]] = {}
    for fields in spec["jobs"]:
        tenants = int(fields[0])
        if tenants not in sets:  # the same operands (and strides) as the timing loop's
            case = make_case(layer, 1, tenants)
            sets[tenants] = (case, operand_copies(case, 1))
        try:
            case, operands = sets[tenants]
            fused_launches(case, operands, "triton", _config(fields[1:]))[0]()
            if cuda:
                torch.cuda.synchronize(device)
            error = ""
        except Exception as exc:  # reported per job, like the timing loop does
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            error = f"{type(exc).__name__}: {first}"
        print(_RESULT + json.dumps({"job": fields, "error": error}), flush=True)
    return 0


def summary_line(result: SweepResult) -> str:
    ranked = result.ranked()
    head = f"sweep {result.n}x{result.k} {result.case.label()}: "
    if not ranked:
        return head + "no config ran"
    best = ranked[0]
    line = (f"{head}best {best.config.label()} {best.us or 0:.1f} us of {len(ranked)} timed "
            f"({len(result.trials) - len(ranked)} not timed)")
    default = next(t for t in result.trials if t.default)
    if default.us is None:
        return f"{line}; default {default.config.label()} not timed: {default.error}"
    rank = ranked.index(default) + 1
    return (f"{line}; default {default.config.label()} ranks {rank} "
            f"({default.us / (best.us or 1):.2f}x the best's time)")


def sweep_json(result: SweepResult) -> dict[str, Any]:
    return {
        "case": result.case.label(), "n": result.n, "k": result.k,
        "tenants": result.case.tenants, "bytes_moved": result.bytes_moved,
        "dense_us": result.dense_us, "summary": summary_line(result),
        "trials": [{"config": t.config.label(), "default": t.default, "us": t.us,
                    "max_rel_error": t.max_rel_error, "error": t.error, "timing": t.timing}
                   for t in result.trials],
    }


def sweep_markdown(result: SweepResult, copy_gbps: float) -> list[str]:
    lines = [f"## {result.n}×{result.k}, {result.case.label()}", "", summary_line(result), "",
             "| rank | config | µs | GB/s | % copy BW | vs dense | max rel err |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for rank, t in enumerate(result.ranked(), start=1):
        us = t.us or 1.0
        gbps = result.bytes_moved / (us * 1e-6) / 1e9
        mark = " (default)" if t.default else ""
        lines.append(f"| {rank} | {t.config.label()}{mark} | {us:.1f} | {gbps:.0f} | "
                     f"{gbps / copy_gbps:.0%} | {result.dense_us / us:.2f}× | "
                     f"{t.max_rel_error or 0:.1e} |")
    skipped = [t for t in result.trials if t.us is None]
    if skipped:
        lines += ["", "Not timed:", "", "| config | why |", "|---|---|"]
        lines += [f"| {t.config.label()}{' (default)' if t.default else ''} | "
                  f"{t.error.replace('|', '/')} |" for t in skipped]
    return [*lines, ""]


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 3:
        sys.exit("this is kernel_bench.py --sweep's compile worker; run that instead")
    sys.exit(_worker(json.loads(sys.argv[2])))
