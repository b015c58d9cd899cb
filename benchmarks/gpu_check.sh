#!/usr/bin/env bash
# Everything the fused BitDelta kernels need checked on a GPU, in one run of under 10 minutes
# on a fresh machine that has torch, triton, numpy and pytest (no server packages, no network:
# nothing is installed). Run it from anywhere; it works in the checkout that holds it.
#
#   benchmarks/gpu_check.sh OUTDIR
#   PYTHON=/path/to/python benchmarks/gpu_check.sh OUTDIR    # another interpreter
#
# Steps, each time-boxed with `timeout` so a hang costs only its own box; a failed step does
# not stop the others:
#   env          OUTDIR/env.txt: nvidia-smi, python, torch, triton, numpy, the CUDA device
#   tests_gpu    pytest tests/kernels -m gpu (junit XML + log): the GPU-only tests
#   tests_all    pytest tests/kernels: every parity test, on CUDA (over 8 processes when
#                pytest-xdist is installed: the suite is mostly Triton compiles)
#   kernel_cost  benchmarks/kernel_cost.py: the static cost model's predictions (CPU compile)
#   compilecheck python -m kernels.compilecheck: registers, spills, shared memory (CPU compile)
#   kernel_bench benchmarks/kernel_bench.py: the measured table (kernel_bench.md/.json)
#   serving      benchmarks/engine_throughput_bench.py: the serving engine's decode tokens/s at
#                1 / 4 / 16 tenants against as many merged models served one after another
#                (serving.md; a 134M-parameter Llama in float16; needs transformers)
#   distill      benchmarks/distill_bench.py --steps 50 on the GPU (skipped without one)
#   sweep        kernel_bench.py --sweep: decode tiles for 11008x4096 (sweep.md/.json)
# kernel_cost and compilecheck need no GPU and run alongside the tests; the benchmark waits
# for them, so its timings share the machine with nothing. Predictions (kernel_cost.md) and
# measurements (kernel_bench.md, sweep.md) land side by side in OUTDIR. The pytest runs pass
# --confcutdir=tests/kernels, so tests/conftest.py (which imports the server) is not loaded;
# the `gpu` marker is registered in pyproject.toml.
#
# Without a CUDA device (a CPU machine checking this script, about 5 minutes on 2 cores) the
# compile checks run first, the tests under the Triton interpreter and the benchmark and sweep
# as tiny interpreter smoke runs whose timings mean nothing. With nvidia-smi present but no
# CUDA device visible to torch, the env step fails.
#
# OUTDIR ends with summary.txt (each step's status and seconds, also printed). Exit status: 0
# if every step passed, 1 if any failed, timed out or was not reached within the budget, 2 on
# a usage error. To bring the results
# back as one file: tar -czf gpu_check.tgz -C "$(dirname OUTDIR)" "$(basename OUTDIR)".
#
# Environment (optional): PYTHON (default: .venv/bin/python if present, else python3);
# GPU_CHECK_BUDGET_S, the whole run's limit in seconds (default 560): a step never runs past
# it, and one that would start with under 5 s left is not run (and counts as failed). The
# boxes (30 + 75 + 180 + 150 + 120 + 140 s in the foreground, serving's 120 included) are far
# above what the steps should take on an H100/H200 (about 5 minutes in all, an estimate: this
# has not yet run on a GPU); the sweep compiles its ~200 variants in parallel within 75 s of its box.
set -uo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
cd "$repo" || exit 2
if [[ -n ${PYTHON:-} ]]; then
    python=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=python3
fi
export TRITON_DEFAULT_FP_FUSION=1 PYTHONUNBUFFERED=1  # silences a Triton 3.9 warning
unset TRITON_INTERPRET  # the GPU steps compile; only CPU fallbacks set it, per step
budget=${GPU_CHECK_BUDGET_S:-560}
status_dir=$(mktemp -d)
trap 'rm -rf "$status_dir"' EXIT
STEPS=(env tests_gpu tests_all kernel_cost compilecheck kernel_bench serving distill sweep)

# step NAME BOX_SECONDS LOG COMMAND...: run COMMAND with stdout and stderr to LOG (stdout
# elsewhere if COMMAND redirects it itself), within BOX_SECONDS and the run's budget; its
# status goes to $status_dir/NAME, with $note (if set) appended.
step() {
    local name=$1 box=$2 log=$3
    shift 3
    local left=$((budget - SECONDS)) rc=0 began=$SECONDS
    local limit=$((box < left ? box : left))
    if ((limit < 5)); then
        echo "FAILED: not run, the run's ${budget}s budget was spent" >"$status_dir/$name"
        return
    fi
    echo "[$(date +%T)] $name (up to ${limit}s) ..."
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || rc=$?
    local took=$((SECONDS - began)) verdict
    case $rc in
        0) verdict=ok ;;
        124 | 137) verdict="FAILED: timed out after ${limit}s" ;;
        *) verdict="FAILED: exit $rc" ;;
    esac
    echo "$verdict (${took}s) ${note:-}" >"$status_dir/$name"
    echo "[$(date +%T)] $name: $verdict (${took}s)"
}

# The interpreter's view of the machine; exits 1 if nvidia-smi sees a GPU that torch does not.
ENV_PY='
import platform, shutil
import numpy, torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = "not installed"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}),"
      f" triton {triton_version}, numpy {numpy.__version__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    l2 = getattr(p, "L2_cache_size", 0) / 2**20
    print(f"cuda device: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.0f} GiB, L2 {l2:.0f} MiB")
elif shutil.which("nvidia-smi"):
    raise SystemExit("cuda device: none visible to torch, though nvidia-smi is present")
else:
    print("cuda device: none visible to torch")
'

write_env() {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm), $(nproc) CPUs"
    echo "repo: $repo ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
    echo "python: $python"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --format=csv --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit
        nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
    "$python" -c "$ENV_PY"
}

compile_checks() {
    step kernel_cost 120 "$out/kernel_cost.log" \
        "$python" benchmarks/kernel_cost.py --markdown "$out/kernel_cost.md"
    step compilecheck 180 "$out/compilecheck.log" \
        bash -c '"$0" -m kernels.compilecheck >"$1"' "$python" "$out/compilecheck.md"
}

export -f write_env  # `timeout` runs it through a new shell
export python repo ENV_PY
step env 30 "$out/env.txt" bash -c write_env
cuda=$(timeout 60 "$python" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)
pytest_args=(--confcutdir=tests/kernels -q -p no:cacheprovider)
if [[ $cuda == 1 ]]; then
    interp=()
    bench_args=()
    sweep_args=(--compile-budget-s 75)
    cpu_note=""
    parallel=()
    if "$python" -c 'import xdist' 2>/dev/null; then
        parallel=(-n 8)
    fi
    # The compile checks need no GPU: they run beside the tests, and the benchmark waits.
    compile_checks &
    compile_pid=$!
else
    echo "no CUDA device: tests under the Triton interpreter, benchmark and sweep as tiny CPU" \
        "smoke runs (their timings mean nothing)"
    interp=(env TRITON_INTERPRET=1)
    bench_args=(--tiny --quick --backend triton)
    sweep_args=(--tiny --backend triton)
    cpu_note="(no CUDA device: CPU run under the Triton interpreter)"
    parallel=()
    compile_checks  # one after the other: a CPU machine has few cores to share
    compile_pid=""
fi

note=$cpu_note step tests_gpu 75 "$out/tests_gpu.log" "${interp[@]}" \
    "$python" -m pytest tests/kernels -m gpu "${pytest_args[@]}" --junitxml="$out/tests_gpu.xml"
note=$cpu_note step tests_all 180 "$out/tests_all.log" "${interp[@]}" \
    "$python" -m pytest tests/kernels "${pytest_args[@]}" "${parallel[@]}" \
    --junitxml="$out/tests_all.xml"
if [[ -n $compile_pid ]]; then
    wait "$compile_pid"
fi
note=$cpu_note step kernel_bench 150 "$out/kernel_bench.log" "${interp[@]}" \
    "$python" benchmarks/kernel_bench.py "${bench_args[@]}" \
    --markdown "$out/kernel_bench.md" --json "$out/kernel_bench.json"
# The serving engine (registry/serving/engine/): a batch of 1 / 4 / 16 BitDelta tenants against
# merged models one after another. Without transformers it is recorded as skipped.
if "$python" -c 'import transformers, safetensors' 2>/dev/null; then
    if [[ $cuda == 1 ]]; then serving_args=(--tokens 64); else serving_args=(--tiny); fi
    note=$cpu_note step serving 120 "$out/serving.log" \
        "$python" benchmarks/engine_throughput_bench.py "${serving_args[@]}" \
        --markdown "$out/serving.md"
else
    echo "skipped: needs transformers and safetensors" >"$status_dir/serving"
fi
# Scale distillation on the GPU (the Triton forward, the α backward): time and device peak
# against compression, two model sizes. It needs transformers and google-re2 besides torch
# (carry google-re2's wheel if the image lacks it); without them, or without a GPU, it is
# recorded as skipped, not failed.
if [[ $cuda == 1 ]] && "$python" -c 'import re2, transformers' 2>/dev/null; then
    step distill 90 "$out/distill.log" "$python" benchmarks/distill_bench.py --steps 50
else
    echo "skipped: needs a CUDA device, transformers and google-re2" >"$status_dir/distill"
fi
note=$cpu_note step sweep 140 "$out/sweep.log" "${interp[@]}" \
    "$python" benchmarks/kernel_bench.py --sweep "${sweep_args[@]}" \
    --markdown "$out/sweep.md" --json "$out/sweep.json"

{
    echo "gpu_check: $(date -u +%FT%TZ), ${SECONDS}s of a ${budget}s budget, output in $out"
    for name in "${STEPS[@]}"; do
        verdict=$(cat "$status_dir/$name" 2>/dev/null || echo "FAILED: did not run")
        printf '  %-13s %s\n' "$name" "$verdict"
    done
} | tee "$out/summary.txt"
! grep -q "FAILED" "$out/summary.txt"
