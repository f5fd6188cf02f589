#!/usr/bin/env bash
# Local epoch time on CPU vs wgpu vs CUDA (issue "Training on GPU"), in one go on a machine with
# a GPU: the digits MLP, the Fashion-MNIST CNN and the proposal transformer
# (benches/src/bin/gpu_epoch.rs), the GPU's memory peak, and PyTorch's epoch of the same CNN on
# the same GPU where torch with CUDA is installed.
#
# The device machine has no network, so build here and carry the binary:
#
#   cargo build --release -p benches --features wgpu --bin gpu_epoch
#   # add `,cuda` where cubecl-llvm's LLVM 23 bundle can be fetched (README "Train on a GPU")
#   mkdir -p target/gpu && strip -o target/gpu/gpu_epoch target/release/gpu_epoch
#   gzip -9 target/gpu/gpu_epoch   # the device tool carries at most 64 MiB: a stripped build
#                                  # with wgpu is about 80 MB (debug), 22 MB gzipped
#
# then run `benches/gpu/run.sh` there from the repository root (carry `target/gpu`; a
# `gpu_epoch.gz` there is unpacked into a temporary folder first). It writes
# the report to $OUT/gpu-epoch.txt (or /tmp) as well as to stdout. Environment: GPU_EPOCH (the
# binary), FASHION_DIR (IDX files; default Debian's dataset-fashion-mnist, else the sample
# shipped in fl-client/data), FASHION_N (images, default 10000), REPEATS (default 3).
set -uo pipefail
cd "$(dirname "$0")/../.."

bin=${GPU_EPOCH:-target/gpu/gpu_epoch}
fashion=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}
[ -f "$fashion/train-images-idx3-ubyte.gz" ] || fashion=fl-client/data/fashion-mnist-sample
fashion_n=${FASHION_N:-10000}
repeats=${REPEATS:-3}
out=${OUT:-/tmp}
work=$(mktemp -d)
sampler=""
cleanup() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

report() {
    echo "date: $(date -u +%FT%TZ); host: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader
    if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then
        gunzip -c "$bin.gz" >"$work/gpu_epoch" && chmod +x "$work/gpu_epoch" && bin="$work/gpu_epoch"
    fi
    [ -x "$bin" ] || { echo "no $bin: build it first (see the top of $0)"; return 1; }
    "$bin" --list >"$work/list.txt" || return 1
    cat "$work/list.txt"
    common=(--fashion "$fashion" --fashion-n "$fashion_n" --repeats "$repeats" --csv "$work/times.csv")

    # The CPU leg as this project's members have it: two cores.
    echo "== cpu, pinned to cores 0-1 (RAYON_NUM_THREADS=2)"
    RAYON_NUM_THREADS=2 taskset -c 0,1 "$bin" --devices cpu "${common[@]}"

    # The GPU legs with the whole host, the GPU's memory sampled every 100 ms meanwhile.
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 \
            >"$work/memory.txt" 2>/dev/null &
        sampler=$!
    fi
    local gpus
    gpus=$(sed -n '1s/.*: //; 1s/cpu, *//; 1s/cpu//; 1s/ //g; 1p' "$work/list.txt")
    for device in ${gpus//,/ }; do
        echo "== $device"
        "$bin" --devices "$device" "${common[@]}"
    done
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null
        wait "$sampler" 2>/dev/null
        sampler=""
        echo "GPU memory peak: $(sort -n "$work/memory.txt" | tail -1) MiB used (nvidia-smi, every 100 ms, whole GPU)"
    fi

    # PyTorch on the same GPU, the same CNN epoch (benches/flower/strategies_flwr.py).
    if python3 -c 'import torch, numpy; assert torch.cuda.is_available()' 2>/dev/null; then
        echo "== PyTorch, same CNN, same images"
        python3 benches/flower/strategies_flwr.py --epoch-bench "$fashion_n" --idx-dir "$fashion" \
            --torch-device cuda
    else
        echo "== PyTorch with CUDA not installed here: no PyTorch comparison"
    fi

    echo "== epoch seconds and speed-up over the two-core CPU"
    awk -F, '
        $3 == "cpu" { cpu[$1] = $4 }
        { rows[NR] = $0 }
        END {
            printf "%-12s %8s %-8s %12s %10s\n", "model", "examples", "device", "epoch (s)", "vs cpu"
            for (i = 1; i <= NR; i++) {
                split(rows[i], f, ",")
                ratio = (f[1] in cpu) ? sprintf("%9.2fx", cpu[f[1]] / f[4]) : "-"
                printf "%-12s %8s %-8s %12.4f %10s\n", f[1], f[2], f[3], f[4], ratio
            }
        }' "$work/times.csv"
}

report 2>&1 | tee "$out/gpu-epoch.txt"
