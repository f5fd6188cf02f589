#!/usr/bin/env python3
"""Reference epsilons from Google's dp_accounting, for privacy/tests/fixtures/dp_accounting.csv.

Reproduce:  pip install dp-accounting==0.6.0
            python3 benches/privacy/reference.py > privacy/tests/fixtures/dp_accounting.csv

Each row: a Poisson-subsampled Gaussian (sampling rate q, noise multiplier z) composed T times,
add/remove-one adjacency; rdp_eps from RdpAccountant (default orders, CKS20 conversion) with
its optimal order; pld_eps from PLDAccountant at value_discretization_interval `pld_interval`
(1e-4 is dp_accounting's default).
"""
import itertools
import sys

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

GRID = list(itertools.product(
    [0.001, 0.01, 0.05, 0.2, 1.0], [0.5, 0.8, 1.0, 2.0, 5.0], [1, 10, 100, 1000, 10000]))
DELTAS = [1e-3, 1e-5, 1e-8]
# The starting points, also at the finer 1e-5 discretisation it quotes.
FINE = [(0.01, 1.0, 1000), (1.0, 1.0, 10)]


def event(q, z, t):
    g = dp_event.GaussianDpEvent(z)
    e = g if q == 1.0 else dp_event.PoissonSampledDpEvent(q, g)
    return dp_event.SelfComposedDpEvent(e, t)


def main():
    w = sys.stdout.write
    w("q,z,T,delta,rdp_eps,rdp_order,pld_interval,pld_eps\n")
    runs = [(q, z, t, 1e-4) for q, z, t in GRID] + [(q, z, t, 1e-5) for q, z, t in FINE]
    for q, z, t, interval in runs:
        rdp = rdp_privacy_accountant.RdpAccountant()
        rdp.compose(event(q, z, t))
        pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
        pld.compose(event(q, z, t))
        for d in DELTAS:
            eps, order = rdp.get_epsilon_and_optimal_order(d)
            pld_eps = pld.get_epsilon(d)
            w(f"{q},{z},{t},{d},{float(eps)!r},{float(order)!r},{interval},{float(pld_eps)!r}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
