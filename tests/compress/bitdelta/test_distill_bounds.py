"""Distillation's resource bounds (issue 22): the batch schedule's memory, the teacher
file against the disk, and a point to stop at in every phase."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.bitdelta import DistillConfig, distill_bitdelta
from compress.bitdelta.distill import PROBE_BATCHES
from compress.bitdelta.distill_data import batch_schedule
from compress.bitdelta.distill_logits import TeacherLogits, teacher_file
from compress.errors import ScratchDiskFull
from tests.compress.bitdelta.distill_helpers import Deltas, make_deltas
from tests.finetune import FinetunePair

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 3
QUICK = DistillConfig(steps=STEPS, lr=1e-3, batch_size=2, seq_len=16)


class Stop(Exception):
    """What the test's progress callback raises: a caller cancelling the run."""


@pytest.fixture(scope="module")
def deltas(finetune_pair: FinetunePair,
           tmp_path_factory: pytest.TempPathFactory) -> Deltas:
    return make_deltas(finetune_pair, tmp_path_factory.mktemp("bounds-deltas"))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every order torch.randperm draws; fails at once past 100,000 draws
    (the old schedule drew steps × batch_size values before the first step)."""
    sizes: list[int] = []
    original = torch.randperm

    def counting(n: int, *args: Any, **kwargs: Any) -> torch.Tensor:
        sizes.append(n)
        assert len(sizes) <= 100_000, "the schedule draws far more than it visits"
        return original(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", counting)
    return sizes



@pytest.mark.parametrize(("rows", "batch_size"), [(1, 256), (3, 5), (1000, 4)])
def test_the_schedule_draws_only_the_batches_it_visits(drawn: list[int], rows: int,
                                                       batch_size: int) -> None:
    schedule = batch_schedule(rows, 10_000_000, batch_size, seed=0)
    visited = [batch for _, batch in zip(range(4), schedule, strict=False)]
    assert all(b.shape == (batch_size,) and int(b.max()) < rows for b in visited)
    # One order of the rows at a time: what 4 batches need, and one order to spare.
    assert sum(drawn) <= 4 * batch_size + rows


def test_the_schedule_is_every_row_once_per_pass_and_the_same_each_time() -> None:
    schedule = batch_schedule(10, 5, 4, seed=7)
    first, again = torch.cat(list(schedule)), torch.cat(list(schedule))
    assert torch.equal(first, again)
    generator = torch.Generator().manual_seed(7)  # the orders the old, eager schedule drew
    assert torch.equal(first, torch.cat([torch.randperm(10, generator=generator)
                                         for _ in range(2)]))


def test_a_one_row_set_distils_many_steps_in_bounded_memory(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path,
        drawn: list[int], forwards: list[str]) -> None:
    one_row = tmp_path / "one-row.safetensors"
    save_file({"input_ids": load_file(finetune_pair.python.train)["input_ids"][:1, :4]
               .contiguous()}, one_row)
    config = DistillConfig(steps=20_000, batch_size=256, seq_len=4, lr=1e-3)

    def progress(done: int, total: int, item: str) -> None:
        if done == 3:  # the teacher's third batch
            raise Stop

    with pytest.raises(Stop):
        distill_bitdelta(finetune_pair.base, finetune_pair.finetune, deltas.row, [one_row],
                         tmp_path / "out", config=config, progress=progress)
    assert len(forwards) == 3
    assert sum(drawn) <= 4 * 256  # three batches of the one row, drawn one at a time
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["one-row.safetensors"]  # no teacher file


# Where a caller's cancellation is honoured, by the item reported there, and how many
# models ran before that point (steps teacher batches, PROBE_BATCHES initial probes, ...).
PROBES = min(PROBE_BATCHES, STEPS)
STOP_POINTS = [
    ("reading the fine-tune", 0),
    ("fine-tune logits, batch 2/", 2),
    ("reading the compressed model", STEPS),
    ("initial loss: batch 2", STEPS + 1),
    ("step 2/", STEPS + PROBES + 2),
    ("final loss: batch 1", STEPS + PROBES + STEPS),
]


@pytest.mark.parametrize(("point", "models_run"), STOP_POINTS, ids=[p for p, _ in STOP_POINTS])
def test_every_phase_can_be_stopped_within_one_batch_or_tensor(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path,
        forwards: list[str], point: str, models_run: int) -> None:
    def progress(done: int, total: int, item: str) -> None:
        if point in item:
            raise Stop

    out = tmp_path / "out"
    with pytest.raises(Stop):
        distill_bitdelta(finetune_pair.base, finetune_pair.finetune, deltas.row,
                         [finetune_pair.python.train], out, config=QUICK, progress=progress)
    assert len(forwards) == models_run  # nothing ran past the point
    assert list(tmp_path.iterdir()) == []  # neither output nor teacher file is left


def test_a_teacher_file_the_disk_cannot_hold_is_refused_before_a_byte(tmp_path: Path) -> None:
    shape = (4, 64, 256)
    batch_bytes = 4 * 64 * 256 * 2
    steps = shutil.disk_usage(tmp_path).free // batch_bytes + 1
    with pytest.raises(ScratchDiskFull) as caught, \
            teacher_file(tmp_path, shape, "float16", steps):
        pass
    assert caught.value.needed == steps * batch_bytes
    assert caught.value.needed > caught.value.free
    assert str(tmp_path) in caught.value.detail
    assert f"{steps * batch_bytes:,} bytes" in caught.value.detail
    assert list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_while_writing_is_scratch_disk_full() -> None:
    with io.FileIO("/dev/full", "w") as file:  # every write fails with ENOSPC
        logits = TeacherLogits(file, Path("/dev/full"), (2, 3, 5), torch.float16)
        with pytest.raises(ScratchDiskFull, match="ran out of space in /dev"):
            logits.append(torch.zeros(2, 3, 5), "batch 1")
