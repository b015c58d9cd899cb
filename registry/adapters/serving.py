"""An adapter's PEFT record and where it can be served, as its JSON and pages show them."""

from __future__ import annotations

from typing import Any

from compress.peft import servability
from registry.adapters.rows import AdapterRow
from registry.tables import Adapter, AdapterKind, Status

PEFT_KEY = "peft"  # where the record lives in the adapter's params


def peft_record(adapter: Adapter | AdapterRow) -> dict[str, Any] | None:
    """The PEFT record kept at finalize; LoRA adapters finalized before records existed
    get the one their params imply (peft_type LORA)."""
    if adapter.kind is AdapterKind.BITDELTA or adapter.status is not Status.READY:
        return None
    record = (adapter.params or {}).get(PEFT_KEY)
    if isinstance(record, dict):
        return record
    params = adapter.params or {}
    ranks = [r for r in params.get("ranks") or [] if isinstance(r, int)]
    return {"peft_type": "LORA", "validated": True, "rank": max(ranks, default=0),
            "ranks": ranks, "target_modules": params.get("target_modules"),
            "modules_to_save": [], "use_dora": False, "use_rslora": False,
            "saved_tensors": params.get("saved_tensors") or []}


def adapter_serving(adapter: Adapter | AdapterRow,
                    record: dict[str, Any] | None) -> dict[str, Any]:
    """`record`: the adapter's `peft_record`."""
    if adapter.status is not Status.READY:
        return {}
    return servability(adapter.kind.value, record)
