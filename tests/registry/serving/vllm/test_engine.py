"""The plugin in the real engine: vLLM's OpenAI server (CPU build) pulling LoRAs from a
registry, compared token for token with peft's merged model.

One registry process and one vLLM server for the module (vLLM takes tens of seconds to
start); each test uses adapter names of its own.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from registry.client import DeltahubClient, Push, sha256_of
from registry.infra.migrate import upgrade
from tests.registry.serverproc import issue_admin_token, serve
from tests.registry.serving.vllm.engine import TINY_LLAMA, VllmServer, vllm_python, vllm_server

pytestmark = pytest.mark.slow

PROMPT = [1, 5, 9, 17, 33]
REFRESH_SECONDS = 1
FOLLOW_TIMEOUT_SECONDS = 60.0


def _save_llama(out: Path, config: dict[str, Any], seed: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(out)
    return out


def _save_lora(base: Path, out: Path, seed: int, **options: Any) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(**{
        "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"],
        "rank_pattern": {"v_proj": 2}, **options}))
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; large enough to change greedy tokens
            torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(out)
    return out


def _greedy(model: torch.nn.Module, n: int = 8) -> list[int]:
    ids = torch.tensor([PROMPT])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,  # type: ignore[operator]
                         do_sample=False, pad_token_id=0)
    return [int(t) for t in out[0, len(PROMPT):]]


def _peft_tokens(base: Path, lora: Path) -> list[int]:
    """What peft's merged model says: the reference vLLM must match."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    merged = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), lora)
    return _greedy(merged.merge_and_unload())


@dataclass(frozen=True)
class Stack:
    registry: DeltahubClient
    vllm: VllmServer
    loras: dict[str, Path]
    tokens: dict[str, list[int]]  # "base", "v1", "v2": greedy tokens of PROMPT
    cache: Path  # the plugin's DELTAHUB_CACHE_DIR

    def push(self, lora: str, name: str, base: str = "tiny-llama") -> dict[str, Any]:
        paths = [self.loras[lora] / f for f in ("adapter_config.json",
                                                "adapter_model.safetensors")]
        adapter, _ = Push(self.registry, paths, {p.name: sha256_of(p) for p in paths}
                          ).adapter(name, base, "lora")
        return adapter

    def tokens_of(self, model: str) -> list[int]:
        status, body = self.vllm.complete(model, PROMPT)
        assert status == 200, body
        return [int(t) for t in body["choices"][0]["token_ids"]]

    def served_as(self, model: str) -> str:
        status, body = self.vllm.complete(model, PROMPT, max_tokens=1)
        assert status == 200, body
        return str(body["model"])


def _push_model(client: DeltahubClient, directory: Path, name: str) -> None:
    paths = [directory / "config.json", directory / "model.safetensors"]
    Push(client, paths, {p.name: sha256_of(p) for p in paths}).model(name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    vllm_python()  # fails at once, before a minute of set-up, when the venv is missing
    root = tmp_path_factory.mktemp("vllm-engine")
    base = _save_llama(root / "tiny-llama", TINY_LLAMA, seed=0)
    other = _save_llama(root / "other-llama", {**TINY_LLAMA, "intermediate_size": 96}, seed=1)
    loras = {"v1": _save_lora(base, root / "v1", seed=3),
             "v2": _save_lora(base, root / "v2", seed=4),
             "wide": _save_lora(base, root / "wide", seed=5, r=32, rank_pattern={}),
             "saver": _save_lora(base, root / "saver", seed=6, modules_to_save=["lm_head"]),
             "foreign": _save_lora(other, root / "foreign", seed=7)}
    from transformers import LlamaForCausalLM

    tokens = {"base": _greedy(LlamaForCausalLM.from_pretrained(base)),
              "v1": _peft_tokens(base, loras["v1"]), "v2": _peft_tokens(base, loras["v2"])}
    # Otherwise a test could pass while serving the wrong adapter, or none.
    assert len({tuple(t) for t in tokens.values()}) == 3, tokens
    database = f"sqlite:///{root / 'registry.db'}"
    upgrade(database)
    token = issue_admin_token(database)
    with serve(database, root / "registry") as registry:
        client = DeltahubClient(registry.url, token)
        _push_model(client, base, "tiny-llama")
        _push_model(client, other, "other-llama")
        env = {"DELTAHUB_URL": registry.url, "DELTAHUB_TOKEN": token,
               "DELTAHUB_CACHE_DIR": str(root / "cache"), "DELTAHUB_VLLM_BASE": "tiny-llama",
               "DELTAHUB_VLLM_REFRESH_SECONDS": str(REFRESH_SECONDS)}
        with vllm_server(base, root / "vllm", env) as vllm:
            yield Stack(client, vllm, loras, tokens, root / "cache")
        client.close()


def _eventually(stack: Stack, model: str, want: list[int]) -> None:
    deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
    while (got := stack.tokens_of(model)) != want:
        assert time.monotonic() < deadline, f"{model} still gives {got}, not {want}"
        time.sleep(0.5)


def test_alias_serves_the_adapter_with_peft_merged_tokens(stack: Stack) -> None:
    v1 = stack.push("v1", "support-bot")
    stack.registry.set_alias(str(v1["id"]), "prod")
    stack.push("v2", "support-bot")  # latest moves on, prod stays

    assert stack.tokens_of("support-bot:prod") == stack.tokens["v1"]
    # Served under the version's own name: KV and prefix cache are per version.
    assert stack.served_as("support-bot:prod") == "support-bot@1"
    assert stack.tokens_of(stack.vllm.base_model) == stack.tokens["base"]


def test_version_pin_and_latest(stack: Stack) -> None:
    stack.push("v1", "pinned")
    stack.push("v2", "pinned")

    assert stack.tokens_of("pinned@1") == stack.tokens["v1"]
    assert stack.tokens_of("pinned") == stack.tokens["v2"]
    assert stack.tokens_of("pinned:latest") == stack.tokens["v2"]
    assert stack.served_as("pinned") == "pinned@2"


def test_moved_alias_is_followed(stack: Stack) -> None:
    v1 = stack.push("v1", "mover")
    stack.registry.set_alias(str(v1["id"]), "prod")
    assert stack.tokens_of("mover:prod") == stack.tokens["v1"]

    v2 = stack.push("v2", "mover")
    stack.registry.set_alias(str(v2["id"]), "prod")

    _eventually(stack, "mover:prod", stack.tokens["v2"])
    assert stack.served_as("mover:prod") == "mover@2"
    assert "'mover:prod' now means mover@2; unloaded mover@1" in stack.vllm.log()


def test_deleted_version_is_followed(stack: Stack) -> None:
    stack.push("v1", "shrinker")
    v2 = stack.push("v2", "shrinker")
    assert stack.tokens_of("shrinker") == stack.tokens["v2"]
    assert stack.tokens_of("shrinker@2") == stack.tokens["v2"]

    stack.registry.delete_adapter(v2["id"])

    _eventually(stack, "shrinker", stack.tokens["v1"])  # latest went back to version 1
    deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
    while (status := stack.vllm.complete("shrinker@2", PROMPT)[0]) != 404:
        assert time.monotonic() < deadline, f"shrinker@2 still answers {status}"
        time.sleep(0.5)


@pytest.mark.parametrize(("model", "lora", "base", "reason"), [
    ("nobody:prod", None, None, "the registry at .* has no such adapter"),
    ("foreign", "foreign", "other-llama",
     "is for the base 'other-llama', and this server runs 'tiny-llama'"),
    ("wide", "wide", "tiny-llama", "has rank 32, above this server's --max-lora-rank 16"),
    ("saver", "saver", "tiny-llama", r"carries whole tensors beside its LoRA factors "
                                     r"\(lm_head.weight"),
])
def test_refusal_is_a_404_and_one_log_line(stack: Stack, model: str, lora: str | None,
                                           base: str | None, reason: str) -> None:
    pushed = stack.push(lora, model, base) if lora is not None and base is not None else None

    status, body = stack.vllm.complete(model, PROMPT)

    assert status == 404, body
    assert body["error"]["type"] == "NotFoundError"
    if pushed is not None:  # refused from the registry's record: nothing downloaded
        assert not (stack.cache / "entries" / pushed["content_digest"]).exists()
    lines = [line for line in stack.vllm.log().splitlines()
             if f"deltahub: not serving '{model}'" in line]
    assert len(lines) == 1, lines
    assert re.search(reason, lines[0]), lines[0]
    # The engine goes on serving.
    stack.push("v1", "survivor")
    assert stack.tokens_of("survivor") == stack.tokens["v1"]


_INSPECT = """
import json, sys
from pathlib import Path
from registry.serving.vllm.plugin import DeltahubResolver
from registry.serving.vllm.settings import PluginSettings

resolver = DeltahubResolver(PluginSettings.from_env({}, ["api_server", "--max-lora-rank", "16"]))
print(json.dumps({p.name: resolver._inspect(p) for p in map(Path, sys.argv[1:])}))
"""


def test_vllms_own_check_refuses_what_the_registry_cannot_tell(tmp_path: Path) -> None:
    """DoRA, LoRA biases and base-changing inits: refused by vLLM's own rules on the
    downloaded adapter_config.json (the registry refuses DoRA at push already)."""
    plain = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    configs = {"plain": plain, "dora": {**plain, "use_dora": True},
               "bias": {**plain, "lora_bias": True},
               "pissa": {**plain, "init_lora_weights": "pissa"}}
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps(config))

    out = subprocess.run([str(vllm_python()), "-c", _INSPECT,
                          *(str(tmp_path / name) for name in configs)],
                         capture_output=True, text=True, timeout=300, check=True)
    verdicts = json.loads(out.stdout.strip().splitlines()[-1])

    assert verdicts["plain"] is None
    assert "vLLM does not yet support DoRA" in verdicts["dora"]
    assert "vLLM does not support LoRA bias" in verdicts["bias"]
    assert "does not support init_lora_weights='pissa'" in verdicts["pissa"]
