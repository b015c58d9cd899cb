"""Real adapters of every PEFT type, made by peft on the tiny Llama (tests/models.py).

Each is saved by `save_pretrained` unchanged, with the logits its in-memory model gives
on `PROBE` (the "unpushed" answer a loaded copy must give back). Trainable weights are
moved off peft's identity init, so that an adapter that loads wrong changes the logits.
`corrupt` makes the wrong-shape and wrong-name variants the registry must refuse.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PROBE = torch.tensor([[5, 17, 42, 7, 88, 3]])
WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class MadeAdapter:
    label: str
    peft_type: str
    path: Path
    logits: torch.Tensor  # the in-memory peft model's logits on PROBE


def _configs() -> dict[str, Callable[[], Any]]:
    import peft

    attn = ["q_proj", "v_proj"]
    lm = {"task_type": "CAUSAL_LM"}
    return {
        "lora": lambda: peft.LoraConfig(r=4, target_modules=attn, **lm),
        "dora": lambda: peft.LoraConfig(r=4, target_modules=attn, use_dora=True, **lm),
        "rslora": lambda: peft.LoraConfig(r=4, target_modules=attn, use_rslora=True,
                                          modules_to_save=["lm_head"], **lm),
        "adalora": lambda: peft.AdaLoraConfig(init_r=6, target_r=2, tinit=1, tfinal=1,
                                              deltaT=1, total_step=5, target_modules=attn, **lm),
        "vera": lambda: peft.VeraConfig(r=8, target_modules=attn, **lm),
        "vera-prng": lambda: peft.VeraConfig(r=8, target_modules=attn, save_projection=False,
                                             **lm),
        "ia3": lambda: peft.IA3Config(target_modules=["k_proj", "v_proj", "down_proj"],
                                      feedforward_modules=["down_proj"], **lm),
        "loha": lambda: peft.LoHaConfig(r=4, target_modules=attn, **lm),
        "lokr": lambda: peft.LoKrConfig(r=4, target_modules=attn, **lm),
        "oft": lambda: peft.OFTConfig(r=0, oft_block_size=8, target_modules=attn, **lm),
        "prompt": lambda: peft.PromptTuningConfig(num_virtual_tokens=5, **lm),
        "p-tuning": lambda: peft.PromptEncoderConfig(num_virtual_tokens=5,
                                                     encoder_hidden_size=16, **lm),
        "prefix": lambda: peft.PrefixTuningConfig(num_virtual_tokens=5, **lm),
    }


LABELS = ("lora", "dora", "rslora", "adalora", "vera", "vera-prng", "ia3", "loha", "lokr",
          "oft", "prompt", "p-tuning", "prefix")


def make_peft_adapter(base: Path, label: str, out: Path) -> MadeAdapter:
    # peft warns about choices these configs make on purpose (VeRA without saved
    # projections, prompt tuning's inits); the suite turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _make(base, label, out)


def _make(base: Path, label: str, out: Path) -> MadeAdapter:
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(7)
    model = LlamaForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, _configs()[label]())
    if label == "adalora":
        _train_adalora(peft_model)  # prunes ranks: a real rank_pattern in the config
    else:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if param.requires_grad and "lm_head" not in name:
                    param.add_(0.05 * torch.randn_like(param))
    peft_model.eval()
    with torch.no_grad():
        logits = peft_model(input_ids=PROBE).logits
    peft_model.save_pretrained(out)
    peft_type = json.loads((out / "adapter_config.json").read_text())["peft_type"]
    return MadeAdapter(label, peft_type, out, logits)


def _train_adalora(peft_model: Any) -> None:
    optimizer = torch.optim.SGD(peft_model.parameters(), lr=0.1)
    rows = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    for step in range(5):
        peft_model(input_ids=rows, labels=rows).loss.backward()
        optimizer.step()
        peft_model.base_model.update_and_allocate(step)
        optimizer.zero_grad()


def load_logits(base: Path, adapter: Path) -> torch.Tensor:
    """Logits on PROBE of the base with the adapter at `adapter` loaded by peft."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), adapter)
    model.eval()
    with torch.no_grad():
        return model(input_ids=PROBE).logits


def corrupt(made: MadeAdapter, out: Path, how: str) -> str:
    """A copy of the adapter with one tensor of the wrong shape (`how="shape"`) or under
    a wrong name (`"name"`); returns the name the refusal must mention."""
    shutil.copytree(made.path, out)
    tensors = load_file(out / WEIGHTS)
    keys = [k for k in sorted(tensors) if k not in ("base_model.vera_A", "base_model.vera_B")]
    if how == "name":  # a tensor of an adapted module, or the one prompt tensor
        keys = [k for k in keys if "_proj." in k] or keys
    key = keys[0]
    value = tensors.pop(key)
    if how == "shape":
        grown = torch.zeros((value.shape[0] + 1, *value.shape[1:]), dtype=value.dtype)
        tensors[key] = grown
        named = key.removeprefix("base_model.model.").rsplit(".", 1)[0]
    elif key == "prompt_embeddings":
        tensors["prompt_embedding"] = value
        named = "prompt_embedding"
    else:
        # another module: one the base does not have
        tensors[key.replace("_proj.", "_projx.")] = value
        named = key.removeprefix("base_model.model.").split("_proj.")[0] + "_projx"
    save_file(tensors, out / WEIGHTS, metadata={"format": "pt"})
    return named
