"""Check a PEFT adapter of any type against its base; the record the registry keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compress.errors import IncompatibleModels, InvalidDelta
from compress.filenames import ADAPTER_WEIGHTS
from compress.lora.format import check_lora_against_base, parse_adapter_config
from compress.peft.config import LORA, PROMPT_TYPES, adapter_kind, name_list, peft_type_of
from compress.peft.modules import (
    MODULE_TYPES,
    VERA_SHARED,
    Layer,
    base_layer,
    check_module,
    check_vera_shared,
    split_key,
    strip_prefix,
)
from compress.peft.prompts import check_prompt
from compress.tensorio import FLOAT_DTYPES, Manifest, TensorEntry

NOT_VALIDATED = ("deltahub does not know peft_type {t!r}: its files were kept as pushed, "
                 "and its tensors were NOT checked against the base")
# LoRA options vLLM refuses (vllm/lora/peft_helper.py); kept in the record when set.
_LORA_FLAGS = ("use_dora", "use_rslora", "lora_bias", "alora_invocation_tokens",
               "layer_replication", "use_qalora", "use_bdlora")


@dataclass(frozen=True)
class PeftRecord:
    """What the registry keeps of a PEFT adapter: `params` (its summary) and `peft` (its
    type and the options that change how it is served)."""

    kind: str
    params: dict[str, Any]
    peft: dict[str, Any] = field(default_factory=dict)


def check_peft_against_base(raw: Any, tensors: Mapping[str, TensorEntry],
                            base: Manifest) -> PeftRecord:
    """Check every tensor of the adapter against the config and the base; name each
    mismatch (IncompatibleModels) or refuse a malformed config (InvalidDelta)."""
    peft_type = peft_type_of(raw)
    common = _common_options(raw, peft_type)
    if peft_type == LORA:
        return _lora(raw, tensors, base, common)
    if peft_type in PROMPT_TYPES:
        problems: list[str] = []
        options = check_prompt(peft_type, raw, tensors, base, problems)
        _raise(peft_type, problems)
        return PeftRecord("peft", _params(tensors, options), common | options)
    if peft_type in MODULE_TYPES:
        return _modules(peft_type, raw, tensors, base, common)
    common.update(validated=False, note=NOT_VALIDATED.format(t=peft_type))
    return PeftRecord(adapter_kind(peft_type), _params(tensors, {}), common)


def _common_options(raw: dict[str, Any], peft_type: str) -> dict[str, Any]:
    saved = raw.get("modules_to_save") or []
    if not isinstance(saved, list) or not all(isinstance(s, str) for s in saved):
        raise InvalidDelta("adapter_config.json: modules_to_save must be a list of names")
    task = raw.get("task_type")
    return {"peft_type": peft_type, "validated": True,
            "task_type": task if isinstance(task, str) else None,
            "target_modules": name_list(raw, "target_modules"), "modules_to_save": saved}


def _lora(raw: dict[str, Any], tensors: Mapping[str, TensorEntry], base: Manifest,
          common: dict[str, Any]) -> PeftRecord:
    config = parse_adapter_config(raw)
    summary = check_lora_against_base(config, tensors, base, dora=bool(raw.get("use_dora")))
    params = summary.to_params()
    options = common | {"rank": max(summary.ranks.values()), "ranks": params["ranks"],
                        "lora_alpha": config.lora_alpha,
                        "bias": raw.get("bias") if isinstance(raw.get("bias"), str) else "none"}
    for flag in _LORA_FLAGS:
        options[flag] = bool(raw.get(flag))
    init = raw.get("init_lora_weights", True)
    options["init_lora_weights"] = init if isinstance(init, bool | str) else True
    return PeftRecord("lora", params, options)


def _modules(peft_type: str, raw: dict[str, Any], tensors: Mapping[str, TensorEntry],
             base: Manifest, common: dict[str, Any]) -> PeftRecord:
    problems: list[str] = []
    grouped: dict[str, dict[str, TensorEntry]] = {}
    saved: list[str] = []
    for key, entry in sorted(tensors.items()):
        if entry.dtype not in FLOAT_DTYPES:
            problems.append(f"{key!r} has dtype {entry.dtype}; adapter weights must be floats")
        elif peft_type == "VERA" and key in VERA_SHARED:
            continue
        elif (name := strip_prefix(key)) is None:
            problems.append(f"{key!r} does not start with 'base_model.model.' (not a peft "
                            f"key of a {peft_type} adapter)")
        elif (split := split_key(peft_type, name)) is not None:
            grouped.setdefault(split[0], {})[split[1]] = entry
        else:
            # modules_to_save: whole tensors of the base, saved as they were trained.
            _check_saved(peft_type, name.replace(".base_layer.", "."), entry, base, problems)
            saved.append(name)
    fan = bool(raw.get("fan_in_fan_out"))
    layers: list[Layer] = []
    ranks: dict[str, int] = {}
    for module, found in grouped.items():
        layer = base_layer(module, base, fan, problems)
        if layer is not None:
            layers.append(layer)
            if (rank := check_module(peft_type, layer, found, raw, problems)) is not None:
                ranks[module] = rank
    if peft_type == "VERA":
        check_vera_shared(tensors, layers, raw, problems)
    _raise(peft_type, problems)
    if not ranks:
        raise InvalidDelta(f"{ADAPTER_WEIGHTS} has no {peft_type} tensors")
    distinct = sorted(set(ranks.values()))
    options: dict[str, Any] = {"module_count": len(ranks)}
    if peft_type != "IA3":
        options |= {"rank": distinct[-1], "ranks": distinct}
    if peft_type == "VERA":
        options["projections_saved"] = VERA_SHARED[0] in tensors
    if peft_type == "IA3":
        options["feedforward_modules"] = name_list(raw, "feedforward_modules")
    return PeftRecord("peft", _params(tensors, options) | {"saved_tensors": saved},
                      common | options)


def _check_saved(peft_type: str, name: str, entry: TensorEntry, base: Manifest,
                 problems: list[str]) -> None:
    spec = base.get(name)
    if spec is None:
        problems.append(f"{name!r} is neither a {peft_type} tensor nor a tensor of the base")
    elif spec.shape != entry.shape:
        problems.append(f"{name!r} has shape {list(entry.shape)}, base has {list(spec.shape)}")


def _params(tensors: Mapping[str, TensorEntry], options: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in options.items() if k in ("rank", "ranks", "module_count",
                                                          "num_virtual_tokens")},
            "tensor_count": len(tensors),
            "parameter_count": sum(e.numel for e in tensors.values())}


def _raise(peft_type: str, problems: list[str]) -> None:
    if problems:
        raise IncompatibleModels(f"the {peft_type} adapter", problems)
