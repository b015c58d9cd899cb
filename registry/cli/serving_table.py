"""`deltahub show`'s "where it can be served" table: the adapter's `serving` record."""

from __future__ import annotations

from typing import Any

from registry.cli.console import print_table

_ENGINES = (("vllm", "vLLM"), ("peft", "PEFT / transformers"), ("deltahub", "deltahub engine"))


def print_serving(peft: dict[str, Any] | None, serving: dict[str, Any]) -> None:
    rows: list[list[object]] = []
    if peft:
        note = "" if peft.get("validated", True) else " (NOT validated: unknown type)"
        rows.append(["PEFT type", f"{peft.get('peft_type')}{note}"])
    for key, label in _ENGINES:
        verdict = serving.get(key) or {}
        if verdict.get("loads"):
            extra = verdict.get("max_lora_rank")
            rows.append([label, "loads it as is" + (
                f" (--max-lora-rank {extra} or more)" if extra else "")])
        else:
            rows.append([label, "no: " + "; ".join(verdict.get("why") or [])])
    if serving.get("otherwise"):
        rows.append(["otherwise", serving["otherwise"]])
    print_table("where it can be served", ["engine", "verdict"], rows, fold=True)
