"""Errors of quality evaluation, kept importable from here; they are defined in
compress/errors.py with the codec layer's other input errors.

They are CodecErrors, so the CLI and the registry treat them as bad input like any other.
"""

from __future__ import annotations

from compress.errors import InvalidDataset, MissingDependency, MissingTokenizer, NonFiniteLoss

__all__ = ["InvalidDataset", "MissingDependency", "MissingTokenizer", "NonFiniteLoss"]
