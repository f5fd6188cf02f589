"""Flower's robust aggregation functions behind a pipe, for daofl's robustness benchmark.

daofl's simulator trains the members and runs the attacks; each round it sends the members'
models and example counts here and takes back what Flower's strategy would make of them, so
both frameworks' rules see exactly the same updates. The rules are the ones Flower's
strategies call (flwr 1.42, flwr.server.strategy.aggregate): Krum and MultiKrum
(`Krum(num_malicious_clients, num_clients_to_keep)` -> aggregate_krum), FedMedian
(aggregate_median), FedTrimmedAvg(beta) (aggregate_trimmed_avg) and Bulyan (aggregate_bulyan
with aggregate_krum as its first rule, Flower's default).

Protocol on stdin/stdout: a JSON line {"rule", "f", "keep", "beta", "n", "d", "weights"} then
n*d little-endian float32 (the members' models, row after row); the answer is d float32, or a
JSON error line starting with "!".
"""

import json
import sys

import numpy as np
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)


def aggregate(req, models):
    results = [([m], int(w)) for m, w in zip(models, req["weights"])]
    rule = req["rule"]
    if rule == "krum":
        return aggregate_krum(results, req["f"], 0)
    if rule == "multi_krum":
        return aggregate_krum(results, req["f"], req["keep"])
    if rule == "median":
        return aggregate_median(results)
    if rule == "trimmed_mean":
        return aggregate_trimmed_avg(results, req["beta"])
    if rule == "bulyan":
        return aggregate_bulyan(results, req["f"], aggregate_krum, to_keep=0)
    raise ValueError(f"unknown rule {rule}")


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        n, d = req["n"], req["d"]
        raw = stdin.read(4 * n * d)
        if len(raw) != 4 * n * d:
            return
        models = np.frombuffer(raw, dtype="<f4").reshape(n, d)
        try:
            out = np.asarray(aggregate(req, [m.copy() for m in models])[0], dtype="<f4")
            stdout.write(b"=" + out.tobytes())
        except Exception as e:  # noqa: BLE001 - reported to the caller
            stdout.write(b"!" + json.dumps(str(e)).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    main()
