"""Flower's SecAgg+ math for one round, in one process, timed per role.

Calls the client mod's stage handlers (flwr.client.mod.secure_aggregation.secaggplus_mod:
_setup, _share_keys, _collect_masked_vectors, _unmask) directly, and replays the server
workflow's arithmetic (SecAggPlusWorkflow: neighbour graph, forwarding, summing the masked
vectors, combine_shares, pseudo_rand_gen, dequantize) with Flower's own helpers, without a
Grid or a real server. Prints one JSON line (--json) or a short table.

    python secaggplus_bench.py [--n 100] [--d 1000000] [--shares 11] [--t 6] [--dropout 0.1]
"""

import argparse
import importlib
import json
import random
import time

import numpy as np

from flwr.common import ndarray_to_bytes, ndarrays_to_parameters, bytes_to_ndarray
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import Key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

# The module, not the function of the same name that the package re-exports.
mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--shares", type=int, default=11)
    ap.add_argument("--t", type=int, default=6)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    clipping_range, quantization_range, mod_range, max_weight = 8.0, 4194304, 1 << 32, 1000.0
    rng = np.random.default_rng(7)
    update = [((np.arange(a.d) % 1000) - 500.0).astype(np.float32) * 1e-6]
    ids = list(range(1, a.n + 1))
    n_drop = round(a.n * a.dropout)
    dropped = {ids[k * a.n // max(n_drop, 1)] for k in range(n_drop)}

    client_cpu = 0.0
    server_cpu = 0.0
    masked_bytes = 0

    def client(f, *args):
        nonlocal client_cpu
        t0 = time.process_time()
        out = f(*args)
        client_cpu += time.process_time() - t0
        return out

    # Server: the graph (as SecAggPlusWorkflow.setup_stage).
    t0 = time.process_time()
    shuffled = ids[:]
    random.shuffle(shuffled)
    half = a.shares >> 1
    neighbours = {
        nid: {shuffled[(i + o) % a.n] for o in range(-half, half + 1)}
        for i, nid in enumerate(shuffled)
    }
    server_cpu += time.process_time() - t0

    # Stage 0: setup, public keys.
    states = {nid: mod.SecAggPlusState() for nid in ids}
    keys = {}
    for nid in ids:
        st = states[nid]
        st.nid = nid
        cfg = {
            Key.SAMPLE_NUMBER: a.n,
            Key.SHARE_NUMBER: a.shares,
            Key.THRESHOLD: a.t,
            Key.CLIPPING_RANGE: clipping_range,
            Key.TARGET_RANGE: quantization_range,
            Key.MOD_RANGE: mod_range,
            Key.MAX_WEIGHT: max_weight,
        }
        res = client(mod._setup, st, cfg)
        keys[nid] = (res[Key.PUBLIC_KEY_1], res[Key.PUBLIC_KEY_2])

    # Stage 1: share keys (server forwards neighbours' keys, then routes ciphertexts).
    fwd = {nid: ([], []) for nid in ids}
    for nid in ids:
        t0 = time.process_time()
        cfg = {str(j): list(keys[j]) for j in neighbours[nid]}
        server_cpu += time.process_time() - t0
        res = client(mod._share_keys, states[nid], cfg)
        t0 = time.process_time()
        for dst, ct in zip(res[Key.DESTINATION_LIST], res[Key.CIPHERTEXT_LIST]):
            fwd[dst][0].append(nid)
            fwd[dst][1].append(ct)
        server_cpu += time.process_time() - t0

    # Stage 2: masked vectors (the dropped clients never send theirs).
    masked_sum = None
    active = [nid for nid in ids if nid not in dropped]
    for nid in active:
        cfg = {Key.CIPHERTEXT_LIST: fwd[nid][1], Key.SOURCE_LIST: fwd[nid][0]}
        res = client(
            mod._collect_masked_vectors,
            states[nid],
            cfg,
            int(max_weight),
            ndarrays_to_parameters(update),
        )
        blobs = res[Key.MASKED_PARAMETERS]
        masked_bytes += sum(len(b) for b in blobs)
        t0 = time.process_time()
        vec = [bytes_to_ndarray(b) for b in blobs]
        masked_sum = vec if masked_sum is None else parameters_addition(masked_sum, vec)
        server_cpu += time.process_time() - t0
    t0 = time.process_time()
    masked_sum = parameters_mod(masked_sum, mod_range)
    server_cpu += time.process_time() - t0

    # Stage 3: unmask.
    active_set, dead_set = set(active), set(dropped)
    collected = {nid: [] for nid in ids}
    for nid in active:
        cfg = {
            Key.ACTIVE_NODE_ID_LIST: list(neighbours[nid] & active_set),
            Key.DEAD_NODE_ID_LIST: list(neighbours[nid] & dead_set),
        }
        res = client(mod._unmask, states[nid], cfg)
        t0 = time.process_time()
        for owner, share in zip(res[Key.NODE_ID_LIST], res[Key.SHARE_LIST]):
            collected[owner].append(share)
        server_cpu += time.process_time() - t0

    t0 = time.process_time()
    vec = masked_sum
    for nid, shares in collected.items():
        assert len(shares) >= a.t, "not enough shares"
        secret = combine_shares(shares)
        if nid in active_set:
            vec = parameters_subtraction(
                vec, pseudo_rand_gen(secret, mod_range, get_parameters_shape(vec))
            )
        else:
            nb = set(neighbours[nid])
            nb.discard(nid)
            for j in nb:
                sk = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(keys[j][0]))
                m = pseudo_rand_gen(sk, mod_range, get_parameters_shape(vec))
                vec = parameters_addition(vec, m) if nid > j else parameters_subtraction(vec, m)
    vec = parameters_mod(vec, mod_range)
    q_total, vec = factor_extract(vec)
    agg = dequantize(vec, clipping_range, quantization_range)
    offset = -(len(active) - 1) * clipping_range
    for v in agg:
        v += offset
        v *= quantization_range / q_total
    server_cpu += time.process_time() - t0

    # Check: the weighted average of identical updates is the update.
    err = float(np.max(np.abs(agg[0] - update[0])))
    result = {
        "impl": "flower",
        "flwr": __import__("flwr").__version__,
        "n": a.n,
        "d": a.d,
        "k": a.shares,
        "t": a.t,
        "dropped": n_drop,
        "client_cpu_s": round(client_cpu / a.n, 4),
        "server_cpu_s": round(server_cpu, 4),
        "round_cpu_s": round(client_cpu + server_cpu, 4),
        "bytes_per_param": round(masked_bytes / len(active) / a.d, 4),
        "max_abs_error": err,
    }
    if a.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>16} {v}")


if __name__ == "__main__":
    main()
