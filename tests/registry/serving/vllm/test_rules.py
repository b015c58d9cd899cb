"""Which names the plugin answers, which adapters it refuses, and its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from registry.serving.vllm.rules import Served, refusal, registry_ref, served_name
from registry.serving.vllm.settings import PluginSettings


@pytest.mark.parametrize(("model", "ref"), [
    ("support-bot", "support-bot"),
    ("support-bot:prod", "support-bot:prod"),
    ("support-bot@3", "support-bot@3"),
    ("v1.2_x", "v1.2_x"),
    ("42", None),  # an id: not taken from a model name
    ("support-bot@latest", None),
    ("support-bot:prod:x", None),
    ("support-bot@3:prod", None),
    ("../support-bot", None),
    ("a..b", None),
    ("org/model", None),
    ("", None),
    ("bot@99999999999", None),
])
def test_registry_ref(model: str, ref: str | None) -> None:
    assert registry_ref(model) == ref


def _adapter(**changes: Any) -> dict[str, Any]:
    """An adapter as `GET /adapters/{ref}` describes it (the fields the rules read)."""
    adapter = {"id": 7, "name": "support-bot", "version": 3, "kind": "lora", "status": "ready",
               "base": "llama2-7b", "params": {"r": 8, "ranks": [4, 8], "saved_tensors": []}}
    return {**adapter, **changes}


SERVED = Served(base="llama2-7b", max_lora_rank=16)


@pytest.mark.parametrize(("adapter", "reason"), [
    (_adapter(), None),
    (_adapter(params={"r": 16, "ranks": [16], "saved_tensors": []}), None),
    (_adapter(status="pending"), "is a draft"),
    (_adapter(kind="bitdelta", params={}), "is a bitdelta adapter; vLLM serves LoRA adapters "
                                           "only"),
    (_adapter(base="mistral-7b"), "is for the base 'mistral-7b', and this server runs "
                                  "'llama2-7b'; ask the server of that base, or set "
                                  "DELTAHUB_VLLM_BASE"),
    (_adapter(params={"r": 8, "ranks": [8, 32], "saved_tensors": []}),
     "has rank 32, above this server's --max-lora-rank 16; start vLLM with "
     "--max-lora-rank 32 or more"),
    (_adapter(params={"r": 8, "ranks": [8], "saved_tensors": [
        "lm_head.weight", "model.norm.weight", "model.embed_tokens.weight", "x.bias"]}),
     "carries whole tensors beside its LoRA factors (lm_head.weight, model.norm.weight, "
     "model.embed_tokens.weight and 1 more: modules_to_save or biases)"),
    (_adapter(kind="peft", peft={"peft_type": "IA3"}, serving={"otherwise": "merge it"}),
     "is a IA3 adapter (kind peft); vLLM serves LoRA adapters only: merge it"),
    (_adapter(peft={"peft_type": "LORA", "use_dora": True}), "is a DoRA adapter (use_dora)"),
    # The first rule that applies is the reason given.
    (_adapter(base="mistral-7b", params={"r": 64, "ranks": [64]}), "is for the base"),
])
def test_refusal(adapter: dict[str, Any], reason: str | None) -> None:
    found = refusal(adapter, SERVED)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(reason), found


def test_served_name_carries_the_version() -> None:
    assert served_name(_adapter()) == "support-bot@3"


def test_settings_defaults_and_vllm_flags() -> None:
    settings = PluginSettings.from_env(
        {"HOME": "/home/u"}, ["api_server.py", "--model", "/models/llama2-7b/",
                             "--max-lora-rank", "64", "--port=8123"])

    assert settings.url == "http://127.0.0.1:8000"
    assert settings.token is None
    assert settings.cache_dir == Path.home() / ".cache" / "deltahub" / "vllm"
    assert settings.cache_max_bytes == 20 * 10**9
    assert settings.refresh_seconds == 30
    assert settings.max_lora_rank == 64
    assert settings.server_url == "http://127.0.0.1:8123"
    assert settings.registry_base("/models/llama2-7b/") == "llama2-7b"
    assert settings.registry_base("meta-llama/Llama-2-7b-hf") == "Llama-2-7b-hf"


def test_settings_from_the_environment_win() -> None:
    settings = PluginSettings.from_env({
        "DELTAHUB_URL": "http://registry:9000", "DELTAHUB_TOKEN": "s3cret",
        "DELTAHUB_CACHE_DIR": "/var/cache/lora", "DELTAHUB_CACHE_MAX_BYTES": "1000",
        "DELTAHUB_VLLM_BASE": "llama2-7b", "DELTAHUB_VLLM_REFRESH_SECONDS": "0",
        "DELTAHUB_VLLM_MAX_LORA_RANK": "32", "DELTAHUB_VLLM_SERVER_URL": "http://vllm:1/",
        "VLLM_API_KEY": "k",
    }, ["api_server.py", "--max-lora-rank", "16"])

    assert (settings.url, settings.token) == ("http://registry:9000", "s3cret")
    assert settings.cache_dir == Path("/var/cache/lora")
    assert settings.cache_max_bytes == 1000
    assert settings.registry_base("/models/other") == "llama2-7b"
    assert settings.refresh_seconds == 0
    assert settings.max_lora_rank == 32
    assert (settings.server_url, settings.server_api_key) == ("http://vllm:1", "k")


@pytest.mark.parametrize(("env", "message"), [
    ({"DELTAHUB_CACHE_MAX_BYTES": "10GB"}, "DELTAHUB_CACHE_MAX_BYTES must be a number"),
    ({"DELTAHUB_CACHE_MAX_BYTES": "0"}, "DELTAHUB_CACHE_MAX_BYTES must be a positive"),
    ({"DELTAHUB_VLLM_REFRESH_SECONDS": "0.1"}, "DELTAHUB_VLLM_REFRESH_SECONDS must be 0"),
    ({"DELTAHUB_VLLM_MAX_LORA_RANK": "-1"}, "DELTAHUB_VLLM_MAX_LORA_RANK"),
    ({"DELTAHUB_TIMEOUT_SECONDS": "soon"}, "DELTAHUB_TIMEOUT_SECONDS must be a number"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PluginSettings.from_env(env, ["api_server.py"])
