"""daofl's strategies federation run again by Flower (flwr 1.42, Message API) and PyTorch.

daofl's `examples/strategies` exports, per partition and seed, a JSON file with the members'
indices into Fashion-MNIST, the test indices, the initial weights (a flat little-endian f32
file next to it) and the schedule. This script runs the same federation in Flower's Simulation
Runtime (Ray backend, one actor with all CPUs, so the clients train one at a time) with the
same CNN, the same local training (Adam, eps 1e-5 as burn's) and Flower's own strategies, and
appends one CSV row per round:

    framework,strategy,partition,seed,round,accuracy,round_seconds,fit_seconds

round_seconds: the server's wall time of a round, from the strategy's configure_train to the
end of its aggregate_train (sending the global model, the clients' work, the replies and the
aggregation; not the central evaluation). fit_seconds: the sum over the round's clients of the
wall time of the local training loop alone, measured inside the client.

Modes:
  --export DIR --strategies fedavg,fedprox:0.01,fedadam --out CSV [--threads N]
  --epoch-bench N [--idx-dir DIR] [--channels C] [--threads N] [--torch-device cpu|cuda]
  --compare DAOFL_CSV FLOWER_CSV      (standard library only: runs with any python3)
"""

import argparse
import csv
import glob
import gzip
import json
import os
import statistics
import struct
import sys
import time
from collections import defaultdict

# Off before flwr or ray are imported: there is no network to send usage reports to. No
# __pycache__ next to this file either (Ray's workers inherit the environment).
sys.dont_write_bytecode = True
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

COLUMNS = ["framework", "strategy", "partition", "seed", "round", "accuracy",
           "round_seconds", "fit_seconds"]

# Flower's FedAdam as configured here: eta, eta_l, beta_1, beta_2 are flwr 1.42's defaults;
# tau is given explicitly because the two FedAdam classes of flwr 1.42 disagree on it: the
# legacy flwr.server.strategy.FedAdam defaults to 1e-9, the Message-API
# flwr.serverapp.strategy.FedAdam used here to 1e-3. 1e-9 is daofl's default.
FEDADAM = {"eta": 0.1, "eta_l": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9}


# ---------------------------------------------------------------------------------------------
# Data and model (used in the driver and in the Ray actor)
# ---------------------------------------------------------------------------------------------

def read_idx(path, magic):
    """A gzip IDX file as (shape, bytes)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    (m,) = struct.unpack(">I", data[:4])
    if m != magic:
        raise ValueError(f"{path}: magic {m:#x}, expected {magic:#x}")
    dims = 3 if magic == 0x803 else 1
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    body = data[4 + 4 * dims:]
    n = 1
    for d in shape:
        n *= d
    if len(body) != n:
        raise ValueError(f"{path}: {len(body)} bytes of data, header says {n}")
    return shape, body


_IDX_CACHE = {}


def load_split(idx_dir, split):
    """(images uint8 [n, 28, 28], labels int64 [n]) of 'train' or 't10k', cached per process."""
    import numpy as np
    key = (os.path.abspath(idx_dir), split)
    if key not in _IDX_CACHE:
        shape, img = read_idx(os.path.join(idx_dir, f"{split}-images-idx3-ubyte.gz"), 0x803)
        (n,), lab = read_idx(os.path.join(idx_dir, f"{split}-labels-idx1-ubyte.gz"), 0x801)
        if n != shape[0]:
            raise ValueError(f"{idx_dir}: {shape[0]} {split} images but {n} labels")
        images = np.frombuffer(img, dtype=np.uint8).reshape(shape)
        labels = np.frombuffer(lab, dtype=np.uint8).astype(np.int64)
        _IDX_CACHE[key] = (images, labels)
    return _IDX_CACHE[key]


def tensors(images, labels, indices):
    """Float [n, 1, 28, 28] pixels p/255 and int64 labels of the given indices."""
    import numpy as np
    import torch
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(labels)):
        raise IndexError(f"index out of range 0..{len(labels)}")
    x = torch.from_numpy(images[idx].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels[idx].copy())
    return x, y


def make_net(channels):
    """Conv(1,C,3,p1)-ReLU-MaxPool2 - Conv(C,2C,3,p1)-ReLU-MaxPool2 - Linear(2C*7*7, 10)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c, 3, padding=1)
            self.conv2 = nn.Conv2d(c, 2 * c, 3, padding=1)
            self.pool = nn.MaxPool2d(2, 2)
            self.output = nn.Linear(2 * c * 7 * 7, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.conv1(x)))
            x = self.pool(torch.relu(self.conv2(x)))
            return self.output(torch.flatten(x, 1))

    return Net(channels)


def initial_state(spec, base):
    """The export's initial weights as a torch state dict (output.weight transposed)."""
    import numpy as np
    import torch
    flat = np.fromfile(os.path.join(base, spec["initial"]), dtype="<f4")
    state, off = {}, 0
    for name, shape in spec["layout"]:
        size = int(np.prod(shape))
        a = flat[off:off + size].reshape(shape)
        off += size
        if name == "output.weight":  # burn's Linear stores [d_in, d_out]; torch's [out, in]
            a = a.T
        state[name] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if off != flat.size:
        raise ValueError(f"{spec['initial']}: {flat.size} floats, layout needs {off}")
    return state


def adam(model, lr):
    import torch
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-5,
                            weight_decay=0.0)


def train_epochs(model, x, y, *, epochs, batch_size, lr, rng, mu=0.0):
    """`epochs` shuffled passes of Adam (fresh) over (x, y); mean cross-entropy, plus
    mu/2 * ||w - w_start||^2 when mu > 0 (FedProx). Returns the loop's wall seconds."""
    import torch
    import torch.nn.functional as F
    opt = adam(model, lr)
    anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    model.train()
    n = len(y)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(n))
        for b in range(0, n, batch_size):
            sel = perm[b:b + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[sel]), y[sel])
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                loss = loss + (mu / 2.0) * prox
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def accuracy(model, x, y, batch=1000):
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(y), batch):
            correct += int((model(x[b:b + batch]).argmax(1) == y[b:b + batch]).sum())
    return correct / max(1, len(y))


# ---------------------------------------------------------------------------------------------
# ClientApp (runs in the Ray actor; imported there by module name, so its caches stay there)
# ---------------------------------------------------------------------------------------------

_EXPORTS = {}
_MEMBERS = {}


def _member_data(export_path, member):
    key = (export_path, member)
    if key not in _MEMBERS:
        if export_path not in _EXPORTS:
            with open(export_path) as f:
                _EXPORTS[export_path] = json.load(f)
        spec = _EXPORTS[export_path]
        images, labels = load_split(spec["idx_dir"], "train")
        _MEMBERS[key] = tensors(images, labels, spec["members"][member])
    return _EXPORTS[export_path], _MEMBERS[key]


def _set_threads(n):
    import torch
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _build_client_app():
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def warm_up(msg, context):
        """Loads the member's data (and the IDX file once per actor) and sets the threads,
        so that round 1 of the first strategy does not pay for it."""
        cfg = msg.content["config"]
        _set_threads(int(cfg["threads"]))
        member = int(context.node_config["partition-id"])
        _, (x, _) = _member_data(str(cfg["export"]), member)
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": len(x)})}),
                       reply_to=msg)

    @app.train()
    def train(msg, context):
        import numpy as np
        cfg = msg.content["config"]
        _set_threads(int(cfg["threads"]))
        member = int(context.node_config["partition-id"])
        spec, (x, y) = _member_data(str(cfg["export"]), member)
        model = make_net(int(spec["channels"]))
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        rnd = int(cfg["server-round"])
        rng = np.random.default_rng([int(spec["seed"]), member, rnd])
        fit = train_epochs(model, x, y, epochs=int(spec["local_epochs"]),
                           batch_size=int(spec["batch_size"]),
                           lr=float(spec["learning_rate"]), rng=rng,
                           mu=float(cfg.get("proximal-mu", 0.0)))
        content = RecordDict({
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(y), "fit-seconds": fit}),
        })
        return Message(content, reply_to=msg)

    return app


try:
    client_app = _build_client_app()
except ImportError:  # --compare with a python3 that has no flwr
    client_app = None


# ---------------------------------------------------------------------------------------------
# ServerApp (runs in a thread of the driver)
# ---------------------------------------------------------------------------------------------

def parse_strategies(text):
    """'fedavg,fedprox:0.01,fedadam' -> [(label, kind, mu)]."""
    out = []
    for tok in filter(None, (t.strip() for t in text.split(","))):
        kind, _, arg = tok.partition(":")
        if kind == "fedavg" and not arg:
            out.append(("fedavg", kind, 0.0))
        elif kind == "fedprox" and arg:
            float(arg)
            out.append((f"fedprox({arg})", kind, float(arg)))
        elif kind == "fedadam" and not arg:
            out.append(("fedadam", kind, 0.0))
        else:
            raise SystemExit(f"unknown strategy {tok!r} (fedavg, fedprox:MU, fedadam)")
    return out


def timed(cls):
    """`cls` (a flwr.serverapp.strategy class) that records each round's wall time and the
    clients' summed fit-seconds, and fails on any client error instead of aggregating fewer."""

    class Timed(cls):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.rounds = {}
            self._t0 = None

        def configure_train(self, server_round, arrays, config, grid):
            self._t0 = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            errors = [m.error.reason for m in replies if m.has_error()]
            if errors:
                raise RuntimeError(f"round {server_round}: {len(errors)} client errors: "
                                   f"{errors[0]}")
            fit = sum(float(m.content["metrics"]["fit-seconds"]) for m in replies)
            out = super().aggregate_train(server_round, replies)
            self.rounds[server_round] = (time.perf_counter() - self._t0, fit, len(replies))
            return out

    Timed.__name__ = cls.__name__
    return Timed


def make_strategy(kind, mu, n):
    from flwr.serverapp import strategy as S
    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                  min_available_nodes=n)
    if kind == "fedavg":
        return timed(S.FedAvg)(**common)
    if kind == "fedprox":
        return timed(S.FedProx)(proximal_mu=mu, **common)
    if kind == "fedadam":
        return timed(S.FedAdam)(**FEDADAM, **common)
    raise ValueError(kind)


def make_server_app(export_path, spec, strategies, threads, rows, log):
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp import ServerApp

    base = os.path.dirname(export_path)
    n = len(spec["members"])
    rounds = int(spec["rounds"])
    test_images, test_labels = load_split(spec["idx_dir"], "t10k")
    tx, ty = tensors(test_images, test_labels, spec["test"])
    init = initial_state(spec, base)
    evaluator = make_net(int(spec["channels"]))
    app = ServerApp()

    def evaluate_fn(server_round, arrays):
        evaluator.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": accuracy(evaluator, tx, ty)})

    @app.main()
    def main(grid, context):
        _set_threads(threads)
        deadline = time.time() + 300
        while len(list(grid.get_node_ids())) < n:
            if time.time() > deadline:
                raise RuntimeError(f"only {len(list(grid.get_node_ids()))} of {n} nodes")
            time.sleep(0.1)
        cfg = {"export": export_path, "threads": threads}
        t = time.perf_counter()
        warm = [Message(RecordDict({"config": ConfigRecord(cfg)}), dst_node_id=nid,
                        message_type=MessageType.QUERY) for nid in grid.get_node_ids()]
        replies = list(grid.send_and_receive(warm, timeout=600))
        bad = [m.error.reason for m in replies if m.has_error()]
        if bad or len(replies) != n:
            raise RuntimeError(f"warm-up: {len(replies)} replies, errors {bad[:1]}")
        log(f"  warm-up of {n} clients {time.perf_counter() - t:.1f} s")
        for label, kind, mu in strategies:
            strat = make_strategy(kind, mu, n)
            t = time.perf_counter()
            result = strat.start(grid=grid, initial_arrays=ArrayRecord(init),
                                 num_rounds=rounds, train_config=ConfigRecord(dict(cfg)),
                                 evaluate_fn=evaluate_fn)
            for r in range(1, rounds + 1):
                secs, fit, got = strat.rounds[r]
                if got != n:
                    raise RuntimeError(f"{label} round {r}: {got} of {n} clients")
                acc = float(result.evaluate_metrics_serverapp[r]["accuracy"])
                rows.append(["flower", label, spec["partition"], spec["seed"], r,
                             f"{acc:.6f}", f"{secs:.6f}", f"{fit:.6f}"])
            final = result.evaluate_metrics_serverapp[rounds]["accuracy"]
            log(f"  {label:<16} {spec['partition']:<12} seed {spec['seed']}: final accuracy "
                f"{final:.4f}, {time.perf_counter() - t:.1f} s")

    return app


def run_exports(args):
    import torch
    import flwr
    from flwr.simulation import run_simulation
    try:  # run the client code from the module, not __main__: Ray then pickles it by name
        import strategies_flwr as this
    except ImportError:
        this = sys.modules[__name__]

    def log(s):
        print(s, flush=True)

    strategies = parse_strategies(args.strategies)
    files = sorted(glob.glob(os.path.join(args.export, "*.json")))
    if not files:
        raise SystemExit(f"no export JSON in {args.export}")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    log(f"flwr {flwr.__version__}, torch {torch.__version__}, {threads} threads, "
        f"{len(files)} exports x {len(strategies)} strategies")
    new = not os.path.exists(args.out) or os.path.getsize(args.out) == 0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a", newline="") as out:
        w = csv.writer(out)
        if new:
            w.writerow(COLUMNS)
        for path in files:
            path = os.path.abspath(path)
            with open(path) as f:
                spec = json.load(f)
            rows = []
            t = time.perf_counter()
            server = make_server_app(path, spec, strategies, threads, rows, log)
            run_simulation(
                server_app=server, client_app=this.client_app,
                num_supernodes=len(spec["members"]),
                backend_config={
                    "init_args": {"num_cpus": threads, "num_gpus": 0,
                                  "object_store_memory": 256 * 1024 * 1024,
                                  "log_to_driver": True},
                    "client_resources": {"num_cpus": threads, "num_gpus": 0.0},
                })
            expected = len(strategies) * int(spec["rounds"])
            if len(rows) != expected:
                raise SystemExit(f"{path}: {len(rows)} rows, expected {expected} "
                                 "(the ServerApp failed; see the log above)")
            w.writerows(rows)
            out.flush()
            log(f"  {os.path.basename(path)}: {time.perf_counter() - t:.1f} s with Ray "
                "start-up and shut-down")


# ---------------------------------------------------------------------------------------------
# --epoch-bench
# ---------------------------------------------------------------------------------------------

def epoch_bench(args):
    import numpy as np
    import torch
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    images, labels = load_split(args.idx_dir, "train")
    x, y = tensors(images, labels, range(min(args.epoch_bench, len(labels))))
    device = torch.device(args.torch_device)
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    model = make_net(args.channels).to(device)
    rng = np.random.default_rng(0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for rep in range(6):
        sync()
        t0 = time.perf_counter()
        train_epochs(model, x, y, epochs=1, batch_size=32, lr=0.001, rng=rng)
        sync()  # CUDA runs asynchronously: the epoch ends when its last kernel does
        if rep > 0:
            times.append(time.perf_counter() - t0)
    print(f"torch_epoch_seconds {statistics.median(times):.6f}")
    print(f"torch_device {device}")
    print(f"torch_version {torch.__version__}")
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"examples {len(y)} channels {args.channels} batch 32 (median of 5 after 1 warm-up)")


# ---------------------------------------------------------------------------------------------
# --compare (standard library only)
# ---------------------------------------------------------------------------------------------

def read_rows(path):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f)]


def compare(daofl_csv, flower_csv):
    data = defaultdict(lambda: defaultdict(list))  # (strategy, partition) -> framework -> rows
    order = []
    for path in (daofl_csv, flower_csv):
        for r in read_rows(path):
            key = (r["strategy"], r["partition"])
            if key not in data:
                order.append(key)
            data[key][r["framework"]].append(r)

    def summary(rows):
        by_seed = defaultdict(dict)
        for r in rows:
            by_seed[r["seed"]][int(r["round"])] = float(r["accuracy"])
        finals = [acc[max(acc)] for acc in by_seed.values()]
        curve = defaultdict(list)
        for acc in by_seed.values():
            for rnd, a in acc.items():
                curve[rnd].append(a)
        rs = [float(r["round_seconds"]) for r in rows]
        over = [float(r["round_seconds"]) - float(r["fit_seconds"]) for r in rows]
        return {"seeds": len(by_seed), "final": statistics.mean(finals),
                "curve": {k: statistics.mean(v) for k, v in curve.items()},
                "round": statistics.mean(rs), "over": statistics.mean(over)}

    print("| strategy | partition | seeds d/f | final acc daofl | final acc flower | "
          "max gap (round) | round s daofl | round s flower | overhead s daofl | "
          "overhead s flower | overhead flower/daofl |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    missing = []
    for key in order:
        d, f = data[key].get("daofl"), data[key].get("flower")
        if not d or not f:
            missing.append(f"{key[0]} {key[1]} ({'daofl' if not d else 'flower'} missing)")
            continue
        sd, sf = summary(d), summary(f)
        common = sorted(set(sd["curve"]) & set(sf["curve"]))
        gap, at = max(((abs(sd["curve"][r] - sf["curve"][r]), r) for r in common),
                      default=(float("nan"), "-"))
        ratio = sf["over"] / sd["over"] if sd["over"] > 0 else float("inf")
        print(f"| {key[0]} | {key[1]} | {sd['seeds']}/{sf['seeds']} | {sd['final']:.4f} | "
              f"{sf['final']:.4f} | {gap:.4f} ({at}) | {sd['round']:.3f} | {sf['round']:.3f} | "
              f"{sd['over']:.4f} | {sf['over']:.4f} | {ratio:.1f}x |")
    print()
    print("final acc: last round's test accuracy, mean over seeds; max gap: the largest "
          "|daofl - flower| of the per-round mean accuracy curves, and its round; overhead: "
          "round_seconds - fit_seconds (the round's wall time less the clients' local "
          "training loops), mean per round")
    for m in missing:
        print(f"not compared: {m}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", help="folder of daofl's export JSON files")
    p.add_argument("--strategies", default="fedavg,fedprox:0.01,fedadam")
    p.add_argument("--out", help="CSV to append rows to")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: nproc)")
    p.add_argument("--epoch-bench", type=int, metavar="N")
    p.add_argument("--idx-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--torch-device", default="cpu", help="with --epoch-bench: cpu or cuda")
    p.add_argument("--compare", nargs=2, metavar=("DAOFL_CSV", "FLOWER_CSV"))
    args = p.parse_args()
    if args.compare:
        compare(*args.compare)
    elif args.epoch_bench:
        epoch_bench(args)
    elif args.export and args.out:
        run_exports(args)
    else:
        p.error("give --export and --out, --epoch-bench N, or --compare")


if __name__ == "__main__":
    main()
