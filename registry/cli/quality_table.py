"""The evaluation table: loss, perplexity and gain kept per data set and model.

From an evaluation as JSON (`QualityReport.to_dict()`), so that `deltahub evaluate` (a
report just measured) and `deltahub show` (an adapter's stored quality, on a client
without torch) print the same table.
"""

from __future__ import annotations

from typing import Any

from registry.cli.console import print_table

_COLUMNS = ["data", "model", "loss (nats/token)", "perplexity", "gain kept"]


def print_evaluation(title: str, evaluation: dict[str, Any]) -> None:
    rows: list[list[object]] = []
    kind = evaluation.get("compressed_kind") or "compressed"
    for data_set in evaluation.get("datasets") or []:
        kept = data_set.get("gain_kept")
        for model, key, gain in (("base", "base", 0.0), ("fine-tune", "finetune", 1.0),
                                 (kind, "compressed", kept)):
            score = data_set.get(key) or {}
            rows.append([data_set.get("name"), model, score.get("loss"),
                         score.get("perplexity"), "n/a (no gain)" if kept is None else gain])
    print_table(title, _COLUMNS, rows, fold=True)
