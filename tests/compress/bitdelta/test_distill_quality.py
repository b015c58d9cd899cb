"""Distillation keeps more of the real fine-tune's gain than BitDelta alone, on held-out Python.

The fine-tune (tests/finetune.py) learned Python; the compressed model is scored by
`evaluate_quality` on held-out stdlib files no model trained on. Calibration is the
fine-tune's own domain: its Python training rows (never the held-out files).

Settings: the paper's lr of 1e-4 is tuned for 7B models; on this 2-layer model 200 such
steps move α too little (gain kept 0.84 → 0.94 measured), so the test trains at 1e-3 for
500 steps of 8 × 64 tokens (0.84 → 0.96 measured, about 12 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.bitdelta import DistillConfig, distill_bitdelta
from tests.compress.quality.helpers import evaluate
from tests.finetune import FinetunePair

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_distilled_alpha_keeps_clearly_more_of_the_gain(
        finetune_pair: FinetunePair, tmp_path: Path) -> None:
    from compress.bitdelta import compress_bitdelta

    pair = finetune_pair
    plain, distilled = tmp_path / "bitdelta", tmp_path / "distilled"
    compress_bitdelta(pair.base, pair.finetune, plain, workers=1)
    report = distill_bitdelta(pair.base, pair.finetune, plain, [pair.python.train], distilled,
                              config=DistillConfig(steps=500, lr=1e-3, batch_size=8))
    before = evaluate(pair, plain).datasets[0]
    after = evaluate(pair, distilled).datasets[0]
    assert before.name == after.name == "python_heldout.safetensors"
    assert before.gain_kept is not None
    assert after.gain_kept is not None
    assert before.gain_kept < 0.9  # BitDelta alone loses a clear part of the gain
    assert after.gain_kept >= 0.95
    assert after.gain_kept > before.gain_kept + 0.05
    assert report.final_loss < 0.5 * report.initial_loss
