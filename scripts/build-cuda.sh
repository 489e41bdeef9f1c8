#!/usr/bin/env bash
# Builds the CUDA binaries (`resnet` and the ops crate's CUDA tests) with
# `--features cuda,cudnn` (and `nccl` for `resnet`) on a machine with no GPU and no CUDA toolkit
# installed: the toolkit comes from NVIDIA's PyPI wheels, installed with
# `pip --target` into a cache folder (never into the system).
#
#   scripts/build-cuda.sh            # toolkit (first time), build, artifacts
#
# Output, in a target dir of its own so the CPU build is left alone
# (default target/cuda, RESNET_CUDA_TARGET_DIR to change):
#   target/cuda/dist/resnet            the CLI, `--device cuda`
#   target/cuda/dist/xtask             the reproduction runner (`xtask reproduce all --profile gpu
#                                      --device cuda`), with dist/data/cifar-10-sample beside it
#   target/cuda/dist/ops-cuda-tests    crates/ops/tests/cuda.rs (CUDA vs CPU)
#   target/cuda/dist/lib/libcurand.so.10  scripts/curand_host.c (see below)
#   target/cuda/dist/BUILD-INFO.txt    versions, compute capability, commit
# scripts/gpu-check.sh runs them on a GPU machine; only dist/ is needed there.
#
# Versions: CUDA 13.0 (nvcc 13.0.88), for compute capability 9.0 (H100,
# CUDA_COMPUTE_CAP to change). The kernels are embedded as PTX, which a
# driver loads only if it is at least as new as the nvcc that wrote it: 13.0
# needs driver 580 or newer, so do not move nvcc past the oldest driver the
# binaries must run on. cuDNN 9.21 matches the bindings candle's cudarc
# 0.19 is built with (cudnn-09021).
#
# Loading. The binaries load the CUDA libraries when a GPU is opened, not at
# start-up (cudarc's `dynamic-loading`, third_party/README.md): they run on
# the CPU of a machine without them, and `--device cuda` names a missing one.
# Only candle-kernels links a CUDA library at build time, the runtime
# (`-lcudart`), which the script makes the static one (libcudart_static.a
# from the wheel, through a linker script in $CUDA_HOME/lib/stubs on
# LIBRARY_PATH). The cuRAND stand-in below links against a libcuda.so.1
# stub there (empty functions under the driver's names). At run time
# libcuda.so.1 comes from the driver; the others from PyTorch's wheels on
# the GPU machine:
#
#   SITE=$(python3 -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parents[1])')
#   export LD_LIBRARY_PATH=$(printf '%s:' "$SITE"/nvidia/*/lib)$LD_LIBRARY_PATH
#
# (scripts/gpu-check.sh does this and says which versions it found).
# PyTorch's CUDA 13 wheels have no cuRAND, which candle opens with every CUDA
# device: dist/lib/libcurand.so.10, built from scripts/curand_host.c, stands
# in for it where no real one is found (put it last on LD_LIBRARY_PATH).
#
# Environment: RESNET_CUDA_CACHE (default ~/.cache/resnet-cuda),
# RESNET_CUDA_TARGET_DIR, CUDA_COMPUTE_CAP (default 90), JOBS (cargo -j,
# default 2), PYTHON (default python3). Needs python3 with pip, gcc/g++,
# cargo, and network access to PyPI the first time.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${RESNET_CUDA_CACHE:-$HOME/.cache/resnet-cuda}
TARGET_DIR=${RESNET_CUDA_TARGET_DIR:-$REPO/target/cuda}
COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python3}

PACKAGES=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-cccl==13.0.85
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14
    nvidia-curand==10.4.0.35
    nvidia-cudnn-cu13==9.21.1.3
)
SITE=$CACHE/cuda-13.0
CUDA_HOME=$SITE/nvidia/cu13
STUBS=$CUDA_HOME/lib/stubs

log() { printf '==> %s\n' "$*" >&2; }

# The wheels, installed once; reinstalled when the pinned list changes.
install_toolkit() {
    local stamp=$SITE/.packages want
    want=$(printf '%s\n' "${PACKAGES[@]}")
    if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $CUDA_HOME/bin/nvcc ]]; then
        log "CUDA toolkit: $SITE (installed)"
        return
    fi
    log "CUDA toolkit: installing ${#PACKAGES[@]} wheels into $SITE"
    rm -rf "$SITE"
    mkdir -p "$SITE"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$SITE" "${PACKAGES[@]}"
    printf '%s\n' "$want" >"$stamp"
}

# A link stub: an empty function for every name in SYMBOLS (one a line),
# built as OUT_DIR/SONAME with a `lib<name>.so` link beside it.
make_stub() {
    local soname=$1 symbols=$2 src
    src=$(mktemp --suffix=.c)
    grep -E '^[A-Za-z_][A-Za-z0-9_]*$' "$symbols" | sort -u | sed 's/.*/void &(void) {}/' >"$src"
    gcc -shared -fPIC -nostdlib -o "$STUBS/$soname" -Wl,-soname,"$soname" "$src"
    ln -sf "$soname" "$STUBS/${soname%%.so*}.so"
    rm -f "$src"
}

make_stubs() {
    rm -rf "$STUBS"
    mkdir -p "$STUBS"
    local tmp
    tmp=$(mktemp -d)
    # libcuda: every function cuda.h declares, under the names its macros map
    # them to (cuMemAlloc -> cuMemAlloc_v2, ...) and the plain ones.
    {
        gcc -E -P -x c -I"$CUDA_HOME/include" "$CUDA_HOME/include/cuda.h" |
            grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t'
        grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$CUDA_HOME/include/cuda.h" | tr -d '( \t'
    } >"$tmp/cuda"
    make_stub libcuda.so.1 "$tmp/cuda"
    rm -rf "$tmp"
    # candle-kernels asks for `-lcudart`; this linker script makes that the
    # static runtime, so the binaries need no libcudart.so.13 to start.
    echo "INPUT($CUDA_HOME/lib/libcudart_static.a)" >"$STUBS/libcudart.so"
    log "link stubs: $STUBS"
}

build() {
    export PATH=$CUDA_HOME/bin:$PATH
    export CUDA_HOME CUDA_PATH=$CUDA_HOME
    export CUDA_COMPUTE_CAP=$COMPUTE_CAP CUDARC_CUDA_VERSION=13000
    export CARGO_TARGET_DIR=$TARGET_DIR
    export LIBRARY_PATH=$STUBS${LIBRARY_PATH:+:$LIBRARY_PATH}
    cd "$REPO"
    log "nvcc: $(nvcc --version | tail -2 | head -1)"
    local features=resnet-cli/cuda,resnet-cli/cudnn,resnet-cli/nccl,xtask/cuda,xtask/cudnn
    log "cargo build --release -p resnet-cli -p xtask --features $features (target dir $TARGET_DIR)"
    nice -n 10 cargo build --release -j "$JOBS" -p resnet-cli -p xtask --features "$features"
    log "cargo test --release -p resnet-ops --features cuda,cudnn --no-run"
    local tests test_args=(--release -j "$JOBS" -p resnet-ops --features "cuda,cudnn" --test cuda --no-run)
    nice -n 10 cargo test "${test_args[@]}"
    tests=$(cargo test "${test_args[@]}" --message-format=json |
        "$PYTHON" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
    [[ -n $tests ]] || { log "no CUDA test binary was built"; exit 1; }

    local dist=$TARGET_DIR/dist
    rm -rf "$dist"
    mkdir -p "$dist"
    # Line tables only cost size on the GPU machine: keep symbols, drop debug info.
    objcopy --strip-debug "$TARGET_DIR/release/resnet" "$dist/resnet"
    objcopy --strip-debug "$TARGET_DIR/release/xtask" "$dist/xtask"
    mkdir -p "$dist/data"
    cp -r "$REPO/data/cifar-10-sample" "$dist/data/"
    objcopy --strip-debug "$tests" "$dist/ops-cuda-tests"
    mkdir -p "$dist/lib"
    gcc -shared -fPIC -O2 -Wall -Wextra -I"$CUDA_HOME/include" -o "$dist/lib/libcurand.so.10" \
        -Wl,-soname,libcurand.so.10 -Wl,--no-undefined "$REPO/scripts/curand_host.c" \
        -L"$STUBS" -lcuda -lm
    {
        echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
        echo "features: cuda,cudnn (resnet: and nccl); CUDA_COMPUTE_CAP=$COMPUTE_CAP; $(nvcc --version | tail -2 | head -1)"
        echo "wheels: ${PACKAGES[*]}"
        echo "needs at run time (NEEDED):"
        readelf -d "$dist/resnet" | awk '/NEEDED/ { print "  " $NF }' | tr -d '[]'
    } >"$dist/BUILD-INFO.txt"
    log "artifacts:"
    ls -lR "$dist" >&2
    du -sh "$dist" >&2
}

install_toolkit
make_stubs
build
