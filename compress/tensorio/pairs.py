"""A base model and its fine-tune, opened together: the one reader both codecs share.

Each comes from a path or any `TensorSource` (local files, stored blobs).

Opening checks that the two have the same tensor names and shapes (naming every
mismatch); reading a tensor pair refuses NaN and Inf with the tensor's name and gives
ΔW in float32 whatever the stored dtypes are.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import torch

from compress.tensorio.checkpoint import Checkpoint
from compress.tensorio.manifest import require_same_layout
from compress.tensorio.sources import ModelInput


@dataclass(frozen=True)
class TensorPair:
    name: str
    base: torch.Tensor  # as stored
    finetune: torch.Tensor  # as stored

    def delta(self) -> torch.Tensor:
        """ΔW = W_ft − W_base in float32."""
        return self.finetune.float() - self.base.float()

    @property
    def changed(self) -> bool:
        return self.base.dtype != self.finetune.dtype or not torch.equal(self.base,
                                                                         self.finetune)


class ModelPair:
    def __init__(self, base: Checkpoint, finetune: Checkpoint) -> None:
        self.base = base
        self.finetune = finetune

    @classmethod
    def open(cls, base: ModelInput, finetune: ModelInput) -> ModelPair:
        """Open both (paths or TensorSources) and check their layouts match."""
        base_ckpt = Checkpoint.open(base)
        try:
            ft_ckpt = Checkpoint.open(finetune)
        except BaseException:
            base_ckpt.close()
            raise
        pair = cls(base_ckpt, ft_ckpt)
        try:
            require_same_layout(base_ckpt.manifest, ft_ckpt.manifest)
        except BaseException:
            pair.close()
            raise
        return pair

    def __enter__(self) -> ModelPair:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.base.close()
        self.finetune.close()

    @property
    def names(self) -> list[str]:
        return self.base.manifest.names

    def read(self, name: str) -> TensorPair:
        """Both versions of one tensor, checked finite."""
        return TensorPair(name, self.base.finite_tensor(name), self.finetune.finite_tensor(name))

    def finetune_nbytes(self, name: str) -> int:
        return self.finetune.entry(name).nbytes

    @property
    def finetune_bytes(self) -> int:
        return sum(self.finetune_nbytes(n) for n in self.names)
