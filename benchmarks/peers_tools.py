"""What benchmarks/peers_bench.py runs and reads: the inputs, the two tools, their adapters.

- inputs: `ensure_llama_pair` writes a base and a fine-tune of Llama-2-7B-shaped decoder
  layers (fp16, a LlamaForCausalLM config.json with a 256-token vocabulary, so the
  embeddings stay small) whose ΔW has a realistic spectrum: `lora_bench.synthesize`'s
  power law i^-1 under a 30 % Gaussian floor, scaled to an rms of 1e-3 (5 % of the
  weights' 0.02); the norms and embeddings change a little too, as in a real fine-tune;
- the tools: `deltahub extract-lora` and `mergekit-extract-lora`, each run as its own
  process under GNU time, so wall time and peak resident memory (ru_maxrss of that
  process alone) are per tool;
- the adapters: `module_errors` reads a PEFT adapter's safetensors and config and measures
  ‖ΔW − (α/r)·B·A‖/‖ΔW‖ per module against the models; `optimal_errors` is the
  Eckart–Young bound at a rank from the exact spectrum (float64).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from benchmarks.bitdelta_bench import write_model_pair
from benchmarks.lora_bench import synthesize
from compress.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, lora_key, parse_adapter_config
from compress.tensorio import Checkpoint, PlannedTensor

REPO = Path(__file__).resolve().parents[1]
DELTAHUB = REPO / ".venv" / "bin" / "deltahub"
MERGEKIT_VENV = Path("/tmp/mergekit-venv")
MERGEKIT_PIN = "mergekit==0.1.5"
GNU_TIME = Path("/usr/bin/time")
INSTALL_MERGEKIT = (
    f"python3 -m venv {MERGEKIT_VENV}\n"
    f"{MERGEKIT_VENV}/bin/pip install torch==2.13.0   # the CPU build; unpinned pulls CUDA\n"
    f"{MERGEKIT_VENV}/bin/pip install {MERGEKIT_PIN}")
HIDDEN, INTERMEDIATE, HEADS, VOCAB = 4096, 11008, 32, 256
SPECTRUM = (1.0, 0.3)  # (α, noise share of ‖ΔW‖), lora_bench's hard case
DELTA_RMS, WEIGHT_STD = 1e-3, 0.02


@dataclass(frozen=True)
class ToolRun:
    seconds: float  # wall, process start to exit
    peak_bytes: int  # ru_maxrss of the tool's process


def run_measured(argv: Sequence[str], log: Path) -> ToolRun:
    """Run `argv` under GNU time; its output goes to `log`. Raises if it fails."""
    stats = log.with_suffix(".time")
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([str(GNU_TIME), "-f", "%M", "-o", str(stats), *argv],
                              stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        try:
            tail = log.read_text(errors="replace")[-3000:]
        except OSError as exc:  # e.g. the scratch directory was removed under the run
            tail = f"(its log is gone: {exc})"
        raise RuntimeError(f"{argv[0]} exited with {done.returncode}; its output ends:\n{tail}")
    peak_kb = int(stats.read_text().split()[-1])
    return ToolRun(seconds, peak_kb * 1024)


def find_mergekit(path: Path | None) -> Path | None:
    """The mergekit-extract-lora console script: `path`, the benchmark's venv, or PATH."""
    candidates = [path] if path else [MERGEKIT_VENV / "bin" / "mergekit-extract-lora"]
    if not path and (found := shutil.which("mergekit-extract-lora")):
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def mergekit_version(script: Path) -> str:
    python = script.parent / "python"
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                           "print(m.version('mergekit'), m.version('torch'))"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def deltahub_argv(base: Path, finetune: Path, out: Path, rank: int,
                  extra: Sequence[str] = ()) -> list[str]:
    return [str(DELTAHUB), "extract-lora", str(base), str(finetune), "-o", str(out),
            "--rank", str(rank), *extra]


def mergekit_argv(script: Path, base: Path, finetune: Path, out: Path, rank: int) -> list[str]:
    """mergekit's defaults but the rank: exact SVD on the CPU, embeddings, lm_head and
    every non-Linear module with weights (the norms) saved whole via modules_to_save."""
    return [str(script), "--model", str(finetune), "--base-model", str(base),
            "--out-path", str(out), "--max-rank", str(rank), "--quiet"]


# ---------------------------------------------------------------- the 7B-shaped inputs


def llama_tensors(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    h, m = HIDDEN, INTERMEDIATE
    names: list[tuple[str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", (VOCAB, h)), ("model.norm.weight", (h,)),
        ("lm_head.weight", (VOCAB, h))]
    for i in range(layers):
        p = f"model.layers.{i}"
        names += [(f"{p}.self_attn.{x}_proj.weight", (h, h)) for x in "qkvo"]
        names += [(f"{p}.mlp.gate_proj.weight", (m, h)), (f"{p}.mlp.up_proj.weight", (m, h)),
                  (f"{p}.mlp.down_proj.weight", (h, m)),
                  (f"{p}.input_layernorm.weight", (h,)),
                  (f"{p}.post_attention_layernorm.weight", (h,))]
    return sorted(names)


def llama_config(layers: int) -> dict[str, object]:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": layers, "num_attention_heads": HEADS,
            "num_key_value_heads": HEADS, "vocab_size": VOCAB, "hidden_act": "silu",
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "torch_dtype": "float16",
            "bos_token_id": 1, "eos_token_id": 2}


def ensure_llama_pair(root: Path, layers: int, seed: int = 0) -> tuple[Path, Path]:
    """Generate (once) base and fine-tune directories under `root`; reused after."""
    plan = [PlannedTensor(name, "F16", shape) for name, shape in llama_tensors(layers)]
    generator = torch.Generator().manual_seed(seed)
    index = {item.name: i for i, item in enumerate(plan)}
    return write_model_pair(
        root, plan, lambda item: _pair_weights(item.shape, generator,
                                               seed * 1000 + index[item.name]),
        config=llama_config(layers))


def _pair_weights(shape: tuple[int, ...], g: torch.Generator, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    if len(shape) == 1:  # RMSNorm: ones, nudged
        ones = torch.ones(shape)
        return ones.half(), (ones + 0.01 * torch.randn(shape, generator=g)).half()
    base = torch.randn(shape, generator=g).mul_(WEIGHT_STD)
    if shape[0] == VOCAB:  # embeddings and lm_head: a small dense change
        return base.half(), (base + DELTA_RMS * torch.randn(shape, generator=g)).half()
    delta = synthesize(shape[0], shape[1], *SPECTRUM, seed)
    delta.mul_(DELTA_RMS * math.sqrt(delta.numel()) / float(delta.norm()))
    return base.half(), base.add_(delta).half()


# ---------------------------------------------------------------- the adapters' errors


def deltas(base: Path, finetune: Path, modules: Sequence[str]
           ) -> Iterator[tuple[str, torch.Tensor]]:
    """ΔW = W_ft − W_base in float32 for each module, one at a time."""
    with Checkpoint.open(base) as b, Checkpoint.open(finetune) as f:
        for module in modules:
            name = f"{module}.weight"
            yield module, f.tensor(name).float() - b.tensor(name).float()


def lora_modules(adapter: Path) -> list[str]:
    """The modules an adapter has LoRA factors for, from its safetensors keys."""
    suffix = ".lora_A.weight"
    with safe_open(str(adapter / ADAPTER_WEIGHTS), framework="pt") as f:
        keys = list(f.keys())
    prefix = lora_key("", "lora_A").removesuffix(suffix)
    return sorted(k[len(prefix):-len(suffix)] for k in keys if k.endswith(suffix))


def module_errors(base: Path, finetune: Path, adapter: Path) -> dict[str, float]:
    """‖ΔW − (α/r)·B·A‖_F / ‖ΔW‖_F per adapted module, with the factors as stored."""
    config = parse_adapter_config(json.loads((adapter / ADAPTER_CONFIG).read_text()))
    errors: dict[str, float] = {}
    with safe_open(str(adapter / ADAPTER_WEIGHTS), framework="pt") as f:
        for module, delta in deltas(base, finetune, lora_modules(adapter)):
            a = f.get_tensor(lora_key(module, "lora_A")).float()
            b = f.get_tensor(lora_key(module, "lora_B")).float()
            scale = config.alpha_of(module) / a.shape[0]
            residual = torch.addmm(delta, b, a, alpha=-scale)
            errors[module] = float(residual.double().norm() / delta.double().norm())
    return errors


def optimal_errors(base: Path, finetune: Path, modules: Sequence[str], rank: int
                   ) -> dict[str, float]:
    """The Eckart–Young error of the best rank-`rank` approximation of each ΔW, in float64.

    √(1 − Σ_{i≤r} σ_i² / ‖ΔW‖²) with σ_i² the eigenvalues of the Gram matrix ΔWᵀΔW (or
    ΔWΔWᵀ, the smaller), all in float64: their absolute error is ~1e-16·σ_1², so the
    leading σ_i² are exact to many digits, at a quarter of the time torch.linalg.svdvals
    takes in float64 (2-core CPU: 10 s against ~40 s for 11008×4096).
    """
    optimal: dict[str, float] = {}
    for module, delta in deltas(base, finetune, modules):
        d = delta.double()
        gram = d.T @ d if d.shape[0] >= d.shape[1] else d @ d.T
        del d
        eigenvalues = torch.linalg.eigvalsh(gram)  # ascending
        norm_sq = float(gram.diagonal().sum())
        captured = float(eigenvalues[-rank:].sum())
        optimal[module] = math.sqrt(max(0.0, 1.0 - captured / norm_sq))
    return optimal
