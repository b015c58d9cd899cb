"""Tiny real models for the registry tests: a base, a fine-tune and a peft LoRA adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.models import TINY_LLAMA, make_finetune, make_tiny_llama


@dataclass(frozen=True)
class TinyModels:
    base: Path
    finetune: Path
    lora: Path  # written by peft's save_pretrained, unchanged
    other_base: Path  # a Llama with other sizes, which the LoRA does not fit


def _peft_lora(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"v_proj": 2}, task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # peft initialises B to zero; make the adapter non-trivial
            torch.nn.init.normal_(param, std=0.02)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny-models")
    base = make_tiny_llama(root / "base")
    other = root / "other-base"
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "intermediate_size": 64})).save_pretrained(
        other)
    return TinyModels(base=base, finetune=make_finetune(base, root / "finetune"),
                      lora=_peft_lora(base, root / "lora"), other_base=other)


@pytest.fixture(autouse=True)
def _no_dns_for_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook targets resolve address literals and localhost only: a test (or a fuzzer
    inventing URLs) never sends a DNS query off this machine."""
    import ipaddress
    import socket

    from registry.webhooks import target

    def resolve(host: str, port: int) -> list[target.IPAddress]:
        if host == "localhost":
            return [ipaddress.ip_address("127.0.0.1")]
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no DNS in tests") from None

    monkeypatch.setattr(target, "resolve", resolve)
