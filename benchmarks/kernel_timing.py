"""How the kernel benchmarks time GPU work: CUDA events around many launches, never a host clock.

A launch of the fused kernel at M = 1 lasts about as long as the Python that issues it, so
timing launches one by one (or a loop of them, eagerly) would measure the host. `Timer.time`
therefore

1. runs the launches a few times to compile and warm up (Triton JIT, cuBLAS handles);
2. captures a batch of launches in one CUDA graph (a few milliseconds of GPU work) and replays
   it between two CUDA events, several times, with one synchronisation at the end;
3. reports the median over the replays of (elapsed / launches in the batch).

If capture fails, it falls back to the same batches issued eagerly and says so in
`Timing.mode`. Without CUDA it times with the host clock only to exercise the code path:
those numbers mean nothing about a GPU.

Weights that fit in L2 would be read from cache on every launch after the first, unlike in a
model whose layers stream from HBM. `rotation_copies` sizes a set of identical operand copies
that launches cycle through, so each launch reads its weights from HBM.

Imports torch and the standard library only (benchmarks/gpu_check.sh runs it on a machine
without the server packages).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Launch = Callable[[], object]

# The launches cycle through enough operand copies to occupy this many times the L2 cache.
L2_MULTIPLE = 3
MAX_COPIES = 16
_DEFAULT_L2_BYTES = 50 * 2**20  # H100; H200 has 60 MiB. Used if torch does not report it.
COPY_BYTES = 1 << 30  # the copy-bandwidth probe: 1 GiB each way, far beyond any L2


@dataclass(frozen=True)
class Timing:
    us: float  # median time per launch, microseconds
    mode: str  # "cuda graph", "cuda eager (...)" or "cpu clock"
    launches: int  # launches per timed batch


@dataclass(frozen=True)
class Timer:
    device: torch.device
    warmup: int = 3  # untimed passes over all launches (compiles, cuBLAS workspaces)
    repeats: int = 5  # timed batches; the median of them is reported
    batch_ms: float = 3.0  # GPU time aimed at per batch
    max_batch: int = 1000
    graphs: bool = True

    def time(self, launches: Sequence[Launch]) -> Timing:
        """Median time per launch of cycling through `launches` (one per operand copy)."""
        if not launches:
            raise ValueError("nothing to time")
        for _ in range(self.warmup):
            for launch in launches:
                launch()
        if self.device.type != "cuda":
            return _host_clock(launches, self.repeats)
        torch.cuda.synchronize(self.device)
        # One eager pass gives the batch size; its host overhead only errs towards fewer.
        estimate_us = _eager_batches(launches, len(launches), 1, self.device)[0]
        count = self._batch_size(estimate_us, len(launches))
        if self.graphs:
            try:
                samples = _graph_batches(launches, count, self.repeats, self.device)
                return Timing(statistics.median(samples), "cuda graph", count)
            except Exception as error:  # capture is refused by some ops: time eagerly instead
                torch.cuda.synchronize(self.device)
                reason = f"graph capture failed: {type(error).__name__}"
        else:
            reason = "graphs off"
        samples = _eager_batches(launches, count, self.repeats, self.device)
        return Timing(statistics.median(samples), f"cuda eager ({reason})", count)

    def _batch_size(self, estimate_us: float, cycle: int) -> int:
        wanted = self.batch_ms * 1e3 / max(estimate_us, 1e-3)
        count = min(max(math.ceil(wanted), cycle), max(self.max_batch, cycle))
        return math.ceil(count / cycle) * cycle  # whole cycles: every copy equally often


def _run(launches: Sequence[Launch], count: int) -> None:
    for i in range(count):
        launches[i % len(launches)]()


def _elapsed_us(pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]], count: int,
                device: torch.device) -> list[float]:
    torch.cuda.synchronize(device)  # the one synchronisation, after every batch
    return [start.elapsed_time(end) * 1e3 / count for start, end in pairs]


def _events() -> tuple[torch.cuda.Event, torch.cuda.Event]:
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]  # torch stub
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    return start, end


def _eager_batches(launches: Sequence[Launch], count: int, repeats: int,
                   device: torch.device) -> list[float]:
    pairs = [_events() for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        _run(launches, count)
        end.record()
    return _elapsed_us(pairs, count, device)


def _graph_batches(launches: Sequence[Launch], count: int, repeats: int,
                   device: torch.device) -> list[float]:
    # Warm up on a side stream first, as torch asks before a capture.
    side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]  # torch's stub
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        _run(launches, len(launches))
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _run(launches, count)
    graph.replay()  # the first replay uploads the graph; not timed
    pairs = [_events() for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        graph.replay()
        end.record()
    samples = _elapsed_us(pairs, count, device)
    del graph
    return samples


def _host_clock(launches: Sequence[Launch], repeats: int) -> Timing:
    """CPU only: exercises the code; the numbers say nothing about a GPU."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        _run(launches, len(launches))
        samples.append((time.perf_counter() - start) * 1e6 / len(launches))
    return Timing(statistics.median(samples), "cpu clock", len(launches))


def l2_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or _DEFAULT_L2_BYTES)


def rotation_copies(device: torch.device, bytes_per_copy: int) -> int:
    """Operand copies to cycle through so that no launch finds its weights in L2."""
    if device.type != "cuda" or bytes_per_copy <= 0:
        return 1
    return max(1, min(MAX_COPIES, math.ceil(L2_MULTIPLE * l2_bytes(device) / bytes_per_copy)))


def copy_bandwidth_gbps(timer: Timer, nbytes: int = COPY_BYTES) -> float:
    """Device-to-device copy bandwidth, bytes read + written per second, in GB/s (10⁹)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=timer.device).uniform_()
    dst = torch.empty_like(src)
    timing = timer.time([lambda: dst.copy_(src)])
    return 2 * src.numel() * 4 / (timing.us * 1e-6) / 1e9


def environment_lines(device: torch.device) -> list[str]:
    """Device, versions and how timings were taken: the header of every table."""
    import platform

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = (f"{props.name}, {props.multi_processor_count} SMs, "
                 f"{props.total_memory / 2**30:.0f} GiB, L2 {l2_bytes(device) / 2**20:.0f} MiB")
    else:
        where = "CPU (no CUDA device)"
    return [
        f"device: {where}",
        f"python {platform.python_version()}, torch {torch.__version__}, triton "
        f"{triton_version}",
    ]
