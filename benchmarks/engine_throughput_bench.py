"""Decode throughput of the serving engine: T tenants in one batch vs T merged models in turn.

For T ∈ {1, 4, 16}: one request per tenant, all decoding together through the engine's
model (each layer one `bitdelta_linear_multi` call over the T tenants' rows), against the
same T requests served the way one would without the engine: each fine-tune merged into a
model of its own, served one after another (the same forward code, base-only layers). The
merged model is the tenants' delta merged once and reused T times: the time is the same, and
memory is engine_memory_bench.py's subject. Both runs decode `--tokens` tokens per request
after a `--prompt`-token prefill; tokens/s counts decoded tokens only, timed between CUDA
synchronisations after one warm-up run.

    python benchmarks/engine_throughput_bench.py [--markdown out.md]     # GPU: float16
    python benchmarks/engine_throughput_bench.py --tiny                  # CPU smoke run

Needs torch, transformers, safetensors and the repository; no server packages.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above (benchmarks/ is not an installed package).
from benchmarks.engine_models import LLAMA_134M, LLAMA_TINY, make_models
from compress.bitdelta import compress_bitdelta, load_bitdelta, merge_bitdelta
from compress.tensorio import Checkpoint
from registry.serving.engine.model import EngineModel, StepRows

TENANTS = (1, 4, 16)


def decode(model: EngineModel, slots: list[int], prompt: int, tokens: int) -> float:
    """Seconds to decode `tokens` tokens for one request per slot, after their prefill."""
    rows = [StepRows(slot, list(range(1, prompt + 1)), model.new_cache(prompt + tokens))
            for slot in slots]
    logits = model.forward(rows)
    sync(model.device)
    started = time.perf_counter()
    for _ in range(tokens):
        for row, row_logits in zip(rows, logits, strict=True):
            row.tokens = [int(row_logits.argmax())]
        logits = model.forward(rows)
    sync(model.device)
    return time.perf_counter() - started


def logit_gap(engine: EngineModel, merged: EngineModel, prompt: int) -> float:
    """max |engine − merged| / max |merged| over the prompt's last logits, tenant in slot 1."""
    ids = list(range(1, prompt + 1))
    ours = engine.forward([StepRows(1, ids, engine.new_cache(prompt))])
    theirs = merged.forward([StepRows(0, ids, merged.new_cache(prompt))])
    return float((ours - theirs).abs().max() / theirs.abs().max())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load(path: Path, dtype: torch.dtype, device: str) -> EngineModel:
    with Checkpoint.open(path) as checkpoint:
        return EngineModel(checkpoint, dtype, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU")
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    tokens = args.tokens or (128 if cuda else 4)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base, finetune = make_models(root, LLAMA_TINY if args.tiny else LLAMA_134M, dtype)
        compress_bitdelta(base, finetune, root / "delta")
        merge_bitdelta(base, root / "delta", root / "merged")
        engine = load(base, dtype, device)
        engine.grow(max(TENANTS) + 1)
        with Checkpoint.open(base) as checkpoint:
            delta = load_bitdelta(root / "delta", checkpoint.manifest)
        for slot in range(1, max(TENANTS) + 1):
            engine.install(slot, delta)
        merged = load(root / "merged", dtype, device)
    decode(engine, [1], args.prompt, 2)  # warm-up: kernel compiles, allocator
    decode(merged, [0], args.prompt, 2)
    gap = logit_gap(engine, merged, args.prompt)
    name = torch.cuda.get_device_name() if cuda else "CPU"
    lines = [f"Engine decode throughput on {name}, {dtype}, {args.prompt}-token prompts, "
             f"{tokens} tokens per request; a tenant's prompt logits differ from its merged "
             f"model's by at most {gap:.2e} of their largest magnitude", "",
             "| tenants | engine tok/s | merged, one after another, tok/s | engine ÷ merged |",
             "|---:|---:|---:|---:|"]
    for t in TENANTS:
        batched = t * tokens / decode(engine, list(range(1, t + 1)), args.prompt, tokens)
        one_by_one = t * tokens / sum(decode(merged, [0], args.prompt, tokens)
                                      for _ in range(t))
        lines.append(f"| {t} | {batched:,.0f} | {one_by_one:,.0f} | "
                     f"{batched / one_by_one:.2f}× |")
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
