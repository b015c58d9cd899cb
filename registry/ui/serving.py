"""The adapter page's "where it can be served" rows, from the adapter's serving record."""

from __future__ import annotations

from typing import Any

from registry.adapters.schemas import AdapterOut

_ENGINES = (("vllm", "vLLM"), ("peft", "PEFT / transformers"), ("deltahub", "deltahub engine"))


def serving_rows(adapter: AdapterOut) -> dict[str, Any]:
    """(engine, loads, detail) per engine, the advice otherwise, and the PEFT type."""
    serving = adapter.serving
    record = adapter.peft or {}
    rows = []
    for key, label in _ENGINES if serving else ():
        verdict = serving.get(key) or {}
        rank = verdict.get("max_lora_rank")
        detail = "; ".join(verdict.get("why") or []) or (
            f"--max-lora-rank {rank} or more (vLLM's default is 16)" if rank else "")
        rows.append((label, bool(verdict.get("loads")), detail))
    return {"rows": rows, "otherwise": serving.get("otherwise"),
            "peft_type": record.get("peft_type"), "validated": record.get("validated", True)}
