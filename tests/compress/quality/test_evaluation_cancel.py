"""An evaluation can be stopped by its progress callback while any of its three models is
read or run, not only between batches (issue 22: a cancelled job ran on for a minute)."""

from __future__ import annotations

import pytest

from compress.quality import evaluate_quality
from tests.compress.quality.conftest import Variants
from tests.finetune import FinetunePair

BATCHES = 2  # per model: one data set of 2 batches


class Stop(Exception):
    """What the test's progress callback raises: a caller cancelling the run."""



# The item reported at the point, and how many batches had run before it.
STOP_POINTS = [("base: reading", 0), ("finetune: reading", BATCHES),
               ("compressed: reading", 2 * BATCHES)]


@pytest.mark.parametrize(("point", "batches_run"), STOP_POINTS, ids=[p for p, _ in STOP_POINTS])
def test_each_model_can_be_stopped_while_it_is_read(
        finetune_pair: FinetunePair, variants: Variants, forwards: list[str], point: str,
        batches_run: int) -> None:
    reads: list[str] = []

    def progress(done: int, total: int, item: str) -> None:
        if point in item:
            reads.append(item)
            if len(reads) == 2:  # the model's second tensor: one was read already
                raise Stop

    with pytest.raises(Stop):
        evaluate_quality(finetune_pair.base, finetune_pair.finetune, variants.bitdelta,
                         [finetune_pair.python.heldout], batch_size=4, max_batches=BATCHES,
                         seq_len=64, progress=progress)
    assert len(forwards) == batches_run
