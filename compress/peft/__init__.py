"""Every PEFT adapter type `peft.save_pretrained` writes, checked from its
`adapter_config.json` and safetensors header alone (no weights read, no pickle).

`adapter_kind` maps a `peft_type` to the registry's kind (`lora` or `peft`);
`check_peft_against_base` checks each type's tensor names and shapes against the base's
manifest and returns the record the registry keeps (`PeftRecord`); `servability` says
which engines load the adapter as is. See docs/codecs.md, "PEFT adapter types".
"""

from compress.peft.checks import PeftRecord, check_peft_against_base
from compress.peft.config import VALIDATED_TYPES, adapter_kind, peft_type_of
from compress.peft.serving import VLLM_DEFAULT_MAX_LORA_RANK, servability, vllm_refusals

__all__ = ["VALIDATED_TYPES", "VLLM_DEFAULT_MAX_LORA_RANK", "PeftRecord", "adapter_kind",
           "check_peft_against_base", "peft_type_of", "servability", "vllm_refusals"]
