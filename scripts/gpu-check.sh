#!/usr/bin/env bash
# Checks the CUDA build on a machine with an NVIDIA GPU, from the artifacts of
# scripts/build-cuda.sh alone: no Rust toolchain and no network needed, only
# the driver (nvidia-smi, libcuda) and a PyTorch installation with CUDA 13
# wheels, whose libraries (cuBLAS, cuDNN, the CUDA runtime) the binaries load.
#
#   scripts/gpu-check.sh [DIST]      # DIST: default target/cuda/dist
#
# Stages, each with its own time limit; a failed stage is reported and the
# next ones still run:
#   gpu          nvidia-smi: the GPU, driver, memory
#   libs         where each CUDA library the binaries load resolves
#   faults       `resnet train --device cuda` with no GPU visible and with a
#                batch that cannot fit: one clear error line each, no panic
#   ops-tests    DIST/ops-cuda-tests: each op on the GPU against the CPU
#   conv-timing  our cuDNN conv backward against candle's CUDA conv
#   weights      ResNet-20 trained 20 iterations on the CPU (its loss per step)
#   train-match  the same 20 iterations on the GPU: losses against the CPU's
#   nccl-match   the same 20 GPU iterations as one rank of the NCCL backend
#                (`--collective-backend nccl`): every loss within 1e-3 of
#                train-match's (a sum over one rank changes nothing; cuDNN's
#                algorithms may differ in the last bits). NCCL comes from
#                PyTorch's nvidia-nccl wheel, whose libnccl.so.2 gets the
#                libnccl.so link the binary loads. Several ranks need
#                several GPUs: not run here
#   eval-match   `resnet eval` of those CPU weights on the CPU and on the GPU:
#                top-1/top-5 errors within one image of each other, losses
#                within 1e-3 (bundled CIFAR-10 sample, 1017 test images)
#   train-speed  ResNet-20, 300 iterations on the GPU: images/s
#   torch-speed  the same step in PyTorch (scripts/torch_cuda_step.py): ratio
#   kernel-speed ResNet-20 with fewer of our CUDA kernels (RESNET_CUDA_KERNELS
#                conv: cuDNN conv only; none: candle's CUDA ops throughout),
#                and with the GPU memory pool's default release threshold
#                (RESNET_CUDA_MEMORY=release: freed memory goes back to the
#                driver at each synchronisation)
#   r50-speed    ResNet-50 training at 224x224 against PyTorch (target: ours
#                at least 0.8x PyTorch's images/s): ours trains on a generated
#                image folder (2 classes x 64 photo-like 256x256 JPEGs, PNGs
#                without PIL) with the paper's augmentation (shorter side
#                resized into [256, 480], random 224 crop, flip, colour) on
#                all cores but two; PyTorch times the same step on random
#                batches (no data loading), from pinned host memory and from
#                the GPU. Batch 128, or 64 if ours runs out of memory at 128. A
#                second run of ours without augmentation (decode and crop
#                only, the same GPU work) tells whether our data loading on
#                the CPU is what limits the first. Then the peaks of GPU
#                memory held by tensors (ours: summary.json's
#                peak_gpu_memory; PyTorch's max_memory_allocated), as every
#                comparison of a run of ours with PyTorch's prints them
#   bf16         bf16 mixed precision (`--precision bf16`): ResNet-20's 20
#                iterations on the GPU against the same on the CPU (which
#                computes the bf16 values in f32), losses of the first 5
#                steps within 3e-2; then ResNet-20 (batch 128) and ResNet-50
#                (224x224, batch 128, r50-speed's folder, no augmentation)
#                images/s against PyTorch's bf16 autocast (ResNet-20: NCHW
#                and channels-last; ResNet-50: channels-last, the target)
#   channels-last  channels-last activations (`--channels-last`): ResNet-20's
#                20 iterations on the GPU against weights' CPU run (NCHW),
#                losses of the first 5 steps within 1e-2; then images/s of
#                ResNet-20 (fp32, batch 128) and ResNet-50 (224x224, batch
#                128, no augmentation, fp32 and bf16) against PyTorch
#                channels-last (TF32 convolutions in fp32, bf16 autocast)
#   recipe-match ResNet-20 on the bundled sample with the same recipe in ours
#                and in plain PyTorch (scripts/torch_cifar_train.py), two
#                seeds each, RECIPE_ITERATIONS iterations (default 1500; lr
#                0.1 divided by 10 at 1/2 and 3/4 of them): test errors side
#                by side. It fails when the means differ by more than the
#                spread of the four runs plus 2 points
#   loader-speed decoding generated 500x375 JPEGs and the paper's training
#                augmentation on one thread each, then the ImageNet loader
#                (both) on all cores but two: images/s
#   profile      ResNet-20, 40 steps under Nsight Systems where the machine
#                has nsys: GPU kernels by total time, CUDA API calls
#
# Everything is logged to GPU_CHECK_OUT (default target/gpu-check): one log
# per stage and summary.txt. GPU_CHECK_ONLY="stage ..." runs only the stages
# named (train-match and eval-match need weights, nccl-match train-match's run; torch-speed and
# kernel-speed read train-speed's run). The whole run stops starting stages after
# GPU_CHECK_BUDGET seconds (default 270), so it ends within 5 minutes.
# PYTHON (default python3) is the interpreter that has torch. Run with
# RESNET_CUDA_KERNELS=conv (or none) to leave out our cuDNN batch norm and
# own kernels (or all our CUDA kernels) everywhere, or with a list of the
# groups to keep (conv, batch-norm, elementwise, pool, update, loss,
# staging) or to leave out (-loss,-update). Left unset, a train-match that
# fails is run again with fewer groups (KERNEL_FALLBACKS), and the stages
# after it run with the first choice that passes (summary.txt says which).
set -u

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1
DIST=$(cd "${1:-target/cuda/dist}" && pwd) || { echo "no artifacts at ${1:-target/cuda/dist}"; exit 1; }
OUT_DIR=${GPU_CHECK_OUT:-target/gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-270}
PYTHON=${PYTHON:-python3}
DATA=data/cifar-10-sample
# Threads decoding and augmenting ImageNet-sized images: all cores but two.
CORES=$(nproc)
LOADER_THREADS=$((CORES > 3 ? CORES - 2 : 1))
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$OUT_DIR/runs
rm -rf "$WORK" "$OUT_DIR"/*.log
mkdir -p "$WORK"
SUMMARY=$OUT_DIR/summary.txt
: >"$SUMMARY"
export DIST WORK DATA PYTHON REPO LOADER_THREADS NO_COLOR=1

note() { echo "$*" | tee -a "$SUMMARY"; }

# stage NAME LIMIT FUNCTION: runs FUNCTION (exported) under a time limit of
# LIMIT seconds or what is left of the budget, logs it, records the outcome,
# unless GPU_CHECK_ONLY leaves the stage out.
stage() {
    if [[ -n ${GPU_CHECK_ONLY:-} && " $GPU_CHECK_ONLY " != *" $1 "* ]]; then
        note "[not selected] $1"
        return 1
    fi
    run_stage "$@"
}

# run_stage NAME LIMIT FUNCTION: the same, selected or not; its status is
# the stage's (1 where it did not run).
run_stage() {
    local name=$1 limit=$2 fn=$3 left rc start
    left=$((BUDGET - SECONDS))
    if ((left < 15)); then
        note "[skipped] $name: out of time"
        return 1
    fi
    ((limit > left)) && limit=$left
    echo
    echo "=== $name (limit ${limit}s)"
    start=$SECONDS
    timeout --kill-after=5 "$limit" bash -c "$fn" 2>&1 | tee "$OUT_DIR/$name.log"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) note "[ok] $name ($((SECONDS - start)) s)" ;;
        124 | 137) note "[timed out] $name after ${limit} s" ;;
        *) note "[failed] $name (exit $rc, $((SECONDS - start)) s): see $OUT_DIR/$name.log" ;;
    esac
    return "$rc"
}

# Where train-match fails with all of our CUDA kernels and RESNET_CUDA_KERNELS
# is not set, train-match runs again with fewer of them, first leaving out
# the groups that have never run on a GPU (KERNEL_FALLBACKS, in order), and
# the stages after it run with the first choice that passes, so that one run
# still measures what works. ops-tests.log names the ops that failed.
KERNEL_FALLBACKS=${KERNEL_FALLBACKS:-"-update,-loss,-staging conv,batch-norm,elementwise conv"}
kernel_fallback() {
    local choice n=0
    grep -qE '^\[(failed|timed out)\] train-match ' "$SUMMARY" || return 0
    [[ -z ${RESNET_CUDA_KERNELS:-} ]] || return 0
    for choice in $KERNEL_FALLBACKS; do
        n=$((n + 1))
        export RESNET_CUDA_KERNELS=$choice
        if run_stage "train-match-fallback-$n" 60 train_match; then
            note "[fallback] the stages after train-match run with RESNET_CUDA_KERNELS=$choice:" \
                "train-match failed with all our CUDA kernels and passed with these"
            return 0
        fi
    done
    unset RESNET_CUDA_KERNELS
    note "[fallback] none of RESNET_CUDA_KERNELS=${KERNEL_FALLBACKS// / or } passed train-match"
}

gpu() {
    nvidia-smi &&
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
}

# The CUDA libraries: PyTorch's wheels (nvidia/*/lib), then the system's;
# cuRAND from DIST/lib where there is no real one.
cuda_library_path() {
    local site dirs=() d
    site=$("$PYTHON" -c 'import importlib.util, pathlib
s = importlib.util.find_spec("torch")
print(pathlib.Path(s.origin).parents[1] if s else "")' 2>/dev/null)
    if [[ -n $site ]]; then
        for d in "$site"/nvidia/*/lib; do [[ -d $d ]] && dirs+=("$d"); done
    fi
    local found=0
    for d in "${dirs[@]}"; do [[ -e $d/libcurand.so.10 ]] && found=1; done
    ldconfig -p 2>/dev/null | grep -q 'libcurand.so.10 ' && found=1
    ((found)) || dirs+=("$DIST/lib")
    local IFS=:
    echo "${dirs[*]}"
}
LIBS=$(cuda_library_path)
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# The binaries load the CUDA libraries when they open a GPU (dlopen, not
# NEEDED): where each of those names resolves on this LD_LIBRARY_PATH.
libs() {
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    cat "$DIST/BUILD-INFO.txt"
    "$PYTHON" - libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 \
        libcurand.so.10 libcudnn.so.9 <<'PY'
import ctypes, sys
missing = 0
for name in sys.argv[1:]:
    try:
        ctypes.CDLL(name)
    except OSError as e:
        print(f"{name}: NOT FOUND ({e})")
        missing = 1
        continue
    stem = name.split(".so")[0] + ".so"
    paths = [l.split()[-1] for l in open("/proc/self/maps") if "/" + stem in l]
    print(f"{name}: {paths[0] if paths else 'loaded'}")
sys.exit(missing)
PY
}

# The ImageNet loader (500x375 JPEGs decoded, then the paper's training
# augmentation) on LOADER_THREADS threads: images/s, against the ~4,700 a
# bf16 ResNet-50 step takes on an H200.
loader_speed() {
    RAYON_NUM_THREADS=1 "$DIST/xtask" bench-one decode/imagenet-jpeg/1-thread --runs 3 &&
        RAYON_NUM_THREADS=1 "$DIST/xtask" bench-one augment/imagenet/1-thread --runs 3 &&
        RAYON_NUM_THREADS=$LOADER_THREADS "$DIST/xtask" bench-one loader/imagenet-jpeg/b32 --runs 3
}

# Faults a user meets on a GPU, each of which must end in one clear error
# line: no GPU visible (CUDA_VISIBLE_DEVICES empty), and a batch that cannot
# fit (ResNet-1202 at batch 5000 asks for far more than 141 GB).
faults() {
    local out rc=0
    out=$(CUDA_VISIBLE_DEVICES= "$DIST/resnet" train --device cuda --arch resnet20 \
        --data "$DATA" --iterations 1 --out "$WORK/fault-hidden" 2>&1)
    echo "$out"
    grep -q 'CUDA_VISIBLE_DEVICES' <<<"$out" || { echo "FAULT: no hint for a hidden GPU"; rc=1; }
    out=$("$DIST/resnet" train --device cuda --arch resnet1202 --data "$DATA" --iterations 1 \
        --batch-size 5000 --eval-every 0 --checkpoint-every 0 --out "$WORK/fault-oom" 2>&1)
    echo "$out" | tail -n 5
    grep -q 'ran out of memory' <<<"$out" || { echo "FAULT: no out-of-memory message"; rc=1; }
    grep -q 'panicked' <<<"$out" && { echo "FAULT: a panic"; rc=1; }
    return $rc
}

ops_tests() { "$DIST/ops-cuda-tests" --test-threads=1; }

conv_timing() { "$DIST/ops-cuda-tests" --ignored --nocapture time_conv; }

# 20 logged steps of ResNet-20 from seed 0 on DEVICE into RUN.
# ResNet-20, 20 iterations on device ARG1 into ARG2, with the flags after those.
train20() {
    local device=$1 out=$2
    shift 2
    "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations 20 --log-every 1 \
        --eval-every 0 --checkpoint-every 0 --seed 0 --device "$device" --out "$out" "$@"
}

# The losses of the CPU's METRICS (ARG1) and the GPU's (ARG2) side by side:
# the first 5 steps must agree within LIMIT (ARG3); the last line, prefixed
# with ARG4, says whether they do.
losses_match() {
    "$PYTHON" - "$@" <<'EOF'
import json, sys
cpu_path, gpu_path, limit, label = sys.argv[1:]
cpu, gpu = ([json.loads(l)["train_loss"] for l in open(p)] for p in (cpu_path, gpu_path))
worst = 0.0
print("iteration  cpu loss   gpu loss   rel diff")
for i, (c, g) in enumerate(zip(cpu, gpu), 1):
    d = abs(c - g) / abs(c)
    print(f"{i:9d}  {c:9.5f}  {g:9.5f}  {d:.2e}")
    if i <= 5:
        worst = max(worst, d)
ok = len(cpu) == len(gpu) == 20 and worst < float(limit)
print(f"{label}first 5 steps: largest relative difference {worst:.2e} (limit {limit}): "
      f"{'ok' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF
}

weights() { train20 cpu "$WORK/r20-cpu"; }

train_match() {
    train20 cuda "$WORK/r20-gpu20" || return 1
    losses_match "$WORK/r20-cpu/metrics.jsonl" "$WORK/r20-gpu20/metrics.jsonl" 1e-2 ""
}

# libnccl.so (what the build loads) as a link to PyTorch's libnccl.so.2,
# in a folder put first on LD_LIBRARY_PATH, unless one is found already.
nccl_library() {
    local d dirs
    ldconfig -p 2>/dev/null | grep -q 'libnccl.so ' && return 0
    IFS=: read -ra dirs <<<"$LD_LIBRARY_PATH"
    for d in "${dirs[@]}"; do [[ -e $d/libnccl.so ]] && return 0; done
    for d in "${dirs[@]}"; do
        if [[ -e $d/libnccl.so.2 ]]; then
            mkdir -p "$WORK/nccl-lib"
            ln -sf "$d/libnccl.so.2" "$WORK/nccl-lib/libnccl.so"
            export LD_LIBRARY_PATH=$WORK/nccl-lib:$LD_LIBRARY_PATH
            echo "libnccl.so -> $d/libnccl.so.2"
            return 0
        fi
    done
    echo "no libnccl.so or libnccl.so.2 on LD_LIBRARY_PATH"
    return 1
}

nccl_match() {
    nccl_library || return 1
    "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations 20 --log-every 1 \
        --eval-every 0 --checkpoint-every 0 --seed 0 --device cuda \
        --collective-backend nccl --out "$WORK/r20-nccl" || return 1
    "$PYTHON" - "$WORK/r20-gpu20/metrics.jsonl" "$WORK/r20-nccl/metrics.jsonl" <<'EOF'
import json, sys
plain, nccl = ([json.loads(l)["train_loss"] for l in open(p)] for p in sys.argv[1:])
worst = max((abs(a - b) / abs(a) for a, b in zip(plain, nccl)), default=float("inf"))
ok = len(plain) == len(nccl) == 20 and worst < 1e-3
print(f"one NCCL rank vs one GPU, 20 steps: largest relative loss difference {worst:.2e} "
      f"(limit 1e-3): {'ok' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
EOF
}

eval_match() {
    local dev
    for dev in cpu cuda; do
        "$DIST/resnet" eval --arch resnet20 --weights "$WORK/r20-cpu" --data "$DATA" --json \
            --device "$dev" >"$WORK/eval-$dev.json" || return 1
        cat "$WORK/eval-$dev.json"
    done
    "$PYTHON" - "$WORK/eval-cpu.json" "$WORK/eval-cuda.json" <<'EOF'
import json, sys
cpu, gpu = (json.load(open(p)) for p in sys.argv[1:])
# TF32 convolutions on the GPU may flip a prediction that is a near tie.
flips = [round(abs(cpu[k] - gpu[k]) * cpu["images"]) for k in ("top1_error", "top5_error")]
rel = abs(cpu["loss"] - gpu["loss"]) / abs(cpu["loss"])
print(f"top-1 {cpu['top1_error']:.4f} vs {gpu['top1_error']:.4f}, top-5 {cpu['top5_error']:.4f} "
      f"vs {gpu['top5_error']:.4f} ({flips[0]} and {flips[1]} images apart, limit 1), "
      f"loss relative difference {rel:.2e} (limit 1e-3)")
sys.exit(0 if cpu["images"] == gpu["images"] and max(flips) <= 1 and rel < 1e-3 else 1)
EOF
}

# Images/s of our training in METRICS: the median of the logged windows
# after the first (which holds the start-up: kernel loading, cuDNN's
# algorithm choices).
ours_speed() {
    "$PYTHON" - "$1" <<'EOF'
import json, statistics, sys
rates = [json.loads(l)["images_per_sec"] for l in open(sys.argv[1])]
print(f"{statistics.median(rates[1:] or rates):.1f}")
EOF
}

# "ours X images/s, PyTorch Y images/s, ours/PyTorch Z" for our METRICS and
# PyTorch's JSON, then both peaks of GPU memory held by tensors where both are
# known: the summary.json beside METRICS (the pool's high-water mark) and
# PyTorch's max_memory_allocated (which counts its batches kept on the GPU).
ratio() {
    local ours
    ours=$(ours_speed "$1") || return 1
    "$PYTHON" - "$ours" "$(dirname "$1")/summary.json" "$2" <<'EOF'
import json, os, sys
ours, summary, theirs = float(sys.argv[1]), sys.argv[2], json.load(open(sys.argv[3]))
rate = theirs["images_per_sec"]
line = f"ours {ours:.1f} images/s, PyTorch {rate:.1f} images/s, ours/PyTorch {ours / rate:.2f}"
peak = json.load(open(summary)).get("peak_gpu_memory") if os.path.exists(summary) else None
if peak is not None and theirs.get("peak_memory_gib") is not None:
    line += (f"; peak GPU memory ours {peak / 2**30:.2f} GiB, "
             f"PyTorch {theirs['peak_memory_gib']:.2f} GiB")
print(line)
EOF
}

train_speed() {
    "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations 300 --log-every 50 \
        --eval-every 0 --checkpoint-every 0 --loader-threads 8 --device cuda \
        --out "$WORK/r20-speed" || return 1
    echo "ours: resnet20 batch 128: $(ours_speed "$WORK/r20-speed/metrics.jsonl") images/s"
}

torch_speed() {
    set -o pipefail
    "$PYTHON" scripts/torch_cuda_step.py --arch resnet20 --batch 128 --iterations 300 |
        tee "$WORK/torch-r20.json" || return 1
    echo "resnet20, batch 128: $(ratio "$WORK/r20-speed/metrics.jsonl" "$WORK/torch-r20.json")"
}

kernel_speed() {
    local kernels
    for kernels in conv none; do
        RESNET_CUDA_KERNELS=$kernels "$DIST/resnet" train --arch resnet20 --data "$DATA" \
            --iterations 100 --log-every 25 --eval-every 0 --checkpoint-every 0 \
            --loader-threads 8 --device cuda --out "$WORK/r20-kernels-$kernels" || return 1
    done
    RESNET_CUDA_MEMORY=release "$DIST/resnet" train --arch resnet20 --data "$DATA" \
        --iterations 100 --log-every 25 --eval-every 0 --checkpoint-every 0 \
        --loader-threads 8 --device cuda --out "$WORK/r20-memory-release" || return 1
    echo "resnet20 images/s by RESNET_CUDA_KERNELS: ${RESNET_CUDA_KERNELS:-all} $(ours_speed "$WORK/r20-speed/metrics.jsonl")," \
        "conv $(ours_speed "$WORK/r20-kernels-conv/metrics.jsonl")," \
        "none $(ours_speed "$WORK/r20-kernels-none/metrics.jsonl");" \
        "GPU memory pool releasing freed memory at each synchronisation:" \
        "$(ours_speed "$WORK/r20-memory-release/metrics.jsonl")"
}

# ResNet-50 training on the generated image folder WORK/folder (224x224
# crops) at batch ARG1 into ARG2, with the flags after those. --lr 0.01 keeps
# the loss finite on these made-up images; a step costs the same at any lr.
r50_train() {
    local batch=$1 out=$2
    shift 2
    "$DIST/resnet" train --arch resnet50 --data "$WORK/folder" --normalization per-channel \
        --batch-size "$batch" --lr 0.01 --eval-every 0 --checkpoint-every 0 \
        --loader-threads "$LOADER_THREADS" --device cuda --out "$out" "$@"
}

r50_speed() {
    set -o pipefail
    local batch=128
    "$PYTHON" scripts/torch_cuda_step.py --write-folder "$WORK/folder" || return 1
    # 60 steps: the batches the loader threads prepare during the start-up
    # (two each) are used up by step 30, so most logged windows show the
    # loader's own pace.
    if ! r50_train $batch "$WORK/r50-b$batch" --iterations 60 --log-every 10 2>&1 |
        tee "$WORK/r50-b$batch.log"; then
        grep -qiE 'out of memory|OUT_OF_MEMORY|ALLOC_FAILED' "$WORK/r50-b$batch.log" || return 1
        batch=64
        echo "batch 128 does not fit in GPU memory: batch $batch"
        r50_train $batch "$WORK/r50-b$batch" --iterations 60 --log-every 10 || return 1
    fi
    r50_train $batch "$WORK/r50-b$batch-noaug" --iterations 30 --log-every 10 --no-augment ||
        return 1
    "$PYTHON" scripts/torch_cuda_step.py --arch resnet50 --size 224 --batch $batch \
        --iterations 30 --warmup 10 --input both | tee "$WORK/torch-r50.json" || return 1
    "$PYTHON" - "$WORK/r50-b$batch/metrics.jsonl" "$WORK/r50-b$batch-noaug/metrics.jsonl" \
        "$WORK/torch-r50.json" "$batch" "$LOADER_THREADS" <<'EOF'
import json, statistics, sys
aug_path, noaug_path, torch_path, batch, threads = sys.argv[1:]
windows = [[json.loads(l)["images_per_sec"] for l in open(p)] for p in (aug_path, noaug_path)]
# The median of the logged windows after the first (the start-up's).
aug, noaug = (statistics.median(w[1:] or w) for w in windows)
pt = json.load(open(torch_path))
host, on_gpu = pt["images_per_sec"], pt["images_per_sec_gpu_input"]
speedup = noaug / aug
limited = speedup >= 1.1
print(f"resnet50 224x224, batch {batch}, {threads} loader threads")
for name, w in zip(("augmented", "without augmentation"), windows):
    print(f"ours {name}, images/s per 10-step window (the first holds the start-up): "
          + " ".join(f"{r:.1f}" for r in w))
print(f"PyTorch (random batches, no data loading): {host:.1f} images/s copying each batch from "
      f"pinned host memory, {on_gpu:.1f} with the batches already on the GPU")
print(f"ours without augmentation (decode and crop only, the same GPU work) runs {speedup:.2f}x "
      "the augmented run: " + (f"our data loading on {threads} CPU threads limits the augmented "
      "run; the run without augmentation is the closer measure of the training step" if limited
      else "our data loading is not what limits it"))
print(f"resnet50 at 224, batch {batch}: ours {aug:.1f} images/s, PyTorch {host:.1f} images/s, "
      f"ours/PyTorch {aug / host:.2f} (target 0.8; without augmentation {noaug / host:.2f}, "
      + ("loader-bound)" if limited else "loader not the limit)"))
peak = json.load(open(aug_path.replace("metrics.jsonl", "summary.json"))).get("peak_gpu_memory")
if peak is not None and pt.get("peak_memory_gib") is not None:
    print(f"peak GPU memory held by tensors, batch {batch}: ours {peak / 2**30:.2f} GiB, PyTorch "
          f"{pt['peak_memory_gib']:.2f} GiB (with its 4 batches on the GPU; target: ours no more)")
EOF
}

# bf16 mixed precision: against the CPU's bf16 run, then against PyTorch's
# bf16 autocast.
bf16() {
    set -o pipefail
    local dev layout r50
    for dev in cpu cuda; do
        train20 "$dev" "$WORK/r20-bf16-$dev" --precision bf16 || return 1
    done
    losses_match "$WORK/r20-bf16-cpu/metrics.jsonl" "$WORK/r20-bf16-cuda/metrics.jsonl" 3e-2 \
        "bf16, " || return 1
    "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations 300 --log-every 50 \
        --eval-every 0 --checkpoint-every 0 --loader-threads 8 --precision bf16 --device cuda \
        --out "$WORK/r20-bf16-speed" || return 1
    for layout in "" --channels-last; do
        "$PYTHON" scripts/torch_cuda_step.py --arch resnet20 --batch 128 --iterations 300 \
            --precision bf16 $layout | tee "$WORK/torch-r20-bf16$layout.json" || return 1
        echo "resnet20 bf16, batch 128, PyTorch ${layout:-NCHW}:" \
            "$(ratio "$WORK/r20-bf16-speed/metrics.jsonl" "$WORK/torch-r20-bf16$layout.json")"
    done
    [[ -d $WORK/folder ]] || "$PYTHON" scripts/torch_cuda_step.py --write-folder "$WORK/folder" ||
        return 1
    r50="$WORK/r50-bf16-noaug"
    r50_train 128 "$r50" --iterations 30 --log-every 10 --no-augment --precision bf16 || return 1
    "$PYTHON" scripts/torch_cuda_step.py --arch resnet50 --size 224 --batch 128 \
        --iterations 30 --warmup 10 --precision bf16 --channels-last |
        tee "$WORK/torch-r50-bf16.json" || return 1
    echo "resnet50 bf16 at 224, batch 128, no augmentation, PyTorch channels-last:" \
        "$(ratio "$r50/metrics.jsonl" "$WORK/torch-r50-bf16.json")"
}

# Channels-last activations (`--channels-last`): ResNet-20's 20 GPU steps
# against the CPU's NCHW ones, then images/s against PyTorch channels-last.
channels_last() {
    set -o pipefail
    local precision r50
    train20 cuda "$WORK/r20-cl-gpu20" --channels-last || return 1
    losses_match "$WORK/r20-cpu/metrics.jsonl" "$WORK/r20-cl-gpu20/metrics.jsonl" 1e-2 \
        "channels-last, " || return 1
    "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations 300 --log-every 50 \
        --eval-every 0 --checkpoint-every 0 --loader-threads 8 --channels-last --device cuda \
        --out "$WORK/r20-cl-speed" || return 1
    "$PYTHON" scripts/torch_cuda_step.py --arch resnet20 --batch 128 --iterations 300 \
        --channels-last | tee "$WORK/torch-r20-cl.json" || return 1
    local nchw=""
    [[ -f $WORK/r20-speed/metrics.jsonl ]] &&
        nchw=" (ours NCHW: $(ours_speed "$WORK/r20-speed/metrics.jsonl"))"
    echo "resnet20 channels-last fp32, batch 128$nchw:" \
        "$(ratio "$WORK/r20-cl-speed/metrics.jsonl" "$WORK/torch-r20-cl.json")"
    [[ -d $WORK/folder ]] || "$PYTHON" scripts/torch_cuda_step.py --write-folder "$WORK/folder" ||
        return 1
    for precision in fp32 bf16; do
        r50="$WORK/r50-cl-$precision"
        r50_train 128 "$r50" --iterations 30 --log-every 10 --no-augment --channels-last \
            --precision $precision || return 1
        "$PYTHON" scripts/torch_cuda_step.py --arch resnet50 --size 224 --batch 128 \
            --iterations 30 --warmup 10 --precision $precision --channels-last |
            tee "$WORK/torch-r50-cl-$precision.json" || return 1
        echo "resnet50 channels-last $precision at 224, batch 128, no augmentation:" \
            "$(ratio "$r50/metrics.jsonl" "$WORK/torch-r50-cl-$precision.json")"
    done
}

# The same training recipe in ours and in plain PyTorch: final test errors.
recipe_match() {
    set -o pipefail
    local n=${RECIPE_ITERATIONS:-1500} seed milestones
    milestones="$((n / 2)),$((n * 3 / 4))"
    for seed in 1 2; do
        "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations "$n" \
            --milestones "$milestones" --seed "$seed" --log-every 500 --eval-every 0 \
            --checkpoint-every 0 --loader-threads 8 --device cuda \
            --out "$WORK/recipe-ours-$seed" >/dev/null || return 1
        "$PYTHON" scripts/torch_cifar_train.py --data "$DATA" --iterations "$n" \
            --milestones "$milestones" --seed "$seed" | tee "$WORK/recipe-torch-$seed.json" ||
            return 1
    done
    "$PYTHON" - "$WORK" "$n" <<'EOF'
import json, statistics, sys
work, n = sys.argv[1], sys.argv[2]
ours, theirs = [], []
for seed in (1, 2):
    summary = json.load(open(f"{work}/recipe-ours-{seed}/summary.json"))
    ours.append(100.0 * summary["test"]["top1_error"])
    theirs.append(json.load(open(f"{work}/recipe-torch-{seed}.json"))["test_error"])
spread = max(ours + theirs) - min(ours + theirs)
gap = abs(statistics.mean(ours) - statistics.mean(theirs))
print(f"resnet20, {n} iterations, seeds 1 and 2, test error %: ours "
      + " / ".join(f"{e:.1f}" for e in ours) + ", PyTorch " + " / ".join(f"{e:.1f}" for e in theirs)
      + f"; means {statistics.mean(ours):.1f} vs {statistics.mean(theirs):.1f}, "
      + f"gap {gap:.1f} (limit: spread {spread:.1f} + 2)")
sys.exit(0 if gap <= spread + 2.0 else 1)
EOF
}

# Nsight Systems, where the machine has it: on PATH or in a CUDA toolkit.
find_nsys() {
    local candidate
    for candidate in "$(command -v nsys)" /usr/local/cuda/bin/nsys /usr/local/cuda-*/bin/nsys \
        /opt/nvidia/nsight-systems/*/bin/nsys; do
        [[ -n $candidate && -x $candidate ]] && { echo "$candidate"; return; }
    done
}

# Where a ResNet-20 training step's GPU time goes: 40 steps under Nsight
# Systems, then the kernels by total time and the CUDA API calls (launch and
# synchronisation overhead). Skipped where the machine has no nsys.
profile() {
    local nsys
    nsys=$(find_nsys)
    if [[ -z $nsys ]]; then
        echo "no nsys on this machine: profile skipped"
        return 0
    fi
    "$nsys" profile --force-overwrite true --trace cuda -o "$WORK/r20-profile" \
        "$DIST/resnet" train --arch resnet20 --data "$DATA" --iterations 40 --log-every 10 \
        --eval-every 0 --checkpoint-every 0 --loader-threads 8 --device cuda \
        --out "$WORK/r20-profiled" >/dev/null || return 1
    "$nsys" stats --report cuda_gpu_kern_sum --format table "$WORK/r20-profile.nsys-rep" |
        head -n 30
    "$nsys" stats --report cuda_api_sum --format table "$WORK/r20-profile.nsys-rep" | head -n 20
    # Kernel launches per step: every launch call of the run (start-up and
    # the final evaluation included) over its 40 steps.
    "$nsys" stats --report cuda_api_sum --format csv "$WORK/r20-profile.nsys-rep" |
        "$PYTHON" -c '
import csv, sys
rows = [r for r in csv.reader(sys.stdin) if len(r) > 8]
head = rows[0]
name, calls = head.index("Name"), head.index("Num Calls")
launches = sum(int(r[calls]) for r in rows[1:] if "LaunchKernel" in r[name])
print(f"kernel launches: {launches} in 40 steps, {launches / 40:.0f} per step at most")'
    echo "profile: see above (ResNet-20, 40 steps of batch 128)"
}

export -f gpu libs ops_tests conv_timing train20 losses_match weights train_match nccl_library nccl_match eval_match ours_speed \
    ratio train_speed torch_speed kernel_speed r50_train r50_speed bf16 channels_last recipe_match find_nsys profile \
    loader_speed faults

note "gpu-check of $DIST, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
stage gpu 30 gpu
stage libs 30 libs
stage faults 45 faults
stage ops-tests 120 ops_tests
stage conv-timing 60 conv_timing
stage weights 90 weights
stage train-match 60 train_match
kernel_fallback
stage nccl-match 45 nccl_match
stage eval-match 60 eval_match
stage train-speed 90 train_speed
stage torch-speed 90 torch_speed
stage kernel-speed 60 kernel_speed
stage r50-speed 150 r50_speed
stage bf16 120 bf16
stage channels-last 150 channels_last
stage recipe-match 150 recipe_match
stage loader-speed 45 loader_speed
stage profile 45 profile
for f in train-match nccl-match eval-match train-speed torch-speed kernel-speed r50-speed loader-speed; do
    [[ -f $OUT_DIR/$f.log ]] && tail -n 1 "$OUT_DIR/$f.log" | sed "s/^/$f: /" >>"$SUMMARY"
done
[[ -f $OUT_DIR/bf16.log ]] && grep -E '^(bf16, first|resnet(20|50) bf16)' "$OUT_DIR/bf16.log" |
    sed 's/^/bf16: /' >>"$SUMMARY"
echo
echo "=== summary ($SECONDS s)"
cat "$SUMMARY"
! grep -qE '^\[(failed|timed out|skipped)\]' "$SUMMARY"
