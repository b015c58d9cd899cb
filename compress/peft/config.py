"""The fields of `adapter_config.json` each PEFT type's checks rely on."""

from __future__ import annotations

from typing import Any

from compress.errors import InvalidDelta
from compress.filenames import ADAPTER_CONFIG
from compress.lora.format import is_positive_int

LORA = "LORA"
# The types whose tensors deltahub checks name by name; any other type is kept as
# kind `peft`, marked not validated.
VALIDATED_TYPES = ("LORA", "ADALORA", "VERA", "IA3", "LOHA", "LOKR", "OFT",
                   "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")
PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")
_MAX_TYPE_CHARS = 64


def peft_type_of(raw: Any) -> str:
    """The `peft_type` of an `adapter_config.json`, checked to be a short name."""
    if not isinstance(raw, dict):
        raise InvalidDelta(f"{ADAPTER_CONFIG} must hold a JSON object")
    value = raw.get("peft_type")
    if not isinstance(value, str) or not value or len(value) > _MAX_TYPE_CHARS \
            or not value.replace("_", "").isalnum():
        raise InvalidDelta(f"{ADAPTER_CONFIG} has peft_type {value!r}; peft writes a name "
                           "such as \"LORA\" or \"IA3\"")
    return value


def adapter_kind(peft_type: str) -> str:
    """`lora` for every LoRA variant peft saves as peft_type LORA (DoRA, rsLoRA included),
    `peft` for every other type."""
    return "lora" if peft_type == LORA else "peft"


def positive_int(raw: dict[str, Any], key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if not is_positive_int(value):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: {key} must be a positive integer, got {value!r}")
    assert isinstance(value, int)
    return value


def name_list(raw: dict[str, Any], key: str) -> list[str] | str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise InvalidDelta(f"{ADAPTER_CONFIG}: {key} must be a list of names or a regex")
