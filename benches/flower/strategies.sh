#!/usr/bin/env bash
# The strategies federation of daofl's examples/strategies run again by Flower (flwr 1.42) and
# PyTorch: the same members' data, initial weights, CNN, local training and schedule, from the
# files daofl exported to RUN/export. Writes RUN/flower.csv (Flower's log in RUN/flower.log),
# prints a table against daofl's RUN/daofl.csv and the time of one local epoch of the CNN in
# PyTorch. Usage: benches/flower/strategies.sh [RUN]   (default runs/strategies-fashion)
# Environment: STRATEGIES (default fedavg,fedprox:0.01,fedadam), THREADS (torch threads and the
# one client's CPUs, default nproc), FLWR_TORCH_VENV (default benches/flower/.venv-torch).
#
# PyTorch is Debian's CPU build (python3-torch; PyPI's Linux wheels pull gigabytes of CUDA), so
# the venv is made from Debian's /usr/bin/python3 with the system site packages: a `python3`
# from pyenv or elsewhere would not see it. numpy stays below 2 for that torch (1.13).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run=${1:-runs/strategies-fashion}
case $run in /*) ;; *) run=$root/$run ;; esac
strategies=${STRATEGIES:-fedavg,fedprox:0.01,fedadam}
threads=${THREADS:-$(nproc)}
venv=${FLWR_TORCH_VENV:-$here/.venv-torch}

if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y -q python3-torch ||
        { $sudo apt-get update -q && $sudo apt-get install -y -q python3-torch; }
fi
if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/pip" install -q "flwr[simulation]==1.42.*" "numpy<2"
py="$venv/bin/python"

if ! ls "$run"/export/*.json >/dev/null 2>&1; then
    echo "no export in $run/export: run daofl's examples/strategies with the export first" >&2
    exit 1
fi
rm -f "$run/flower.csv"
if ! "$py" "$here/strategies_flwr.py" --export "$run/export" --strategies "$strategies" \
        --out "$run/flower.csv" --threads "$threads" 2> "$run/flower.log"; then
    tail -n 40 "$run/flower.log" >&2
    exit 1
fi

echo
if [ -f "$run/daofl.csv" ]; then
    "$py" "$here/strategies_flwr.py" --compare "$run/daofl.csv" "$run/flower.csv"
else
    echo "no $run/daofl.csv: nothing to compare with" >&2
fi

echo
idx_dir=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["idx_dir"])' \
    "$(ls "$run"/export/*.json | head -n 1)")
channels=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["channels"])' \
    "$(ls "$run"/export/*.json | head -n 1)")
"$py" "$here/strategies_flwr.py" --epoch-bench 1000 --idx-dir "$idx_dir" --channels "$channels" \
    --threads "$threads"
