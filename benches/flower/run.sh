#!/usr/bin/env bash
# Side by side: Flower's SecAgg+ (flwr 1.42) and daofl's secure-agg, one whole round each, same
# n, shares, threshold, dimension and dropout, measured in the same run. Prints one table with
# the ratios. Usage: benches/flower/run.sh [n] [d]   (defaults 100 and 1000000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-100}
d=${2:-1000000}
shares=11
t=6
dropout=0.1
venv=${FLWR_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "flwr==1.42.*"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q --release -p secure-agg --example secagg_round)
ours="$CARGO_TARGET_DIR/release/examples/secagg_round"

out=$(mktemp)
# Python only under a memory and time limit.
(ulimit -v 8000000; timeout 900 "$venv/bin/python" "$here/secaggplus_bench.py" \
    --n "$n" --d "$d" --shares "$shares" --t "$t" --dropout "$dropout" --json) >> "$out"
for prg in chacha20 aes chacha8; do
    for bits in 32 16; do
        "$ours" --n "$n" --d "$d" --degree $((shares - 1)) --t "$t" --dropout "$dropout" \
            --prg "$prg" --bits "$bits" --json >> "$out"
    done
done
# The same round with the pure-Rust k256 ECDSA verifier instead of libsecp256k1.
"$ours" --n "$n" --d "$d" --degree $((shares - 1)) --t "$t" --dropout "$dropout" \
    --prg aes --bits 16 --ecdsa k256 --json >> "$out"
# Where the CPU has VAES and AVX2: the same example built for them at compile time. The `aes`
# crate (0.9) detects VAES at run time only together with AVX-512 state, so on AVX2-only CPUs
# with VAES (AMD Zen 3) the portable build above runs AES-NI on 128-bit registers. This build
# runs only on CPUs with VAES and AVX2.
if grep -qw vaes /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo; then
    vaes_dir=${VAES_TARGET_DIR:-$CARGO_TARGET_DIR/vaes-build}
    (cd "$root" && RUSTFLAGS="-C target-feature=+aes,+vaes,+avx2,+avx" CARGO_TARGET_DIR="$vaes_dir" \
        cargo build -q --release -p secure-agg --example secagg_round)
    for bits in 32 16; do
        "$vaes_dir/release/examples/secagg_round" --n "$n" --d "$d" --degree $((shares - 1)) \
            --t "$t" --dropout "$dropout" --prg aes --bits "$bits" --build vaes --json >> "$out"
    done
fi

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
flower = rows[0]
print(f"n={flower['n']} d={flower['d']} shares={flower['k']} t={flower['t']} "
      f"dropped={flower['dropped']}; CPU seconds (one core); ratio = Flower / ours")
hdr = (f"{'implementation':<48}{'client s':>10}{'verify s':>10}{'server s':>10}{'round s':>10}"
       f"{'B/param':>9}{'round ratio':>13}")
print(hdr)
print("-" * len(hdr))
for r in rows:
    if r["impl"] == "flower":
        name = f"flwr {r['flwr']} (MT19937)"
    else:
        name = f"daofl {r['prg']} k={r['bits']} {r.get('ecdsa', '')}"
        if r.get("build"):
            name += f" ({r['build']} build)"
    verify = r.get("client_verify_s")
    verify = f"{verify:>10.4f}" if verify is not None else f"{'-':>10}"
    ratio = flower["round_cpu_s"] / r["round_cpu_s"]
    print(f"{name:<48}{r['client_cpu_s']:>10.4f}{verify}{r['server_cpu_s']:>10.3f}"
          f"{r['round_cpu_s']:>10.3f}{r['bytes_per_param']:>9.3f}{ratio:>12.1f}x")
print("client s: mean per client, all stages; verify s: the part of it spent verifying the n "
      "signed advertisements (count x CPU per verification, measured apart)")
PY
rm -f "$out"
