"""Where an adapter can be served as is, and what to do where it cannot.

The vLLM column mirrors vLLM's own checks (vllm/lora/peft_helper.py,
`PEFTHelper.validate_legal` and `_validate_features`): a LoRA (peft_type LORA) without
modules_to_save (but `classifier`/`score`), DoRA, lora_bias, a bias other than "none",
a base-changing init (PiSSA, OLoRA, CorDA, LoftQ), aLoRA, layer_replication, QALoRA or
BD-LoRA, and with its largest rank at most `--max-lora-rank` (16 unless set). rsLoRA
loads. PEFT/transformers loads every type peft saved; deltahub's own engine loads
BitDelta deltas. `deltahub merge` merges BitDelta deltas and every PEFT type that
changes weights (with peft's `merge_and_unload`; not prompt, p- or prefix tuning).
"""

from __future__ import annotations

from typing import Any

VLLM_DEFAULT_MAX_LORA_RANK = 16
# vLLM's MaxLoRARanks: the values --max-lora-rank takes.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_VLLM_SAVED_OK = ("classifier", "score")
_VLLM_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
_UNMERGEABLE = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")


def vllm_refusals(peft: dict[str, Any], max_lora_rank: int = VLLM_DEFAULT_MAX_LORA_RANK
                  ) -> list[str]:
    """Why vLLM would refuse this adapter (empty: it loads it), from its `peft` record."""
    if peft.get("peft_type") != "LORA":
        return [f"vLLM loads LoRA adapters only, not {peft.get('peft_type')}"]
    reasons = []
    unsupported = [m for m in peft.get("modules_to_save") or [] if m not in _VLLM_SAVED_OK]
    if unsupported:
        reasons.append(f"modules_to_save {', '.join(unsupported)} "
                       "(vLLM takes only classifier/score)")
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "LoRA bias (lora_bias)"),
                       ("alora_invocation_tokens", "Activated LoRA (aLoRA)"),
                       ("layer_replication", "layer_replication"), ("use_qalora", "QALoRA"),
                       ("use_bdlora", "block-diagonal LoRA (BD-LoRA)")):
        if peft.get(flag):
            reasons.append(f"{what} is not supported by vLLM")
    init = peft.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _VLLM_INITS:
        reasons.append(f"init_lora_weights={init!r} changes the base weights")
    if (peft.get("bias") or "none") != "none":
        reasons.append(f"bias={peft.get('bias')!r} (vLLM supports bias \"none\" only)")
    rank = int(peft.get("rank") or 0)
    if rank > max_lora_rank:
        reasons.append(f"rank {rank} is above vLLM's --max-lora-rank {max_lora_rank} "
                       f"(default {VLLM_DEFAULT_MAX_LORA_RANK}; start vLLM with "
                       f"--max-lora-rank {_next_rank(rank)})")
    return reasons


def _next_rank(rank: int) -> int | str:
    return next((r for r in VLLM_MAX_LORA_RANKS if r >= rank), "of at most 512: none fits")


def servability(kind: str, peft: dict[str, Any] | None) -> dict[str, Any]:
    """Per engine, whether it loads the adapter as is; and what to do otherwise."""
    if kind == "bitdelta":
        return {"vllm": {"loads": False, "why": ["a BitDelta delta is no LoRA"]},
                "peft": {"loads": False, "why": ["a BitDelta delta is no PEFT adapter"]},
                "deltahub": {"loads": True},
                "otherwise": "`deltahub merge BASE DELTA -o DIR` rebuilds the full model, "
                             "which any engine serves"}
    record = peft or {}
    peft_type = record.get("peft_type", "LORA")
    refusals = vllm_refusals(record) if record else []
    vllm: dict[str, Any] = {"loads": not refusals}
    if refusals:
        vllm["why"] = refusals
    else:
        rank = int(record.get("rank") or 0)
        vllm["max_lora_rank"] = max(VLLM_DEFAULT_MAX_LORA_RANK, rank)
    if peft_type in _UNMERGEABLE:
        otherwise = ("serve it with PEFT/transformers (PeftModel.from_pretrained); "
                     f"{peft_type} adds virtual tokens and cannot be merged into the weights")
    else:
        otherwise = ("`deltahub merge BASE ADAPTER -o DIR` merges it into the base "
                     "(peft's merge_and_unload) as a full model, which any engine serves")
    return {"vllm": vllm, "peft": {"loads": True},
            "deltahub": {"loads": False, "why": ["deltahub's engine serves BitDelta deltas"]},
            "otherwise": otherwise}
