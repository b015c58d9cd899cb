"""BitDelta compression speed and memory against just reading the inputs, in one run.

Builds Llama-2-7B-shaped decoder layers in fp16 on disk (q, k, v, o 4096×4096; gate, up
11008×4096; down 4096×11008; two RMSNorm vectors), a base with random weights and a
"fine-tune" = base + a small dense delta, for each layer count. Then, for each size and
each repeat, two fresh subprocesses (so ru_maxrss is per run):

- read: every tensor of both models through `ModelPair` / `Checkpoint.tensor`, the reader
  the codec uses, into reused `BufferPool` buffers as the codec reads, and nothing else;
- read fresh: the same into a new tensor each (`Checkpoint.tensor(name)`, how the codec
  read before it reused buffers; shown so the ratio can be read against either);
- compress: `compress_bitdelta(base, finetune, out)` with default settings (CPU, row α;
  `--workers N` sets its encoder threads).

It prints, per size, the best time of each over the repeats, their ratio (aim: compress
within 1.2× of read), throughput in GB of input pair (base + fine-tune) per second (aim:
≥ 2) and of fine-tune, CPU seconds, and peak resident memory, VmHWM (aim: flat as layers
are added). `--cache cold` evicts the inputs from the page
cache (posix_fadvise DONTNEED, after fsync) before each timed run, so reads hit the disk;
`warm` leaves them cached (reading is then a memory copy, the hardest case for the ratio).

    python benchmarks/bitdelta_bench.py                        # 2 and 4 layers, warm and cold
    python benchmarks/bitdelta_bench.py --layers 2 4 8 --repeats 3 --cache warm
    python benchmarks/bitdelta_bench.py --tiny                 # seconds: a smoke check
    python benchmarks/bitdelta_bench.py --baseline ac97bf7     # and the codec of a commit

Models are generated once under .bench/bitdelta/ (git-ignored; about 0.8 GB per 2 layers per
model) and reused; `--clean` removes them at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.bitdelta import ScaleMode, compress_bitdelta  # after the sys.path fix-up above
from compress.bitdelta.codec import compress_pair
from compress.tensorio import (
    DEFAULT_MAX_SHARD_BYTES,
    BufferPool,
    ModelPair,
    PlannedTensor,
    ShardedWriter,
    fsync_path,
)

GB = 10**9
MB = 10**6
ROOT = Path(__file__).resolve().parents[1] / ".bench" / "bitdelta"
RATIO_AIM = 1.2
PAIR_GB_PER_S_AIM = 2.0
RSS_SPREAD_AIM = 0.10  # flat: peak RSS within 10% from the smallest size to the largest


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int

    def layer(self, i: int) -> list[tuple[str, tuple[int, ...]]]:
        h, m, p = self.hidden, self.intermediate, f"model.layers.{i}"
        return [(f"{p}.self_attn.{x}_proj.weight", (h, h)) for x in "qkvo"] + [
            (f"{p}.mlp.gate_proj.weight", (m, h)), (f"{p}.mlp.up_proj.weight", (m, h)),
            (f"{p}.mlp.down_proj.weight", (h, m)),
            (f"{p}.input_layernorm.weight", (h,)), (f"{p}.post_attention_layernorm.weight", (h,)),
        ]


LLAMA_7B = Shape(4096, 11008)
TINY = Shape(256, 688)


# ---------------------------------------------------------------- the models on disk


def ensure_models(shape: Shape, layers: int, tag: str) -> tuple[Path, Path]:
    """Generate (once) base and fine-tune directories for `layers` decoder layers."""
    spec = [item for i in range(layers) for item in shape.layer(i)]
    plan = [PlannedTensor(name, "F16", dims) for name, dims in sorted(spec)]
    generator = torch.Generator().manual_seed(layers)
    # 1 GB shards: the 4-layer models are sharded, like real checkpoints.
    return write_model_pair(ROOT / f"{tag}-{layers}L", plan,
                            lambda item: _weights(item, generator), max_shard_bytes=GB)


def write_model_pair(root: Path, plan: list[PlannedTensor],
                     weights: Callable[[PlannedTensor], tuple[torch.Tensor, torch.Tensor]], *,
                     config: dict[str, object] | None = None,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> tuple[Path, Path]:
    """`root/base` and `root/finetune` holding `plan`'s tensors as `weights` makes each
    (base, fine-tune) pair, written once: a `complete` marker makes later calls reuse
    them, and an interrupted run starts over."""
    base, finetune, done = root / "base", root / "finetune", root / "complete"
    if done.exists():
        return base, finetune
    shutil.rmtree(root, ignore_errors=True)
    writers = []
    for directory in (base, finetune):
        directory.mkdir(parents=True)
        if config is not None:
            (directory / "config.json").write_text(json.dumps(config, indent=1))
        writers.append(ShardedWriter(directory, plan, {"format": "pt"},
                                     max_shard_bytes=max_shard_bytes))
    print(f"generating {len(plan)} tensors of fp16 models under {root} ...", file=sys.stderr,
          flush=True)
    for item in plan:
        w_base, w_ft = weights(item)
        writers[0].write(item.name, w_base)
        writers[1].write(item.name, w_ft)
    for writer in writers:
        for path in writer.close():
            fsync_path(path)
    done.write_text("ok\n")
    return base, finetune


def _weights(item: PlannedTensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if len(item.shape) == 1:  # RMSNorm: ones, nudged
        base = torch.ones(item.shape)
        return base.half(), (base + 0.01 * torch.randn(item.shape, generator=g)).half()
    base = torch.randn(item.shape, generator=g).mul_(0.02)
    delta = torch.randn(item.shape, generator=g).mul_(0.001)  # |ΔW| ≈ 5% of |W|
    return base.half(), base.add_(delta).half()


def evict(directory: Path) -> None:
    """Drop a directory's clean pages from the page cache (no root needed)."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- one measured run


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM).

    Not ru_maxrss: Linux carries it across fork and exec, so a child would report the
    parent's size (this benchmark's parent holds the generator's memory).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def model_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix == ".safetensors")


def read_both(base: Path, finetune: Path) -> None:
    """Every tensor of both models, read as `compress_bitdelta` reads them: into reused
    buffers, each read first asking for the next tensor's bytes ahead (`will_need`)."""
    buffers = BufferPool()
    with ModelPair.open(base, finetune) as pair:
        names = pair.names
        for i, name in enumerate(names):
            for model in (pair.base, pair.finetune):
                if i + 1 < len(names):
                    model.will_need(names[i + 1])
                buffers.give_back(model.tensor(name, buffers.take(model.entry(name).nbytes)))


def read_fresh(base: Path, finetune: Path) -> None:
    with ModelPair.open(base, finetune) as pair:
        for name in pair.names:
            pair.base.tensor(name)
            pair.finetune.tensor(name)


def warm_up_codec() -> float:
    """Seconds of the encoder's one-time start-up in a process, done before the clock: a
    tiny fp16 pair loads its compiled loop (importing numba, and the machine code from
    numba's on-disk cache; compiling it on the very first run after a change)."""
    started = time.perf_counter()
    tiny = torch.zeros(2, 8, dtype=torch.float16)
    compress_pair(tiny, tiny, ScaleMode.ROW, "warm-up")
    return time.perf_counter() - started


def child(mode: str, base: Path, finetune: Path, cold: bool, workers: int | None
          ) -> dict[str, float]:
    """Runs in a fresh process: time `mode` and report seconds and peak RSS."""
    startup = warm_up_codec() if mode == "compress" else 0.0
    rss_before = peak_rss()
    out = base.parent / f"out-{os.getpid()}"
    if cold:
        evict(base)
        evict(finetune)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if mode == "read":
        read_both(base, finetune)
    elif mode == "read-fresh":
        read_fresh(base, finetune)
    else:
        report = compress_bitdelta(base, finetune, out, workers=workers)
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu_before,
              "bytes_in": model_bytes(finetune), "pair_bytes": model_bytes(base) +
              model_bytes(finetune), "rss_before": rss_before, "rss_peak": peak_rss(),
              "startup_s": startup}
    if mode == "compress":
        result["bytes_out"] = report.bytes_out
        result["delta_rel_error"] = report.delta_rel_error
        shutil.rmtree(out)
    return result


def run_child(mode: str, base: Path, finetune: Path, cold: bool, workers: int | None = None,
              script: Path = Path(__file__)) -> dict[str, float]:
    """`mode` timed in a fresh process: this script's child, or (`script`) a baseline
    checkout's own, which then imports that checkout's codec."""
    command = [sys.executable, str(script), "--child", mode, "--base", str(base),
               "--finetune", str(finetune)] + (["--cold"] if cold else [])
    if workers is not None:
        command += ["--workers", str(workers)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def baseline_script(rev: str) -> Path:
    """This benchmark in a checkout of commit `rev` (extracted once under .bench/), so the
    codec before a change runs interleaved with the codec now, on the same noisy box."""
    repo = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    tree = ROOT.parent / "baseline" / sha[:12]
    if not (tree / "complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", sha], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (tree / "complete").write_text(sha + "\n")
    return tree / "benchmarks" / "bitdelta_bench.py"


# ---------------------------------------------------------------- the table


def measure(layers: int, base: Path, finetune: Path, cache: str, repeats: int,
            workers: int | None, baseline: Path | None = None) -> dict[str, float]:
    cold = cache == "cold"
    if not cold:  # warm the page cache once, untimed
        run_child("read", base, finetune, cold=False)
    reads, fresh, compressions, before = [], [], [], []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all alike
        reads.append(run_child("read", base, finetune, cold))
        fresh.append(run_child("read-fresh", base, finetune, cold))
        compressions.append(run_child("compress", base, finetune, cold, workers))
        if baseline is not None:
            before.append(run_child("compress", base, finetune, cold, workers, baseline))
    read = min(reads, key=lambda r: r["seconds"])
    read_new = min(fresh, key=lambda r: r["seconds"])
    comp = min(compressions, key=lambda r: r["seconds"])
    return {
        "layers": layers, "gb_in": comp["bytes_in"] / GB, "pair_gb": comp["pair_bytes"] / GB,
        "read_s": read["seconds"], "compress_s": comp["seconds"],
        "ratio": comp["seconds"] / read["seconds"],
        "fresh_s": read_new["seconds"], "fresh_ratio": comp["seconds"] / read_new["seconds"],
        "gb_per_s": comp["bytes_in"] / GB / comp["seconds"],
        "pair_gb_per_s": comp["pair_bytes"] / GB / comp["seconds"],
        "read_gb_per_s": read["pair_bytes"] / GB / read["seconds"],
        "read_cpu_s": min(r["cpu_seconds"] for r in reads),
        "compress_cpu_s": min(r["cpu_seconds"] for r in compressions),
        "rss_import_mb": comp["rss_before"] / MB,
        "rss_read_mb": max(r["rss_peak"] for r in reads) / MB,
        "rss_compress_mb": max(r["rss_peak"] for r in compressions) / MB,
        "size_ratio": comp["bytes_in"] / comp["bytes_out"],
        "delta_rel_error": comp["delta_rel_error"],
        "baseline_s": min(r["seconds"] for r in before) if before else float("nan"),
        "startup_s": max(r.get("startup_s", 0.0) for r in compressions),
    }


def table(rows: list[dict[str, float]], cache: str, baseline: str | None = None) -> str:
    head = ("| cache | layers | pair GB | read both s | compress s | compress/read | "
            "read fresh s | compress/read fresh | "
            "GB/s (pair) | GB/s (fine-tune) | CPU s read / compress | peak RSS read MB | "
            "peak RSS compress MB | size ratio |")
    if baseline:
        head += f" compress at {baseline} s | now / {baseline} |"
    lines = [head, "|" + "---|" * (16 if baseline else 14)]
    for r in rows:
        extra = (f" {r['baseline_s']:.2f} | {r['compress_s'] / r['baseline_s']:.2f}× |"
                 if baseline else "")
        lines.append(
            f"| {cache} | {int(r['layers'])} | {r['pair_gb']:.2f} | {r['read_s']:.2f} | "
            f"{r['compress_s']:.2f} | {r['ratio']:.2f}× | {r['fresh_s']:.2f} | "
            f"{r['fresh_ratio']:.2f}× | {r['pair_gb_per_s']:.2f} | "
            f"{r['gb_per_s']:.2f} | "
            f"{r['read_cpu_s']:.1f} / {r['compress_cpu_s']:.1f} | "
            f"{r['rss_read_mb']:.0f} | {r['rss_compress_mb']:.0f} | {r['size_ratio']:.1f}× |"
            + extra)
    return "\n".join(lines)


def verdict(rows: list[dict[str, float]]) -> str:
    """One line: each aim met or not, over every size of the table."""
    speed = min(r["pair_gb_per_s"] for r in rows)
    ratio = max(r["ratio"] for r in rows)
    rss = [r["rss_compress_mb"] for r in rows]
    spread = (max(rss) - min(rss)) / min(rss)

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return (f"aims: ≥ {PAIR_GB_PER_S_AIM} GB/s of pair {met(speed >= PAIR_GB_PER_S_AIM)} "
            f"(slowest {speed:.2f}); compress/read ≤ {RATIO_AIM} {met(ratio <= RATIO_AIM)} "
            f"(worst {ratio:.2f}×; against fresh reads "
            f"{max(r['fresh_ratio'] for r in rows):.2f}×); "
            f"peak RSS flat {met(spread <= RSS_SPREAD_AIM)} "
            f"({min(rss):.0f}–{max(rss):.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    parser.add_argument("--tiny", action="store_true", help="small layers: a quick smoke run")
    parser.add_argument("--clean", action="store_true", help="delete the models afterwards")
    parser.add_argument("--child", choices=["read", "read-fresh", "compress"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--finetune", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help="encoder threads (default: the codec's)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also time compression by the codec at git commit REV, interleaved")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.base, args.finetune, args.cold, args.workers)))
        return

    shape, tag = (TINY, "tiny") if args.tiny else (LLAMA_7B, "llama7b")
    models = {n: ensure_models(shape, n, tag) for n in args.layers}
    caches = ["warm", "cold"] if args.cache == "both" else [args.cache]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
          f"torch threads; encoder workers {args.workers or 'default'}; best of "
          f"{args.repeats}; aims: ≥ {PAIR_GB_PER_S_AIM} GB/s of pair, compress/read ≤ "
          f"{RATIO_AIM}, peak RSS flat; load average {os.getloadavg()[0]:.2f} at the start")
    baseline = baseline_script(args.baseline) if args.baseline else None
    for cache in caches:
        rows = [measure(n, *models[n], cache, args.repeats, args.workers, baseline)
                for n in args.layers]
        print(table(rows, cache, args.baseline))
        print(verdict(rows))
        print(f"(not in the times: the encoder's one-time start-up in each process, at most "
              f"{max(r['startup_s'] for r in rows):.2f} s; "
              f"peak RSS after imports alone: {rows[0]['rss_import_mb']:.0f} MB; "
              f"read both at {rows[-1]['read_gb_per_s']:.2f} GB/s of pair; "
              f"‖ΔW − α·sign‖/‖ΔW‖ = {rows[-1]['delta_rel_error']:.3f}; load average "
              f"{os.getloadavg()[0]:.2f} now)")
    if args.clean:
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
