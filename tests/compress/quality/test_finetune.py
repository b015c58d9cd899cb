"""The fine-tune the quality tests measure on is real: a gain on its domain, not on the other."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from compress.quality import QualityReport, TextTokenizer, load_eval_data, read_token_rows
from compress.tensorio import Checkpoint
from tests.finetune import PYTHON_HELDOUT, FinetunePair, Recipe, make_finetune_pair, python_corpus


def test_the_finetune_gains_on_heldout_python_and_not_on_prose(
        measured: dict[str, QualityReport]) -> None:
    python, prose = measured["bitdelta"].datasets
    python_gain = python.base.loss - python.finetune.loss
    prose_gain = prose.base.loss - prose.finetune.loss
    assert python_gain > 0.2  # nats per byte; about 0.4 measured
    assert python_gain > prose_gain + 0.2  # it learned Python, not text in general


def test_the_pair_is_two_models_compress_reads(finetune_pair: FinetunePair) -> None:
    with Checkpoint.open(finetune_pair.base) as base, \
            Checkpoint.open(finetune_pair.finetune) as finetune:
        assert base.manifest.digest() == finetune.manifest.digest()  # same layout and dtypes
        assert base.config is not None
        assert base.config["vocab_size"] == 256
        changed = [name for name in base.manifest.names
                   if not base.tensor(name).equal(finetune.tensor(name))]
        assert changed == base.manifest.names  # a full fine-tune moves every tensor


def test_text_splits_hold_exactly_the_pretokenized_rows(finetune_pair: FinetunePair) -> None:
    tokenizer = TextTokenizer.from_file(finetune_pair.base)
    seq_len = finetune_pair.recipe.seq_len
    for text, ids in ((finetune_pair.python_text, finetune_pair.python.heldout),
                      (finetune_pair.prose_jsonl, finetune_pair.prose.heldout)):
        rows = load_eval_data(text, tokenizer=tokenizer, seq_len=seq_len).rows
        assert rows.equal(read_token_rows(ids))
    sample = "déjà vu: 'ß' → ok\n"
    assert tokenizer.encode([sample]) == list(sample.encode())


def test_no_heldout_python_file_is_in_the_training_text() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    train, _ = python_corpus()
    for name in PYTHON_HELDOUT:
        assert (stdlib / name).read_text(encoding="utf-8") not in train, name


def test_the_recipe_is_deterministic(tmp_path: Path) -> None:
    quick = Recipe(pretrain_steps=3, finetune_steps=2, batch_size=2)
    first, second = (make_finetune_pair(tmp_path / name, quick) for name in ("a", "b"))
    for model in ("base", "finetune"):
        weights = [(getattr(pair, model) / "model.safetensors").read_bytes()
                   for pair in (first, second)]
        assert weights[0] == weights[1], model
    assert first.python.heldout.read_bytes() == second.python.heldout.read_bytes()
