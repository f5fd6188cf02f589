#!/usr/bin/env bash
# Annotation consensus side by side: daofl's Dawid-Skene and majority vote against crowd-kit's
# (pip `crowd-kit`, in a venv this script makes), on the exact same answers, in the same run.
# The answers are simulated annotators over the real governance-proposal corpus, with the real
# outcome and kind of each decided proposal as gold (contrib/examples/consensus.rs).
# Usage: benches/crowdkit/run.sh [--replicates N] [--seed S]   (defaults 5 and 2026)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${CROWDKIT_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "crowd-kit==1.4.2"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
out=${CROWDKIT_OUT:-$here/out}
rm -rf "$out"
mkdir -p "$out"
echo "machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
# The dev profile optimises every dependency (k256 signing among them); contrib's own code,
# the EM included, is unoptimised, so its seconds are an upper bound.
(cd "$root" && cargo run -q -p contrib --example consensus -- --out "$out" "$@")
"$venv/bin/python" "$here/compare.py" "$out"
