"""BitDelta's CPU encoder: a matrix a chunk of rows at a time, chunks shared among threads.

Each chunk goes through fused_cpu.py's compiled loop, then torch sums each row of |ΔW| while
the chunk is in cache; chunk sums are added in row order, so the totals do not depend on
which thread encoded what. See docs/codecs.md, "BitDelta compression".
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from kernels.packing import packed_words, words_from_row_bytes

# Values per chunk (whole rows): the compiled loop's unit of work, and the |ΔW| buffer torch
# sums rows of. Larger chunks stream faster, small enough ones keep |ΔW| in cache (the sweep
# that chose 2^19: docs/benchmarks.md, "Figures quoted from code, moved here"). The chunk
# also fixes the order the norms' row totals are added in (not α: row sums are per row).
CHUNK_ELEMENTS = 1 << 19

ChunkSums = list[tuple[float, float]]  # per chunk, in row order: ‖ΔW‖², ‖W_ft‖² (0 for ΔW)
Chunk = tuple[int, int]  # rows [lo, hi)


@dataclass(frozen=True)
class EncoderPool:
    executor: Executor
    workers: int


@contextlib.contextmanager
def encoder_pool(workers: int | None = None, *, beside_reader: bool = True
                 ) -> Iterator[EncoderPool]:
    """CPU worker threads for the encoder, each running torch ops on one thread.

    On cache-sized chunks torch's intra-op threads do not pay off and oversubscribe the cores
    beside other threads, so rows are split among single-threaded workers instead
    (docs/benchmarks.md, "How we got here (BitDelta encoder)"). `workers` defaults to
    `torch.get_num_threads()`, less one (at least 1) `beside_reader`: a reader thread copying
    whole tensors into memory needs a core of its own.
    """
    threads = torch.get_num_threads()
    default = threads - 1 if beside_reader else threads
    count = max(1, default if workers is None else workers)
    # set_num_threads in a worker thread is local to it with torch's OpenMP backend
    # (the default); the caller's own setting is untouched.
    with ThreadPoolExecutor(count, "deltahub-encode", initializer=torch.set_num_threads,
                            initargs=(1,)) as executor:
        yield EncoderPool(executor, count)


def encode_matrix(n: int, k: int, finetune: torch.Tensor, base: torch.Tensor | None,
                  abs_sums: torch.Tensor, pool: EncoderPool | None
                  ) -> tuple[torch.Tensor, ChunkSums]:
    """Sign bits int32 [words, N], Σ|ΔW| per row into `abs_sums`, and per-chunk norms².

    `finetune` is ΔW itself when `base` is None. `pool`'s threads take chunks one at a
    time, whichever is free (a worker on a core another process is using takes fewer);
    None encodes on the calling thread.
    """
    step = max(1, CHUNK_ELEMENTS // max(k, 1))
    chunks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    packed = torch.empty(n, 4 * packed_words(k), dtype=torch.uint8)
    sums: ChunkSums = [(0.0, 0.0)] * len(chunks)
    claims = _Claims(len(chunks))

    def run(_: int) -> None:
        _encode_chunks(claims, chunks, k, finetune, base, packed, abs_sums, sums)

    if pool is None:
        run(0)
    else:
        list(pool.executor.map(run, range(min(pool.workers, len(chunks)))))
    return words_from_row_bytes(packed), sums


class _Claims:
    """Chunk indices, each handed to the one worker that asks for it first."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._next = 0
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[int]:
        while True:
            with self._lock:
                index, self._next = self._next, self._next + 1
            if index >= self._count:
                return
            yield index


def _encode_chunks(claims: _Claims, chunks: list[Chunk], k: int, finetune: torch.Tensor,
                   base: torch.Tensor | None, packed: torch.Tensor, abs_sums: torch.Tensor,
                   sums: ChunkSums) -> None:
    """Encode the chunks this worker claims: their sign bytes into `packed`, row sums
    into `abs_sums`, norms² into `sums` at the chunk's index."""
    if not chunks:  # a matrix with no rows
        return
    from compress.bitdelta.fused_cpu import encode_rows, flag_scratch  # numba: on first use

    most = max(hi - lo for lo, hi in chunks)
    absd = torch.empty(most, k, dtype=torch.float32)
    absd_np, packed_np, flags = absd.numpy(), packed.numpy(), flag_scratch(k)
    finetune_rows = _KernelRows(finetune, most)
    base_rows = _KernelRows(base, most) if base is not None else None
    for index in claims:
        lo, hi = chunks[index]
        sums[index] = encode_rows(finetune_rows.rows(lo, hi),
                                  None if base_rows is None else base_rows.rows(lo, hi),
                                  absd_np[: hi - lo], packed_np[lo:hi], flags)
        torch.sum(absd[: hi - lo], dim=1, out=abs_sums[lo:hi])


class _KernelRows:
    """Rows of one input as the compiled loop reads them, for one worker thread: the
    stored bits in place (fp16, bf16, float32, contiguous), or else (float64, fp8, a
    strided tensor) converted to float32 a chunk at a time, exactly as the loop would
    widen them."""

    def __init__(self, matrix: torch.Tensor, most_rows: int) -> None:
        from compress.bitdelta.fused_cpu import kernel_view

        self._matrix = matrix
        self._view = kernel_view(matrix)
        self._staging = (torch.empty(most_rows, matrix.shape[1], dtype=torch.float32)
                         if self._view is None else None)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        if self._view is not None:
            return self._view[lo:hi]
        assert self._staging is not None
        staged = self._staging[: hi - lo]
        staged.copy_(self._matrix[lo:hi])
        return staged.numpy()
