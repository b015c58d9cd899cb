#!/usr/bin/env bash
# Run the kernel tests (tests/kernels, Triton interpreter on the CPU) under several Triton
# releases and print one line per release: the evidence behind the `triton` bound in
# pyproject.toml.
#
#   benchmarks/triton_range.sh                      # the default releases (TRITON_VERSIONS)
#   benchmarks/triton_range.sh 3.6.0 3.9.0          # these releases
#   benchmarks/triton_range.sh /path/to/venv ...    # existing venvs, as they are
#
# A release given by number gets a venv of its own under $TRITON_RANGE_CACHE, made on the
# first run and reused afterwards: a stamp file records what was installed, and a venv whose
# stamp no longer matches the specs below is brought up to date. A venv given by path is used
# as is; it needs torch, triton, numpy and pytest. Nothing is installed into this checkout
# and pytest's cache is off; the tests import the checkout through pyproject.toml's
# `pythonpath`. A second run installs nothing and takes only the test time (one to two
# minutes per release on two cores, most of it the compile checks).
#
# Environment (all optional):
#   TRITON_VERSIONS      releases to test when none is given
#   TRITON_RANGE_CACHE   where the venvs live (default ~/.cache/deltahub/triton-range)
#   TRITON_RANGE_PYTHON  interpreter for new venvs (default: python3.11, else python3)
#   TORCH_SPEC           torch for new venvs (default torch==2.13.0, the CPU build `make
#                        install` uses). The interpreter's behaviour depends on Triton and
#                        NumPy, not on torch: any CPU build serves every Triton release.
#                        TORCH_SPEC=matched takes the torch whose CUDA build pins that
#                        Triton release (table below); from the default index that is the
#                        CUDA build, several GB per venv, unless TORCH_INDEX_URL names an
#                        index of CPU builds.
#   TORCH_INDEX_URL      extra index for torch only (e.g. one serving CPU builds)
#   NUMPY_SPEC           numpy for new venvs (default numpy==2.4.*, what the project gets
#                        today). Triton 3.0 and 3.1's interpreters misread CPU tensors
#                        under NumPy 2 (garbage from a plain load), so their rows only
#                        mean something with NUMPY_SPEC='numpy<2'.
#   PYTEST_ARGS          extra pytest arguments (e.g. "-x" or "-k gemv")
#   TRITON_RANGE_REPO    checkout whose tests run (default: the one holding this script)
#
# Exit status: 0 if every release passed, 1 if any failed, 2 on a setup error.
set -uo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=${TRITON_RANGE_REPO:-$(cd "$script_dir/.." && pwd)}
cache=${TRITON_RANGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/deltahub/triton-range}
if [[ -n ${TRITON_RANGE_PYTHON:-} ]]; then
    python=$TRITON_RANGE_PYTHON
elif command -v python3.11 >/dev/null; then
    python=python3.11
else
    python=python3
fi
torch_spec=${TORCH_SPEC:-torch==2.13.0}
numpy_spec=${NUMPY_SPEC:-numpy==2.4.*}
read -r -a versions <<<"${TRITON_VERSIONS:-3.0.0 3.1.0 3.2.0 3.3.1 3.4.0 3.5.1 3.6.0 3.7.1 3.8.0 3.9.0}"
read -r -a pytest_extra <<<"${PYTEST_ARGS:-}"

case ${1:-} in
-h | --help)
    sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
if (($# > 0)); then versions=("$@"); fi

# The torch release whose CUDA wheel pins each Triton release (Requires-Dist of the wheels).
matched_torch() {
    case $1 in
    3.0.*) echo 2.4.1 ;;
    3.1.*) echo 2.5.1 ;;
    3.2.*) echo 2.6.0 ;;
    3.3.0) echo 2.7.0 ;;
    3.3.*) echo 2.7.1 ;;
    3.4.*) echo 2.8.0 ;;
    3.5.0) echo 2.9.0 ;;
    3.5.*) echo 2.9.1 ;;
    3.6.*) echo 2.11.0 ;; # 2.10.0 pins it too
    3.7.0) echo 2.12.0 ;;
    3.7.*) echo 2.13.0 ;; # and 2.12.1
    3.8.*) echo 2.14.1 ;; # triton~=3.8.0, as 2.14.0
    3.9.*) echo 2.15.0 ;; # triton~=3.9.0
    *) return 1 ;;
    esac
}

# Make or update the venv for Triton release $1; prints its path.
ensure_venv() {
    local version=$1 venv="$cache/triton-$1" tspec="$torch_spec" torch_index=() stamp
    if [[ $tspec == matched ]]; then
        tspec=torch==$(matched_torch "$version") || {
            echo "no torch known to pin triton $version; set TORCH_SPEC" >&2
            return 1
        }
    fi
    [[ -n ${TORCH_INDEX_URL:-} ]] && torch_index=(--extra-index-url "$TORCH_INDEX_URL")
    stamp="python=$("$python" -c 'import sys; print(sys.version.split()[0])') $tspec triton==$version $numpy_spec pytest"
    if [[ -f $venv/.triton-range-stamp && $(<"$venv/.triton-range-stamp") == "$stamp" ]]; then
        echo "$venv"
        return 0
    fi
    mkdir -p "$cache"
    {
        echo "== $(date -u +%FT%TZ) $stamp"
        [[ -x $venv/bin/python ]] || "$python" -m venv "$venv" &&
            # torch first and alone: a later resolve must not swap the build for another one.
            "$venv/bin/pip" install --quiet "${torch_index[@]}" "$tspec" &&
            "$venv/bin/pip" install --quiet "$tspec" "triton==$version" "$numpy_spec" pytest
    } >>"$cache/triton-$version.install.log" 2>&1 || {
        echo "installing triton $version failed: see $cache/triton-$version.install.log" >&2
        return 1
    }
    echo "$stamp" >"$venv/.triton-range-stamp"
    echo "$venv"
}

failed=0
for arg in "${versions[@]}"; do
    if [[ -x $arg/bin/python ]]; then
        venv=$(cd "$arg" && pwd)
    elif [[ $arg =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
        venv=$(ensure_venv "$arg") || {
            printf '%-8s SETUP-ERROR\n' "$arg"
            failed=2
            continue
        }
    else
        echo "neither a venv nor a Triton version: $arg" >&2
        exit 2
    fi
    versions_line=$("$venv/bin/python" -c '
import numpy, pytest, torch, triton
print(triton.__version__, numpy.__version__, torch.__version__)' 2>/dev/null) || {
        printf '%-8s SETUP-ERROR  %s: cannot import torch, triton, numpy and pytest\n' "$arg" "$venv"
        failed=2
        continue
    }
    read -r triton_v numpy_v torch_v <<<"$versions_line"
    log="$cache/test-triton-$triton_v-numpy-$numpy_v-torch-$torch_v.log"
    mkdir -p "$cache"
    (cd "$repo" && TRITON_INTERPRET=1 "$venv/bin/python" -m pytest tests/kernels \
        --confcutdir=tests/kernels -p no:cacheprovider -q -m "not gpu" "${pytest_extra[@]}") \
        >"$log" 2>&1
    rc=$?
    summary=$(grep -E '^=*[ ]*[0-9]+ (passed|failed|error)|no tests ran' "$log" | tail -n 1 | tr -d '=')
    summary=${summary## }
    if ((rc == 0)); then
        status=PASS
    else
        status=FAIL
        ((failed == 0)) && failed=1
    fi
    printf 'triton %-7s numpy %-7s torch %-14s %s  %s  (%s)\n' \
        "$triton_v" "$numpy_v" "$torch_v" "$status" "${summary:-pytest exit $rc}" "$log"
done
exit "$failed"
