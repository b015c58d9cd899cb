"""BitDelta's CPU encoder: a matrix a chunk of rows at a time, chunks shared among threads.

Each chunk (`_CHUNK_ELEMENTS` values, whole rows) goes through the compiled loop of
fused_cpu.py, which writes its sign bytes and |ΔW| and returns its two float64 norms; torch
then sums each row of |ΔW| while the chunk is still in L2. A worker thread takes a run of
consecutive chunks; each chunk's sums come back in row order, so the totals are the same
whoever encoded what.

An input is either a tensor in memory or a matrix still on disk (`StoredRows`). From disk,
each worker reads its chunk's rows straight into a small buffer of its own and encodes them
while they are in cache: the model is read once from the page cache, with no full copy of
each tensor in memory to be read again by the encoder, and the reads run on every core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from compress.tensorio import StoredRows
from kernels.packing import packed_words, words_from_row_bytes

# Rows per chunk: 2^17 values, so a chunk's inputs, its float32 |ΔW| and its sign flags
# stay in a 2 MB L2 while the loop writes |ΔW| and torch sums its rows. The chunk also
# fixes the order the float64 norms are added in (not α: row sums are per row).
CHUNK_ELEMENTS = 1 << 17

ChunkSums = list[tuple[float, float]]  # per chunk, in row order: ‖ΔW‖², ‖W_ft‖² (0 for ΔW)
Matrix = torch.Tensor | StoredRows  # a [N, K] input: in memory, or read by blocks of rows
Chunk = tuple[int, int]  # rows [lo, hi)


@dataclass(frozen=True)
class EncoderPool:
    executor: Executor
    workers: int


@contextlib.contextmanager
def encoder_pool(workers: int | None = None, *, beside_reader: bool = True
                 ) -> Iterator[EncoderPool]:
    """CPU worker threads for the encoder, each running torch ops on one thread.

    The encoder's ops work on cache-sized chunks, too small for torch's intra-op threads
    to pay off: beside other threads they oversubscribe the cores, and on a busy machine
    every op then waits for a time slice (measured on the shared 2-core dev box, two
    7B-shaped layers: 2.7 s with two single-threaded workers, 20 s with torch's two
    intra-op threads in one). Splitting the rows among single-threaded workers uses every
    core without that. `workers` defaults to `torch.get_num_threads()`, less one
    (at least 1) `beside_reader`: a reader thread copying whole tensors into memory
    needs a core of its own. Workers that read their own blocks (`StoredRows`) need none.
    """
    threads = torch.get_num_threads()
    default = threads - 1 if beside_reader else threads
    count = max(1, default if workers is None else workers)
    # set_num_threads in a worker thread is local to it with torch's OpenMP backend
    # (the default); the caller's own setting is untouched.
    with ThreadPoolExecutor(count, "deltahub-encode", initializer=torch.set_num_threads,
                            initargs=(1,)) as executor:
        yield EncoderPool(executor, count)


def encode_matrix(n: int, k: int, finetune: Matrix, base: Matrix | None, abs_sums: torch.Tensor,
                  pool: EncoderPool | None) -> tuple[torch.Tensor, ChunkSums]:
    """Sign bits int32 [words, N], Σ|ΔW| per row into `abs_sums`, and per-chunk norms².

    `finetune` is ΔW itself when `base` is None. `pool` shares runs of whole chunks out
    among its threads; None encodes on the calling thread.
    """
    step = max(1, CHUNK_ELEMENTS // max(k, 1))
    chunks = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    packed = torch.empty(n, 4 * packed_words(k), dtype=torch.uint8)

    def run(group: list[Chunk]) -> ChunkSums:
        return _encode_chunks(group, k, finetune, base, packed, abs_sums)

    if pool is None:
        groups = [run(chunks)]
    else:
        groups = list(pool.executor.map(run, _groups(chunks, pool.workers)))
    return words_from_row_bytes(packed), [s for group in groups for s in group]


def _encode_chunks(chunks: list[Chunk], k: int, finetune: Matrix, base: Matrix | None,
                   packed: torch.Tensor, abs_sums: torch.Tensor) -> ChunkSums:
    """Fill `packed` (sign bytes) and `abs_sums` for these chunks; return their norms²."""
    if not chunks:
        return []
    from compress.bitdelta.fused_cpu import encode_rows, flag_scratch  # numba: on first use

    most = max(hi - lo for lo, hi in chunks)
    absd = torch.empty(most, k, dtype=torch.float32)
    absd_np, packed_np, flags = absd.numpy(), packed.numpy(), flag_scratch(k)
    finetune_rows = _KernelRows(finetune, most)
    base_rows = _KernelRows(base, most) if base is not None else None
    sums: ChunkSums = []
    for lo, hi in chunks:
        sums.append(encode_rows(finetune_rows.rows(lo, hi),
                                None if base_rows is None else base_rows.rows(lo, hi),
                                absd_np[: hi - lo], packed_np[lo:hi], flags))
        torch.sum(absd[: hi - lo], dim=1, out=abs_sums[lo:hi])
    return sums


class _KernelRows:
    """Rows of one input as the compiled loop reads them, for one worker thread.

    In memory: the stored bits in place (fp16, bf16, float32, contiguous). From disk: read
    into this thread's block buffer. Any other dtype (float64, fp8) or a strided tensor is
    converted to float32 a chunk at a time, exactly as the loop would widen it.
    """

    def __init__(self, matrix: Matrix, most_rows: int) -> None:
        from compress.bitdelta.fused_cpu import kernel_view

        self._kernel_view = kernel_view
        self._matrix = matrix
        k = matrix.shape[1]
        self._block = (torch.empty(most_rows * matrix.row_bytes, dtype=torch.uint8)
                       if isinstance(matrix, StoredRows) else None)
        self._view = kernel_view(matrix) if isinstance(matrix, torch.Tensor) else None
        convertible = (matrix.dtype in (torch.float16, torch.bfloat16, torch.float32)
                       and (self._view is not None or self._block is not None))
        self._staging = None if convertible else torch.empty(most_rows, k, dtype=torch.float32)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        if self._view is not None:
            return self._view[lo:hi]
        if isinstance(self._matrix, StoredRows):
            assert self._block is not None
            rows = self._matrix.read_rows(lo, hi, self._block)
        else:
            rows = self._matrix[lo:hi]
        if self._staging is None:
            view = self._kernel_view(rows)
            assert view is not None
            return view
        staged = self._staging[: hi - lo]
        staged.copy_(rows)
        return staged.numpy()


def _groups(chunks: list[Chunk], parts: int) -> list[list[Chunk]]:
    """Consecutive runs of chunks, one per worker, as even as whole chunks allow."""
    count = max(1, min(parts, len(chunks)))
    return [chunks[len(chunks) * i // count : len(chunks) * (i + 1) // count]
            for i in range(count)]
