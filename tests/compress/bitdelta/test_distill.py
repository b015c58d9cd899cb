"""Scale distillation on the real tiny fine-tune: only α changes, deterministically, safely."""

from __future__ import annotations

import json
import shutil
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from compress.bitdelta import (
    DistillConfig,
    InvalidDelta,
    ScaleMode,
    distill_bitdelta,
    distill_models,
    inspect_bitdelta,
)
from compress.bitdelta.distill_logits import teacher_file
from compress.bitdelta.distill_models import build_student
from compress.bitdelta.format import FORMAT_VERSION, SCALE_SUFFIX
from compress.errors import InvalidParameter
from compress.quality import InvalidDataset, MissingTokenizer, NonFiniteLoss
from compress.tensorio import Checkpoint
from tests.compress.bitdelta.distill_helpers import (
    QUICK_STEPS,
    Deltas,
    digests,
    make_deltas,
)
from tests.compress.helpers import nothing_written
from tests.finetune import FinetunePair

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = DistillConfig(steps=QUICK_STEPS, lr=1e-3, batch_size=2, seq_len=32)


@pytest.fixture(scope="module")
def deltas(finetune_pair: FinetunePair,
           tmp_path_factory: pytest.TempPathFactory) -> Deltas:
    return make_deltas(finetune_pair, tmp_path_factory.mktemp("distill-deltas"))


def _distill(pair: FinetunePair, delta: Path, out: Path, config: DistillConfig = QUICK,
             data: list[Path] | None = None, **kwargs: Any) -> Any:
    return distill_bitdelta(pair.base, pair.finetune, delta,
                            [pair.python.train] if data is None else data, out, config=config,
                            **kwargs)


@pytest.mark.parametrize("mode", list(ScaleMode), ids=str)
def test_only_alpha_changes_and_everything_else_is_bit_identical(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path,
        mode: ScaleMode) -> None:
    pair, delta = finetune_pair, deltas.of(mode)
    before = {d: digests(d) for d in (pair.base, pair.finetune, delta)}
    out = tmp_path / "distilled"
    report = _distill(pair, delta, out)
    assert {d: digests(d) for d in before} == before  # inputs untouched
    with Checkpoint.open(delta) as old, Checkpoint.open(out) as new, \
            Checkpoint.open(pair.base) as base:
        assert old.manifest.names == new.manifest.names
        assert new.filenames == old.filenames
        summary = inspect_bitdelta(new.headers, None, base.manifest)  # still a valid delta
        assert summary.scale_mode is mode
        changed = []
        for name in old.manifest.names:
            a, b = old.tensor(name), new.tensor(name)
            assert a.dtype == b.dtype
            assert a.shape == b.shape
            if name.endswith(SCALE_SUFFIX):
                changed.append(not torch.equal(a, b))
            else:
                assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), name
        assert all(changed)  # every α moved
        assert len(changed) == report.trained_scales == 14
        meta = new.metadata
        assert meta["format_version"] == FORMAT_VERSION
        assert {k: v for k, v in meta.items() if k != "distillation"} == old.metadata
        assert json.loads(meta["distillation"])["steps"] == QUICK_STEPS
        assert new.config == old.config


def test_report_json_gains_a_distillation_section_and_a_plot(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path) -> None:
    out = tmp_path / "distilled"
    report = _distill(finetune_pair, deltas.row, out)
    saved = json.loads((out / "report.json").read_text())
    original = json.loads((deltas.row / "report.json").read_text())
    assert {k: v for k, v in saved.items() if k != "distillation"} == original
    section = saved["distillation"]
    assert section == json.loads(json.dumps(report.to_dict()))
    assert section["steps"] == QUICK_STEPS
    assert len(section["losses"]) == QUICK_STEPS
    assert section["lr"] == QUICK.lr
    assert section["data"] == ["python_train.safetensors"]
    assert section["calibration_rows"] == QUICK_STEPS * QUICK.batch_size
    assert section["calibration"][0]["seq_len"] == 32  # 64-token rows cut to seq_len
    assert section["final_loss"] < section["initial_loss"]
    assert section["resident_bytes"] > 0
    assert section["peak_rss_bytes"] >= section["resident_bytes"]
    assert (out / "distill_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "delta.safetensors", "distill_loss.png", "report.json"]


def test_the_student_trains_alpha_and_nothing_else(
        finetune_pair: FinetunePair, deltas: Deltas) -> None:
    pair = finetune_pair
    with Checkpoint.open(pair.base) as base, Checkpoint.open(deltas.row) as delta:
        summary = inspect_bitdelta(delta.headers, None, base.manifest)
        model, layers = build_student(base, delta, summary, dtype=torch.float32,
                                      device=torch.device("cpu"))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{module}.scale" for module in summary.compressed}
    assert set(layers) == set(summary.compressed)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, use_cache=False).logits.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert (parameter.grad is not None) == (name in trainable), name


def test_one_model_is_alive_at_a_time(finetune_pair: FinetunePair, deltas: Deltas,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[weakref.ref[torch.nn.Module]] = []
    real = distill_models.build_model

    def tracked(*args: Any, **kwargs: Any) -> torch.nn.Module:
        assert all(ref() is None for ref in built), "a model was still alive"
        model = real(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    monkeypatch.setattr(distill_models, "build_model", tracked)
    _distill(finetune_pair, deltas.row, tmp_path / "distilled")
    assert len(built) == 2  # the fine-tune, then the student


def test_the_same_seed_gives_the_same_alpha(finetune_pair: FinetunePair, deltas: Deltas,
                                            tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "other-seed"]
    configs = [QUICK, QUICK, DistillConfig(**{**QUICK.__dict__, "seed": 1})]
    reports = [_distill(finetune_pair, deltas.row, out, config)
               for out, config in zip(runs, configs, strict=True)]
    first, second, other = ((out / "delta.safetensors").read_bytes() for out in runs)
    assert first == second
    assert reports[0].losses == reports[1].losses
    assert first != other  # the seed picks the batches, and the batches matter


def test_a_diverging_loss_stops_with_nothing_written(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path) -> None:
    out = tmp_path / "distilled"
    with pytest.raises(NonFiniteLoss, match="lower the learning rate"):
        _distill(finetune_pair, deltas.row, out, DistillConfig(**{**QUICK.__dict__,
                                                                  "lr": 1e30}))
    assert nothing_written(out)
    assert [p.name for p in tmp_path.iterdir()] == []  # no teacher scratch file left either


def test_bad_calibration_data_is_refused_before_any_model_runs(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path) -> None:
    out = tmp_path / "distilled"
    floats = tmp_path / "floats.safetensors"
    save_file({"input_ids": torch.rand(4, 8)}, floats)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    too_big = tmp_path / "ids.safetensors"
    save_file({"input_ids": torch.full((4, 8), 300, dtype=torch.int64)}, too_big)
    for bad, message in ((floats, "integers"), (csv, "unknown kind"), (too_big, "vocabulary")):
        with pytest.raises(InvalidDataset, match=message):
            _distill(finetune_pair, deltas.row, out, data=[bad])
        assert nothing_written(out)
    with pytest.raises(InvalidParameter, match="at least one"):
        _distill(finetune_pair, deltas.row, out, data=[])
    with pytest.raises(InvalidParameter, match="lr must be"):
        _distill(finetune_pair, deltas.row, out, DistillConfig(lr=-1.0))
    assert nothing_written(out)


def test_text_needs_a_tokenizer(finetune_pair: FinetunePair, deltas: Deltas,
                                tmp_path: Path) -> None:
    pair = finetune_pair
    bare = {}
    for name in ("base", "finetune"):
        bare[name] = tmp_path / name
        shutil.copytree(getattr(pair, name), bare[name],
                        ignore=shutil.ignore_patterns("tokenizer.json"))
    out = tmp_path / "distilled"
    with pytest.raises(MissingTokenizer, match=r"tokenizer\.json") as refused:
        distill_bitdelta(bare["base"], bare["finetune"], deltas.row, [pair.prose_jsonl], out,
                         config=QUICK)
    assert "pre-tokenized" in refused.value.detail
    assert nothing_written(out)
    # With the models' own tokenizer.json, the same text calibrates (byte-level: 1 id a byte).
    report = _distill(pair, deltas.row, out, data=[pair.prose_jsonl, pair.python.train])
    assert [s.name for s in report.calibration] == ["prose_heldout.jsonl",
                                                    "python_train.safetensors"]
    assert {s.seq_len for s in report.calibration} == {32}


def test_a_delta_of_another_layout_is_refused(finetune_pair: FinetunePair,
                                              deltas: Deltas, tmp_path: Path) -> None:
    out = tmp_path / "distilled"
    with pytest.raises(InvalidDelta):
        distill_bitdelta(finetune_pair.base, finetune_pair.finetune,
                         finetune_pair.finetune, [finetune_pair.python.train], out, config=QUICK)
    assert nothing_written(out)


def test_progress_counts_teacher_batches_then_steps(
        finetune_pair: FinetunePair, deltas: Deltas, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    _distill(finetune_pair, deltas.row, tmp_path / "d",
             progress=lambda done, total, item: calls.append((done, total, item)))
    done = [d for d, _, _ in calls]
    assert done == sorted(done)  # tensor reads and probe batches report without advancing
    assert sorted(set(done) - {0}) == list(range(1, 2 * QUICK_STEPS + 1))
    assert {total for _, total, _ in calls} == {2 * QUICK_STEPS}
    advancing = [item for (d, _, item), before in zip(calls, [0, *done[:-1]], strict=True)
                 if d != before]
    assert "fine-tune logits" in advancing[0]
    assert advancing[-1].startswith(f"step {QUICK_STEPS}/{QUICK_STEPS}: loss")


def test_teacher_logits_round_trip_and_refuse_non_finite(tmp_path: Path) -> None:
    shape = (2, 3, 5)
    with teacher_file(tmp_path, shape, "float16", steps=3) as store:
        batches = [torch.randn(shape) * 10 for _ in range(3)]
        for i, batch in enumerate(batches):
            store.append(batch, f"batch {i}")
        assert store.nbytes == 3 * 2 * 30
        for i in (2, 0, 1):
            assert torch.equal(store.read(i), batches[i].half())
        with pytest.raises(NonFiniteLoss, match="NaN or Inf"):
            store.append(torch.full(shape, float("nan")), "a NaN batch")
        with pytest.raises(NonFiniteLoss, match="float32"):
            store.append(torch.full(shape, 1e6), "a huge batch")  # overflows float16
        path = store.path
        assert path.exists()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
