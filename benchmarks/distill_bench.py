"""What α distillation costs next to the compression itself: time and peak memory, two sizes.

Two Llama shapes made from random weights (timing does not need trained ones; the
fine-tune is the base plus small noise), each compressed with `compress_bitdelta` and
then distilled with `distill_bitdelta` at the paper's settings (200 steps of 4 × 128
tokens) on random token ids. Each stage runs in a fresh process (spawned) whose resident
memory a thread samples every 5 ms: printed is the stage's peak less what the process
held when it started (torch, transformers' Llama and matplotlib imported), beside distillation's own
account of what it holds (`DistillReport.resident_bytes`) and its scratch file of
fine-tune logits. On a GPU (device="cuda" when there is one) the device's peak
allocation is printed too. The sizes are small because a 2-core CPU runs a training step
of the larger one in about 5 s; on a GPU pass bigger shapes through SIZES.

    python benchmarks/distill_bench.py                  # both sizes, paper settings
    python benchmarks/distill_bench.py --steps 50       # quicker
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Llama shapes, small enough for a 2-core CPU: (hidden, intermediate, layers, heads, vocab).
SIZES = {
    "llama-1.6M": (128, 344, 2, 4, 4096),
    "llama-12M": (256, 688, 4, 4, 8192),
}


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_bytes: int  # ru_maxrss less the memory after imports
    held_bytes: int | None  # distillation's own account (None for compression)
    scratch_bytes: int | None  # the fine-tune logits file
    device_peak_bytes: int | None


def make_pair(root: Path, size: str, seq_len: int, rows: int) -> tuple[Path, Path, Path]:
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, vocab = SIZES[size]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=seq_len,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    base, finetune = root / "base", root / "finetune"
    model.save_pretrained(base)
    generator = torch.Generator().manual_seed(1)
    tuned = {name: t + 0.02 * t.std() * torch.randn(t.shape, generator=generator)
             if t.dim() == 2 else t.clone() for name, t in model.state_dict().items()}
    finetune.mkdir()
    save_file(tuned, finetune / "model.safetensors", metadata={"format": "pt"})
    (finetune / "config.json").write_text((base / "config.json").read_text())
    data = root / "calibration.safetensors"
    save_file({"input_ids": torch.randint(0, vocab, (rows, seq_len), generator=generator)},
              data)
    return base, finetune, data


def measure(kind: str, args: dict[str, Any]) -> Run:
    """Run one stage in this (fresh) process and measure it."""
    # Imported before the baseline is taken: code is not what the stage holds.
    import matplotlib.figure  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    from compress.bitdelta import DistillConfig, compress_bitdelta, distill_bitdelta

    device = torch.device(args["device"])

    def compress() -> None:
        compress_bitdelta(args["base"], args["finetune"], args["out"], device=device)

    def distill() -> Any:
        return distill_bitdelta(args["base"], args["finetune"], args["delta"], [args["data"]],
                                args["out"], config=DistillConfig(**args["config"]),
                                device=device)

    started = time.perf_counter()
    result, peak = peak_rss_during(compress if kind == "compress" else distill)
    seconds = time.perf_counter() - started
    if kind == "compress":
        gpu = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        return Run(seconds, peak, None, None, gpu)
    return Run(seconds, peak, result.resident_bytes, result.teacher_file_bytes,
               result.device_peak_bytes)


def peak_rss_during(work: Callable[[], Any]) -> tuple[Any, int]:
    """`work()` and the most resident memory the process gained while it ran."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    baseline = peak = rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, max(peak, rss()) - baseline


def in_fresh_process(kind: str, args: dict[str, Any]) -> Run:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure, (kind, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len}
    results: dict[str, dict[str, Run]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in SIZES:
            root = Path(scratch) / size
            root.mkdir()
            base, finetune, data = make_pair(root, size, args.seq_len,
                                             args.steps * args.batch_size)
            common = {"base": base, "finetune": finetune, "device": device}
            compressed = in_fresh_process("compress", {**common, "out": root / "delta"})
            distilled = in_fresh_process("distill", {
                **common, "delta": root / "delta", "data": data, "out": root / "distilled",
                "config": config})
            results[size] = {"compress": compressed, "distill": distilled,
                             "model_bytes": (finetune / "model.safetensors").stat().st_size}
    print_table(results, device, config)
    if args.json:
        args.json.write_text(json.dumps({size: {k: v if isinstance(v, int) else v.__dict__
                                                for k, v in r.items()}
                                         for size, r in results.items()}, indent=2))


def print_table(results: dict[str, dict[str, Any]], device: str,
                config: dict[str, int]) -> None:
    print(f"device {device}; distillation: {config['steps']} steps of {config['batch_size']} × "
          f"{config['seq_len']} tokens; MB = 10⁶ bytes; peak = ru_maxrss less the imports\n")
    print("| model | fine-tune MB | compress s | distill s | time ratio | compress peak MB | "
          "distill peak MB | memory ratio | distill holds MB | logits file MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in results.items():
        c, d = r["compress"], r["distill"]
        print(f"| {size} | {r['model_bytes'] / 1e6:.0f} | {c.seconds:.1f} | {d.seconds:.1f} | "
              f"{d.seconds / c.seconds:.1f} | {c.peak_bytes / 1e6:.0f} | "
              f"{d.peak_bytes / 1e6:.0f} | {d.peak_bytes / max(c.peak_bytes, 1):.1f} | "
              f"{d.held_bytes / 1e6:.0f} | {d.scratch_bytes / 1e6:.0f} |")
    if device == "cuda":
        for size, r in results.items():
            print(f"{size}: GPU peak allocated {r['compress'].device_peak_bytes / 1e6:.0f} MB "
                  f"compressing, {r['distill'].device_peak_bytes / 1e6:.0f} MB distilling")


if __name__ == "__main__":
    main()
