#!/usr/bin/env bash
# Flower's robust strategies (Krum, MultiKrum, Bulyan, FedMedian, FedTrimmedAvg; flwr 1.42) next
# to daofl's on the same digits federation, the same training and the same attackers: daofl's
# simulator trains every member and runs every attack, and each round Flower's aggregation
# function (benches/flower/robust_agg.py, a child process) or ours turns the same updates into
# the next model. Prints one table. Usage: benches/flower/robust.sh [extra robust arguments]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${FLWR_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "flwr==1.42.*"
export DAOFL_FLOWER_PYTHON="$venv/bin/python"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q --release -p benches --bin robust)
"$CARGO_TARGET_DIR/release/robust" rounds=20 seeds=2026,2027,2028 tau=5 max_norm=5 flower=1 \
    'rules=krum,flower_krum,multi_krum,flower_multi_krum,bulyan,flower_bulyan,median,flower_median,trimmed_mean,flower_trimmed_mean' \
    'attacks=none,sign_flip,scaling(20),gaussian(1),label_flip,alie(1.5),ipm(0.1),ipm(100)' "$@"
