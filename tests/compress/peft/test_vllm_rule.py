"""deltahub's vLLM column (compress/peft/serving.py) against vLLM's own LoRA checks.

Each adapter_config.json here is a real peft LoraConfig's (some edited the way other
tools write them); vLLM's `PEFTHelper.from_dict(...).validate_legal(LoRAConfig())` runs
in vLLM's own venv (vLLM cannot be imported beside the registry), with its default
--max-lora-rank 16 and with 32. deltahub must say "loads" exactly where vLLM accepts.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from compress.peft import check_peft_against_base, vllm_refusals
from compress.tensorio import Manifest, manifest_from_headers, read_header
from tests.models import make_tiny_llama
from tests.registry.serving.vllm.engine import vllm_python

_VALIDATE = """
import json, sys
from vllm.config.lora import LoRAConfig
from vllm.lora.peft_helper import PEFTHelper
verdicts = {}
for path in sys.argv[2:]:
    try:
        PEFTHelper.from_dict(json.load(open(path))).validate_legal(
            LoRAConfig(max_lora_rank=int(sys.argv[1])))
        verdicts[path] = None
    except ValueError as exc:
        verdicts[path] = str(exc)
print(json.dumps(verdicts))
"""

_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True},
    "lm-head-saved": {"modules_to_save": ["lm_head"]},
    "score-saved": {"modules_to_save": ["score"]}, "lora-bias": {"lora_bias": True},
    "bias-all": {"bias": "all"}, "pissa": {"init_lora_weights": "pissa"},
    "loftq": {"init_lora_weights": "loftq"}, "gaussian": {"init_lora_weights": "gaussian"},
    "olora": {"init_lora_weights": "olora"}, "replicated": {"layer_replication": [[0, 2]]},
    "rank-pattern-32": {"rank_pattern": {"v_proj": 32}},
}


def _save(base: Path, out: Path, r: int, **options: Any) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(
            r=r, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", **options))
        model.save_pretrained(out)
    config: dict[str, Any] = json.loads((out / "adapter_config.json").read_text())
    return config


@pytest.mark.slow
def test_the_vllm_column_matches_vllms_own_checks(tmp_path: Path) -> None:
    base_dir = make_tiny_llama(tmp_path / "base")
    base: Manifest = manifest_from_headers(
        {"model.safetensors": read_header(base_dir / "model.safetensors")})
    torch.manual_seed(0)
    adapters = {"r4": _save(base_dir, tmp_path / "r4", 4),
                "r32": _save(base_dir, tmp_path / "r32", 32),
                "rp32": _save(base_dir, tmp_path / "rp32", 4, rank_pattern={"v_proj": 32}),
                "dora": _save(base_dir, tmp_path / "dora", 4, use_dora=True)}
    # Which saved adapter each variant's config belongs to (the tensors must fit it).
    sources = {"rank-32": "r32", "rank-pattern-32": "rp32", "dora": "dora"}
    configs: dict[str, Path] = {}
    ours: dict[tuple[str, int], bool] = {}
    for name, changes in {**_VARIANTS, "rank-32": {}}.items():
        source = sources.get(name, "r4")
        config = {**adapters[source], **changes}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        configs[name] = path
        tensors = read_header(tmp_path / source / "adapter_model.safetensors").tensors
        record = check_peft_against_base(config, tensors, base).peft
        for max_rank in (16, 32):
            ours[name, max_rank] = not vllm_refusals(record, max_rank)

    for max_rank in (16, 32):
        out = subprocess.run([str(vllm_python()), "-c", _VALIDATE, str(max_rank),
                              *map(str, configs.values())],
                             capture_output=True, text=True, timeout=300, check=True)
        verdicts = json.loads(out.stdout.strip().splitlines()[-1])
        theirs = {name: verdicts[str(path)] is None for name, path in configs.items()}
        assert {n: ours[n, max_rank] for n in configs} == theirs, verdicts
    assert ours["plain", 16]
    assert ours["rslora", 16]
    assert not ours["dora", 16]
    assert not ours["rank-32", 16]
    assert ours["rank-32", 32]
