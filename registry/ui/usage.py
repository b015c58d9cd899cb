"""How to use an adapter version: the commands and code an adapter page shows.

Every value comes from the registry's own records (names are checked against the name
rule when stored), and the templates escape them anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.adapters.schemas import AdapterOut

# PEFT types that add virtual tokens: nothing to merge into the weights.
_UNMERGEABLE = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")


@dataclass(frozen=True)
class Snippet:
    title: str
    language: str
    code: str


def snippets(adapter: AdapterOut, server_url: str) -> list[Snippet]:
    ref = f"{adapter.name}@{adapter.version}"
    folder = f"./{adapter.name}-v{adapter.version}"
    pull = Snippet("Download with the CLI", "shell",
                   f"export DELTAHUB_URL={server_url}\n"
                   "export DELTAHUB_TOKEN=<a token with read>\n"
                   f"deltahub pull {ref} -o {folder}")
    base = f"./{adapter.base}"
    fetch_base = f"deltahub pull {adapter.base} --model -o {base}"
    if adapter.kind in ("lora", "peft"):
        code = (f"# {fetch_base}\n"
                "from peft import PeftModel\n"
                "from transformers import AutoModelForCausalLM\n\n"
                f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
                f'model = PeftModel.from_pretrained(base, "{folder}")')
        shown = [pull, Snippet("Load with peft and transformers", "python", code)]
        if (adapter.serving.get("vllm") or {}).get("loads"):
            shown.append(Snippet("Serve with vLLM", "shell",
                                 f"vllm serve {base} --enable-lora \\\n"
                                 f"    --lora-modules {adapter.name}={folder}"))
        elif (adapter.peft or {}).get("peft_type") not in _UNMERGEABLE:
            # vLLM cannot load it as is: the merged model serves anywhere.
            shown.append(Snippet("Merge it into the base (vLLM cannot load it as is)",
                                 "python", f"{code}\n"
                                 f'model.merge_and_unload().save_pretrained("{folder}-merged")'))
        return shown
    merged = f"./{adapter.name}-v{adapter.version}-merged"
    merge = Snippet("Rebuild the fine-tune, then load it with transformers", "shell",
                    f"{fetch_base}\n"
                    f"deltahub merge {base} {folder} -o {merged}\n"
                    "python -c 'from transformers import AutoModelForCausalLM; "
                    f"AutoModelForCausalLM.from_pretrained(\"{merged}\")'")
    return [pull, merge]
