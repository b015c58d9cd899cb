"""Which model names the plugin answers, and which registry adapters vLLM can serve.

A refusal is a sentence for vLLM's log (the request itself gets vLLM's 404): what the
adapter is, why vLLM cannot serve it, and what to do instead. The checks here read the
registry's record of the adapter, before anything is downloaded; vLLM's own check of
the downloaded `adapter_config.json` (plugin.py) comes after them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.names import NAME_PATTERN, is_id

# `name`, `name@version` or `name:alias`: the forms `GET /adapters/{ref}` resolves.
_REF = re.compile(rf"(?P<name>{NAME_PATTERN})(?:@[0-9]{{1,10}}|:{NAME_PATTERN})?")


def registry_ref(model: str) -> str | None:
    """The adapter reference a request's `model` spells, or None when it spells none.

    Ids (digits alone) are refused: a model name that is a number is more likely a typo
    than a wish for whichever adapter has that id.
    """
    match = _REF.fullmatch(model)
    if match is None or ".." in model or is_id(match["name"]):
        return None
    return model


def served_name(adapter: dict[str, Any]) -> str:
    """The name vLLM keeps the adapter under: its version, never an alias, so a moved
    alias is a new adapter to the engine (its own KV and prefix cache entries)."""
    return f"{adapter['name']}@{adapter['version']}"


@dataclass(frozen=True)
class Served:
    """What the engine serves the adapter on: the registry's name of its base, and the
    largest LoRA rank it was started for."""

    base: str
    max_lora_rank: int


def _not_ready(adapter: dict[str, Any], served: Served) -> str | None:
    if adapter["status"] != "ready":
        return "is a draft, not a finalized version; finalize the push first"
    return None


def _not_lora(adapter: dict[str, Any], served: Served) -> str | None:
    if adapter["kind"] == "peft":
        peft_type = (adapter.get("peft") or {}).get("peft_type", "PEFT")
        return (f"is a {peft_type} adapter (kind peft); vLLM serves LoRA adapters only: "
                f"{(adapter.get('serving') or {}).get('otherwise') or 'serve it with peft'}")
    if adapter["kind"] != "lora":
        return (f"is a {adapter['kind']} adapter; vLLM serves LoRA adapters only (BitDelta "
                "deltas: deltahub's own engine, or `deltahub merge` into a full model)")
    return None


def _other_base(adapter: dict[str, Any], served: Served) -> str | None:
    if adapter["base"] != served.base:
        return (f"is for the base {adapter['base']!r}, and this server runs {served.base!r}; "
                "ask the server of that base, or set DELTAHUB_VLLM_BASE if the registry "
                "names this server's base otherwise")
    return None


def _rank_too_high(adapter: dict[str, Any], served: Served) -> str | None:
    params = adapter.get("params") or {}
    rank = max([int(params.get("r") or 0), *(int(r) for r in params.get("ranks") or [])])
    if rank > served.max_lora_rank:
        return (f"has rank {rank}, above this server's --max-lora-rank "
                f"{served.max_lora_rank}; start vLLM with --max-lora-rank {rank} or more "
                "(and DELTAHUB_VLLM_MAX_LORA_RANK if it comes from a --config file), or push "
                "a lower-rank adapter")
    return None


def _saves_modules(adapter: dict[str, Any], served: Served) -> str | None:
    saved = (adapter.get("params") or {}).get("saved_tensors") or []
    if saved:
        shown = ", ".join(saved[:3]) + (f" and {len(saved) - 3} more" if len(saved) > 3 else "")
        return (f"carries whole tensors beside its LoRA factors ({shown}: modules_to_save or "
                "biases), which vLLM does not load, so it would serve another model; push "
                "the adapter without them (`deltahub extract-lora --targets-only`)")
    return None


def _dora(adapter: dict[str, Any], served: Served) -> str | None:
    if (adapter.get("peft") or {}).get("use_dora"):
        return ("is a DoRA adapter (use_dora), which vLLM does not load; merge it into the "
                "base (`deltahub merge BASE ADAPTER -o DIR`, peft's merge_and_unload()) "
                "and serve the merged model")
    return None


# In order: the first that applies is the reason given.
_CHECKS: tuple[Callable[[dict[str, Any], Served], str | None], ...] = (
    _not_ready, _not_lora, _other_base, _rank_too_high, _saves_modules, _dora)


def refusal(adapter: dict[str, Any], served: Served) -> str | None:
    """Why vLLM cannot serve this adapter (`GET /adapters/{ref}`'s answer), or None."""
    for check in _CHECKS:
        if (reason := check(adapter, served)) is not None:
            return reason
    return None
