"""The worker's one table of what ends a job and what sends it back to the queue."""

from __future__ import annotations

import errno

import pytest

from compress.errors import InvalidDataset, ScratchDiskFull
from compress.quality import NonFiniteLoss
from registry.errors import DatabaseBusy, DatasetNotFound, StorageUnavailable
from registry.jobs.runner import QualityBelowThreshold
from registry.jobs.worker import classify
from registry.storage.base import StorageError

CASES: list[tuple[Exception, str, bool]] = [
    # A full scratch disk: the job would ask for the same bytes again (issue 22).
    (OSError(errno.ENOSPC, "No space left on device"), "ScratchDiskFull", False),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "ScratchDiskFull", False),
    (ScratchDiskFull("the logits", "/work/w", 2_000, 1_000, "free space"), "ScratchDiskFull",
     False),
    # Bad input found by the codec or the checks after it.
    (InvalidDataset("not token ids"), "InvalidDataset", False),
    (NonFiniteLoss("the loss is nan"), "NonFiniteLoss", False),
    (QualityBelowThreshold("worse than max_error"), "QualityBelowThreshold", False),
    (DatasetNotFound("gone"), "DatasetNotFound", False),
    # Outages: another attempt, after a backoff.
    (DatabaseBusy("locked"), "DatabaseBusy", True),
    (StorageUnavailable("down"), "StorageUnavailable", True),
    (StorageError("s3 unreachable"), "StorageUnavailable", True),
    (OSError(errno.EIO, "I/O error"), "StorageUnavailable", True),
    (ConnectionResetError("reset"), "StorageUnavailable", True),
    # Unforeseen: retried, under its own name.
    (RuntimeError("a torch failure"), "RuntimeError", True),
]


@pytest.mark.parametrize(("exc", "name", "transient"), CASES,
                         ids=[f"{type(e).__name__}-{n}" for e, n, _ in CASES])
def test_classify(exc: Exception, name: str, transient: bool) -> None:
    assert classify(exc) == (name, transient)
