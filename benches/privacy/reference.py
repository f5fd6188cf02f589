#!/usr/bin/env python3
"""Reference epsilons from Google's dp_accounting, for privacy/tests/fixtures/dp_accounting.csv.

Reproduce (bounded: PLD at fine discretisation can otherwise eat all memory):

    pip install dp-accounting==0.6.0
    (ulimit -v 4000000; timeout 1200 python3 benches/privacy/reference.py \
        > privacy/tests/fixtures/dp_accounting.csv)

Each row: a Poisson-subsampled Gaussian (sampling rate q, noise multiplier z) composed T times,
add/remove-one adjacency (q = 1 is the plain Gaussian event, which dp_accounting's PLD
accountant turns into one Gaussian of standard deviation z / sqrt(T)); rdp_eps from
RdpAccountant (default orders, CKS20 conversion) with its optimal order; pld_eps from
PLDAccountant at value_discretization_interval `pld_interval` (1e-4 is dp_accounting's
default). Rows are printed and flushed case by case, so a killed run leaves valid partial
output; a case that is skipped or fails is reported on stderr and as a `#` comment line (the
Rust test reads `#` lines as comments).

Grid: q in {0.001, 0.01, 0.05, 0.2, 1}, z in {0.5, 0.8, 1, 2, 5}, T in {1, 10, 100, 1000, 10000},
delta in {1e-3, 1e-5, 1e-8}, all at interval 1e-4; plus the issue's two anchors at interval
1e-5: (q, z, T) = (0.01, 1, 1000) and (1, 1, 10).

Left out, and why:
- q = 1 (plain Gaussian) cases whose single PLD grid would exceed MAX_PLD_POINTS = 1e7 points.
  With sigma = z / sqrt(T) the connect-the-dots grid spans about (19.5 sigma + 1) / sigma^2 in
  privacy loss, i.e. that many / interval points, and dp_accounting evaluates the hockey-stick
  divergence on all of them in several float64 arrays at once. (q, z, T) = (1, 0.5, 10000)
  needs 4.4e8 points (tens of GB: the case that froze the machine in an earlier session);
  (1, 0.5, 1000), (1, 0.8, 1000), (1, 0.8, 10000), (1, 1, 1000), (1, 1, 10000) and
  (1, 2, 10000) need 1.6e7 to 1.8e8. Their RDP epsilons at delta = 1e-5 run from 650 to over 20000
  (655 at (1, 1, 1000)), far from any budget a run would use, and the Rust test, which runs
  unoptimised, would spend minutes on them. The q = 1 anchor (1, 1, 10) at 1e-5 (7.3e6
  points) is kept. The exact list is printed by `--list-skipped` and written as `#` lines.
- Nothing else: every Poisson-subsampled case (q < 1) stays; their per-round grids are small
  and the T-fold composition is truncated to a Chernoff window.
"""
import itertools
import math
import sys
import time

from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

QS = [0.001, 0.01, 0.05, 0.2, 1.0]
ZS = [0.5, 0.8, 1.0, 2.0, 5.0]
TS = [1, 10, 100, 1000, 10000]
DELTAS = [1e-3, 1e-5, 1e-8]
# The anchors, at the finer 1e-5 discretisation it quotes.
FINE = [(0.01, 1.0, 1000), (1.0, 1.0, 10)]
MAX_PLD_POINTS = 1e7
# sigma * norm.ppf(0.5 * exp(-50)) = -9.745 sigma bounds the noise dp_accounting keeps.
TRUNCATION_SIGMAS = 9.75


def pld_points(q, z, t, interval):
    """Grid size of the single PLD dp_accounting builds for a plain Gaussian (q = 1)."""
    if q != 1.0:
        return 0.0
    sigma = z / math.sqrt(t)
    return (2 * TRUNCATION_SIGMAS * sigma + 1) / sigma**2 / interval


def event(q, z, t):
    g = dp_event.GaussianDpEvent(z)
    e = g if q == 1.0 else dp_event.PoissonSampledDpEvent(q, g)
    return dp_event.SelfComposedDpEvent(e, t)


def runs():
    grid = [(q, z, t, 1e-4) for q, z, t in itertools.product(QS, ZS, TS)]
    return grid + [(q, z, t, 1e-5) for q, z, t in FINE]


def main():
    if "--list-skipped" in sys.argv:
        for q, z, t, interval in runs():
            n = pld_points(q, z, t, interval)
            if n > MAX_PLD_POINTS:
                print(f"q={q} z={z} T={t} interval={interval}: {n:.2e} PLD points")
        return
    out = sys.stdout
    out.write("q,z,T,delta,rdp_eps,rdp_order,pld_interval,pld_eps\n")
    for q, z, t, interval in runs():
        points = pld_points(q, z, t, interval)
        if points > MAX_PLD_POINTS:
            msg = f"skipped q={q} z={z} T={t} interval={interval}: {points:.2e} PLD points"
            out.write(f"# {msg}\n")
            out.flush()
            print(msg, file=sys.stderr, flush=True)
            continue
        start = time.monotonic()
        try:
            rdp = rdp_privacy_accountant.RdpAccountant()
            rdp.compose(event(q, z, t))
            pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
            pld.compose(event(q, z, t))
            rows = []
            for d in DELTAS:
                eps, order = rdp.get_epsilon_and_optimal_order(d)
                pld_eps = pld.get_epsilon(d)
                rows.append(
                    f"{q},{z},{t},{d},{float(eps)!r},{float(order)!r},{interval},"
                    f"{float(pld_eps)!r}\n")
        except MemoryError:
            msg = f"failed q={q} z={z} T={t} interval={interval}: out of memory"
            out.write(f"# {msg}\n")
            out.flush()
            print(msg, file=sys.stderr, flush=True)
            continue
        out.write("".join(rows))
        out.flush()
        print(f"q={q} z={z} T={t} interval={interval}: {time.monotonic() - start:.1f} s",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
