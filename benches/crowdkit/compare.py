"""crowd-kit's MajorityVote and DawidSkene on the answers contrib's consensus example exported.

Reads DIR/answers_<question>_<rep>.csv (task, worker, label), DIR/truth_<question>.csv (task,
label, gold) and DIR/ours_<question>_<rep>.csv (task, mv, ds, ds_gold: daofl's labels), runs
crowd-kit on each answer set (DawidSkene with its defaults, n_iter=100 and tol=1e-5, once plain
and once with the hidden gold items as `true_labels`), and prints accuracy against the real
labels side by side with daofl's, the share of items on which both give the same label, and the
mean difference with its standard error over the replicates.

Usage: python compare.py DIR
"""

import math
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from crowdkit.aggregation import DawidSkene, MajorityVote


def accuracy(pred: pd.Series, truth: pd.Series) -> float:
    return float((pred.reindex(truth.index) == truth).mean())


def agreement(a: pd.Series, b: pd.Series) -> float:
    return float((a == b.reindex(a.index)).mean())


def mean_se(values):
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, sd, sd / math.sqrt(n)


def main(out: Path) -> None:
    print(f"crowd-kit {version('crowd-kit')}, pandas {pd.__version__}")
    rows = []
    for question in ("outcome", "category"):
        truth_df = pd.read_csv(out / f"truth_{question}.csv")
        truth = truth_df.set_index("task")["label"]
        gold = truth_df[truth_df["gold"] == 1].set_index("task")["label"]
        reps = sorted(
            int(p.stem.rsplit("_", 1)[1]) for p in out.glob(f"answers_{question}_*.csv")
        )
        for rep in reps:
            df = pd.read_csv(out / f"answers_{question}_{rep}.csv")
            ours = pd.read_csv(out / f"ours_{question}_{rep}.csv").set_index("task")
            ck_mv = MajorityVote().fit_predict(df)
            started = time.process_time()
            ck_ds = DawidSkene(n_iter=100, tol=1e-5).fit_predict(df)
            ds_seconds = time.process_time() - started
            ck_dsg = DawidSkene(n_iter=100, tol=1e-5).fit_predict(df, true_labels=gold)
            rows.append(
                {
                    "question": question,
                    "rep": rep,
                    "ours_mv": accuracy(ours["mv"], truth),
                    "ck_mv": accuracy(ck_mv, truth),
                    "ours_ds": accuracy(ours["ds"], truth),
                    "ck_ds": accuracy(ck_ds, truth),
                    "ours_dsg": accuracy(ours["ds_gold"], truth),
                    "ck_dsg": accuracy(ck_dsg, truth),
                    "same_mv": agreement(ours["mv"], ck_mv),
                    "same_ds": agreement(ours["ds"], ck_ds),
                    "same_dsg": agreement(ours["ds_gold"], ck_dsg),
                    "ck_ds_s": ds_seconds,
                }
            )
    print("\n### daofl against crowd-kit on the same answers, every replicate\n")
    print(
        "| question | rep | MV daofl | MV crowd-kit | DS daofl | DS crowd-kit | DS+gold daofl "
        "| DS+gold crowd-kit | same label MV / DS / DS+gold | crowd-kit DS CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['question']} | {r['rep']} | {r['ours_mv']:.4f} | {r['ck_mv']:.4f} "
            f"| {r['ours_ds']:.4f} | {r['ck_ds']:.4f} | {r['ours_dsg']:.4f} | {r['ck_dsg']:.4f} "
            f"| {r['same_mv']:.4f} / {r['same_ds']:.4f} / {r['same_dsg']:.4f} "
            f"| {r['ck_ds_s']:.3f} |"
        )
    print("\n### Mean over replicates; difference daofl - crowd-kit (mean ± standard error)\n")
    print(
        "| question | method | daofl | crowd-kit | difference | same label |"
    )
    print("|---|---|---|---|---|---|")
    for question in ("outcome", "category"):
        qs = [r for r in rows if r["question"] == question]
        for method, ours, ck, same in (
            ("majority vote", "ours_mv", "ck_mv", "same_mv"),
            ("Dawid-Skene", "ours_ds", "ck_ds", "same_ds"),
            ("Dawid-Skene + gold", "ours_dsg", "ck_dsg", "same_dsg"),
        ):
            o, _, _ = mean_se([r[ours] for r in qs])
            c, _, _ = mean_se([r[ck] for r in qs])
            d, _, d_se = mean_se([r[ours] - r[ck] for r in qs])
            s, _, _ = mean_se([r[same] for r in qs])
            print(
                f"| {question} | {method} | {o:.4f} | {c:.4f} | {d:+.4f} ± {d_se:.4f} | {s:.4f} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
