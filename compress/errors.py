"""Errors raised by the pure codec layer.

They carry no HTTP status: the registry maps each class to one (registry/errors.py).
Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

import errno


class CodecError(Exception):
    """Base of every error the codec layer raises on bad input."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidSafetensors(CodecError):
    """The bytes are not a well-formed safetensors file."""


class PickleRefused(CodecError):
    """A pickle-based checkpoint was offered; deltahub never unpickles."""


class NonFiniteTensor(CodecError):
    """A tensor holds NaN or Inf values."""

    def __init__(self, tensor_name: str, where: str = "") -> None:
        self.tensor_name = tensor_name
        location = f" in {where}" if where else ""
        super().__init__(
            f"tensor {tensor_name!r}{location} contains NaN or Inf values; "
            "fix the checkpoint (it is likely corrupt or diverged) and upload it again"
        )


class InvalidModel(CodecError):
    """A model directory is unusable (no weights, inconsistent shard index, ...)."""


class IncompatibleModels(CodecError):
    """Two models (or an adapter and its base) do not have matching tensors."""

    def __init__(self, subject: str, mismatches: list[str]) -> None:
        self.mismatches = mismatches
        shown = "; ".join(mismatches[:20])
        more = f"; and {len(mismatches) - 20} more" if len(mismatches) > 20 else ""
        super().__init__(f"{subject} does not fit its base: {shown}{more}")


class InvalidDelta(CodecError):
    """A compressed delta (BitDelta or LoRA) is malformed or belongs to another format."""


class InvalidParameter(CodecError):
    """A codec parameter is out of range (rank, target error, scale mode, ...)."""


class OutputExists(CodecError):
    """The output directory already holds files; deltahub never overwrites them."""


class InvalidJSON(CodecError):
    """A JSON document is malformed or breaks a limit (nesting depth, NaN, Infinity)."""

    def __init__(self, source: str, cause: str, advice: str) -> None:
        self.source = source
        self.cause = cause  # what was wrong, without the file name (to quote elsewhere)
        super().__init__(f"{source} is not valid JSON: {cause}; {advice}")


class TooLarge(CodecError):
    """An input declares more bytes than the caller allows (a header, a whole file)."""


# Data sets and quality evaluation. They live here, beside the other input errors, so the
# registry maps them to HTTP (registry/errors.py) without importing compress.quality.


class InvalidDataset(CodecError):
    """An evaluation or calibration data file is unusable (kind, encoding, shape, dtype)."""


class MissingTokenizer(CodecError):
    """Text was given for a model that has no tokenizer to turn it into token ids."""


class MissingDependency(CodecError):
    """An optional package the evaluation needs (transformers, tokenizers) is not installed."""

    def __init__(self, package: str, exc: ImportError) -> None:
        self.package = package
        super().__init__(
            f"evaluating a model needs {package}, which is not installed ({exc}); "
            "install the compress extra: pip install 'deltahub[compress]'"
        )


class NonFiniteLoss(CodecError):
    """A model's loss on a data set is NaN or Inf: its weights are broken."""


# Resource bounds of distillation and jobs (issue 22).

# What a write to a full disk (or a full quota) fails with.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ScratchDiskFull(CodecError):
    """The disk under a run's scratch files is too full for them (ENOSPC, EDQUOT).

    Permanent for a job: a retry would ask for the same bytes again.
    """

    def __init__(self, what: str, directory: str, needed: int | None, free: int,
                 advice: str) -> None:
        self.what, self.directory, self.needed, self.free = what, directory, needed, free
        self.advice = advice
        needs = f"needs {needed:,} bytes" if needed is not None else "ran out of space"
        super().__init__(f"{what} {needs} in {directory}, where {free:,} bytes are free; "
                         f"{advice}")
