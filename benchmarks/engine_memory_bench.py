"""What the serving engine holds with 16 BitDelta tenants resident, against its bounds.

Builds a Llama-shaped model (~134M parameters, float16: hidden 768, 12 layers, MLP 2048,
vocabulary 32000), a fine-tune of it (every projection and norm moved; embeddings and
lm_head left alone, as BitDelta's fine-tunes are compressed), compresses it once with the
codec, then loads that delta into the engine as 16 tenants (16 separate loads: each holds
its own copy, which is all memory can tell apart) and runs one decode step over a batch of
the base and all 16. Printed, measured in this one run:

- resident: the tensors the engine holds (the base's weights, every layer's stack of signs
  and α, including slot 0 for the base, and the tenants' full tensors), and the process's
  RSS growth from before the engine was built to after the 16 loads;
- base + 16 × (the delta's bits and α), from the delta's own tensors;
- 16 merged copies: what serving each fine-tune as its own model would hold.

    .venv/bin/python benchmarks/engine_memory_bench.py [--tenants 16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above (benchmarks/ is not an installed package).
from benchmarks.engine_models import LLAMA_134M, make_models
from compress.bitdelta import compress_bitdelta, load_bitdelta
from registry.serving.engine.engine import Engine, EngineLimits
from registry.serving.engine.model import StepRows
from registry.serving.engine.sources import LocalAdapters


def rss_bytes() -> int:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def held_bytes(engine: Engine) -> int:
    """Every tensor the engine's model holds, each storage once."""
    model = engine.model
    tensors = list(model.hf.state_dict().values())
    for linear in model.linears.values():
        tensors += [*(linear.stack or ()), *linear.overrides.values()]
    for norm in model.norms.values():
        tensors += list(norm.overrides.values())
    tensors += list(model.embedding.overrides.values())
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        base, finetune = make_models(root, LLAMA_134M)
        compress_bitdelta(base, finetune, root / "delta")
        delta = load_bitdelta(root / "delta")
        bits_alpha = sum(w.bits.nbytes + w.scale.nbytes for w in delta.weights.values())
        full = sum(t.nbytes for t in delta.tensors.values())
        del delta
        print(f"models and delta made in {time.perf_counter() - started:.0f} s")

        names = {f"tenant-{i}": root / "delta" for i in range(args.tenants)}
        before = rss_bytes()
        engine = Engine(base, "base", LocalAdapters(names),
                        EngineLimits(max_tenants=args.tenants, dtype=torch.float16))
        base_bytes = engine.model.base_bytes()
        for name in names:
            engine.store.release(engine.store.acquire(name))
        grown = rss_bytes() - before
        held = held_bytes(engine)
        step = [StepRows(0, [1, 2, 3], engine.model.new_cache(8))]
        step += [StepRows(t.slot, [1, 2, 3], engine.model.new_cache(8))
                 for t in sorted(engine.store.resident(), key=lambda t: t.slot)]
        logits = engine.model.forward(step)
        if logits.shape[0] != args.tenants + 1 or not bool(torch.isfinite(logits).all()):
            raise SystemExit("the decode step over the base and every tenant failed")

    n = args.tenants
    bound = base_bytes + n * bits_alpha
    merged = n * base_bytes
    params = base_bytes // 2
    mb = 1e6
    print(f"\nLlama-shaped model: {params / 1e6:.0f}M parameters, float16; {n} tenants resident"
          f"\n(each delta: {bits_alpha / mb:.1f} MB bits and α, {full / mb:.2f} MB norms stored"
          " whole)\n")
    print("| quantity | MB | ÷ (base + bits and α) | ÷ merged copies |")
    print("|---|---:|---:|---:|")
    rows = [("base weights", base_bytes), (f"base + {n} × bits and α", bound),
            ("resident: tensors the engine holds", held),
            ("resident: process RSS growth", grown), (f"{n} merged copies", merged)]
    for label, value in rows:
        print(f"| {label} | {value / mb:,.1f} | {value / bound:.3f} | {value / merged:.3f} |")


if __name__ == "__main__":
    main()
