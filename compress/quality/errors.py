"""Errors of quality evaluation, on top of the codec layer's own (compress/errors.py).

They are CodecErrors, so the CLI and the registry treat them as bad input like any other.
"""

from __future__ import annotations

from compress.errors import CodecError


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
