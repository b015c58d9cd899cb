"""The evaluation table: loss, perplexity and gain kept per data set and model.

From an evaluation read from JSON (`QualityReport.to_dict()`), so that `deltahub evaluate` (a
report just measured) and `deltahub show` (an adapter's stored quality, on a client
without torch) print the same table.
"""

from __future__ import annotations

from registry.adapters.quality import EvaluatedSet, Evaluation
from registry.cli.console import print_table, stdout

# Loss in nats per token (the note says so); the fine-tune's direction is one word, its
# size is the base and fine-tune rows' difference: the table fits 80 columns.
_COLUMNS = ["data", "model", "loss", "perplexity", "fine-tune", "gain kept"]
_NOTE = ("loss: nats per token. gain kept: the share of the fine-tune's change in loss "
         "kept (1 as the fine-tune, 0 as the base); where the fine-tune regressed, higher "
         "keeps more of the regression. "
         "docs/architecture.md, \"Gain kept\".")


def print_evaluation(title: str, evaluation: Evaluation) -> None:
    rows: list[list[object]] = []
    kind = evaluation.compressed_kind or "compressed"
    for data_set in evaluation.datasets:
        kept = data_set.gain_kept_shown
        change = _change(data_set)
        for model, score, gain in (("base", data_set.base, 0.0),
                                   ("fine-tune", data_set.finetune, 1.0),
                                   (kind, data_set.compressed, kept)):
            rows.append([data_set.name, model, score.loss, score.perplexity, change,
                         "n/a (no change)" if kept is None else gain])
    print_table(title, _COLUMNS, rows, fold=True)
    stdout.print(_NOTE, highlight=False)


def _change(data_set: EvaluatedSet) -> str:
    """Which way the fine-tune moved the loss: where it regressed, a higher gain kept keeps
    more of the regression (docs/architecture.md, "Gain kept")."""
    return data_set.change or "?"
