"""The evaluation table: loss, perplexity and gain kept per data set and model.

From an evaluation read from JSON (`QualityReport.to_dict()`), so that `deltahub evaluate` (a
report just measured) and `deltahub show` (an adapter's stored quality, on a client
without torch) print the same table.
"""

from __future__ import annotations

from registry.adapters.quality import Evaluation
from registry.cli.console import print_table

_COLUMNS = ["data", "model", "loss (nats/token)", "perplexity", "gain kept"]


def print_evaluation(title: str, evaluation: Evaluation) -> None:
    rows: list[list[object]] = []
    kind = evaluation.compressed_kind or "compressed"
    for data_set in evaluation.datasets:
        kept = data_set.gain_kept
        for model, score, gain in (("base", data_set.base, 0.0),
                                   ("fine-tune", data_set.finetune, 1.0),
                                   (kind, data_set.compressed, kept)):
            rows.append([data_set.name, model, score.loss, score.perplexity,
                         "n/a (no gain)" if kept is None else gain])
    print_table(title, _COLUMNS, rows, fold=True)
