#!/usr/bin/env python3
"""Paired comparisons over seeds of the robustness benchmark's runs.

Reads the `per_seed,SEED,RULE,ATTACK,ACCURACY` lines that `target/release/robust per_seed=1
flower=1 ...` writes to stderr, pairs every rule `R` with `flower_R` on the same seed and attack
(the same members, the same attackers, the same round-1 updates), and prints per cell and per
rule the mean of ours minus Flower's in points with a 95% interval from a paired bootstrap over
the seeds (10,000 resamples, seeded), then the same pooled over every cell of a rule.

With `--clean RULE` it instead pairs every cell (rule, attack) with RULE's run without attack
on the same seed and prints the cell's loss against that clean run (cell minus clean, points)
with the same bootstrap interval: what "within k points of clean" and "the control fails"
are read against, seed by seed rather than as a difference of two noisy means.

Usage: python3 benches/flower/paired.py ROBUST_STDERR_LOG [--clean RULE]
Standard library only.
"""

import random
import sys
from collections import defaultdict

RESAMPLES = 10_000


def interval(diffs, rng):
    """Mean and 95% paired-bootstrap interval of `diffs` (one per seed)."""
    n = len(diffs)
    means = sorted(
        sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(RESAMPLES)
    )
    return sum(diffs) / n, means[int(0.025 * RESAMPLES)], means[int(0.975 * RESAMPLES) - 1]


def read_runs(path):
    """`(rule, attack, seed) -> accuracy in points` from the `per_seed,` lines of `path`."""
    runs = {}
    for line in open(path, encoding="utf-8"):
        if not line.startswith("per_seed,"):
            continue
        _, seed, rule, attack, acc = line.strip().split(",")
        runs[(rule, attack, int(seed))] = 100.0 * float(acc)
    return runs


def against_clean(runs, clean_rule):
    """Every cell minus `clean_rule` without attack, paired by seed."""
    rng = random.Random(2026)
    clean = {s: a for (r, att, s), a in runs.items() if r == clean_rule and att == "none"}
    if not clean:
        sys.exit(f"no `{clean_rule}` run without attack in the log")
    cells = defaultdict(list)  # (rule, attack) -> [diff per seed]
    for (rule, attack, seed), acc in sorted(runs.items()):
        if seed in clean:
            cells[(rule, attack)].append(acc - clean[seed])
    print(f"| rule | attack | seeds | mean accuracy | minus clean {clean_rule} (points) | 95% interval |")
    print("|---|---|---:|---:|---:|---|")
    for (rule, attack), diffs in cells.items():
        accs = [runs[(rule, attack, s)] for s in sorted(clean) if (rule, attack, s) in runs]
        mean, lo, hi = interval(diffs, rng)
        print(
            f"| {rule} | {attack} | {len(diffs)} | {sum(accs) / len(accs):.1f} | {mean:+.2f} "
            f"| [{lo:+.2f}, {hi:+.2f}] |"
        )


def main(path):
    runs = read_runs(path)
    rng = random.Random(2026)
    cells = defaultdict(dict)  # rule -> attack -> [diff per seed]
    for (rule, attack, seed), acc in runs.items():
        theirs = runs.get((f"flower_{rule}", attack, seed))
        if rule.startswith("flower_") or theirs is None:
            continue
        cells[rule].setdefault(attack, []).append((seed, acc - theirs))
    print("| rule | attack | seeds | ours - Flower (points) | 95% interval |")
    print("|---|---|---:|---:|---|")
    for rule in sorted(cells):
        pooled = defaultdict(list)  # seed -> diffs over attacks
        for attack, per_seed in cells[rule].items():
            diffs = [d for _, d in sorted(per_seed)]
            mean, lo, hi = interval(diffs, rng)
            print(f"| {rule} | {attack} | {len(diffs)} | {mean:+.2f} | [{lo:+.2f}, {hi:+.2f}] |")
            for seed, d in per_seed:
                pooled[seed].append(d)
        # Pool by seed (a seed's mean over the attacks), so the bootstrap resamples seeds.
        by_seed = [sum(v) / len(v) for _, v in sorted(pooled.items())]
        mean, lo, hi = interval(by_seed, rng)
        print(f"| {rule} | all attacks | {len(by_seed)} | {mean:+.2f} | [{lo:+.2f}, {hi:+.2f}] |")


if __name__ == "__main__":
    if len(sys.argv) == 2:
        main(sys.argv[1])
    elif len(sys.argv) == 4 and sys.argv[2] == "--clean":
        against_clean(read_runs(sys.argv[1]), sys.argv[3])
    else:
        sys.exit(__doc__)
