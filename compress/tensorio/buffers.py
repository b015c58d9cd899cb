"""Read buffers that a codec fills over and over, instead of new memory per tensor.

Fresh memory costs more than the copy (page zeroing and faults; docs/benchmarks.md,
"Figures quoted from code, moved here"). A buffer is made only when none is free, so the
pool stays at the buffers lent at once. See docs/codecs.md, "Reading and writing models".
"""

from __future__ import annotations

import threading

import torch


class BufferPool:
    """uint8 CPU buffers lent out with `take` and returned with `give_back`; thread-safe
    (a reader thread takes, the codec's thread gives back)."""

    def __init__(self) -> None:
        self._free: list[torch.Tensor] = []
        self._lent: dict[int, torch.Tensor] = {}  # storage address -> buffer
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        """A buffer of at least `nbytes` bytes (a free one if one is large enough)."""
        with self._lock:
            # By index: list.remove would compare tensors elementwise.
            fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes]
            if fits:
                chosen = self._free.pop(min(fits, key=lambda i: self._free[i].numel()))
            else:
                if self._free:  # too small for what is read now: let it go, so the pool
                    self._free.pop()  # holds no more buffers than were ever lent at once
                chosen = torch.empty(max(nbytes, 1), dtype=torch.uint8)
            self._lent[chosen.untyped_storage().data_ptr()] = chosen
            return chosen

    def give_back(self, tensor: torch.Tensor) -> None:
        """Return the buffer that `tensor` (a buffer from `take`, or a view of one) was
        read into. Only once nothing uses the tensor any more: the next read overwrites
        it. A tensor the pool did not lend is ignored."""
        with self._lock:
            buffer = self._lent.pop(tensor.untyped_storage().data_ptr(), None)
            if buffer is not None:
                self._free.append(buffer)

    @property
    def held_bytes(self) -> int:
        """Bytes of all buffers made and not let go, lent or free."""
        with self._lock:
            return sum(b.numel() for b in [*self._free, *self._lent.values()])
