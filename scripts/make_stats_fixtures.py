#!/usr/bin/env python3
"""Reference values for headscope's study statistics (src/study/stats.rs), computed independently
in plain Python 3 (no packages): its own SplitMix64, the bootstrap with nearest-rank percentiles,
exact McNemar p-values from math.comb with fractions, and the expected Jaccard index of two random
sets from the hypergeometric distribution with fractions.

    python3 scripts/make_stats_fixtures.py > tests/fixtures/stats.json
"""
import json
import math
from fractions import Fraction

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def next_f64(self):
        return (self.next_u64() >> 11) / float(1 << 53)

    def below(self, n):
        return min(int(self.next_f64() * n), n - 1)


def bootstrap(values, resamples, seed, level=0.95):
    n = len(values)
    rng = SplitMix64(seed)
    means = []
    for _ in range(resamples):
        total = 0.0
        for _ in range(n):
            total += values[rng.below(n)]
        means.append(total / n)
    means.sort()
    tail = (1.0 - level) / 2.0
    at = lambda q: means[int(round(q * (resamples - 1)))]
    return {"values": values, "resamples": resamples, "seed": seed,
            "mean": sum(values) / n, "lo": at(tail), "hi": at(1.0 - tail)}


def mcnemar(b, c):
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p": 1.0}
    tail = sum(Fraction(math.comb(n, i), 2 ** n) for i in range(min(b, c) + 1))
    return {"b": b, "c": c, "p": float(min(Fraction(1), 2 * tail))}


def random_jaccard(n, k1, k2):
    total = math.comb(n, k2)
    e = Fraction(0)
    for i in range(max(0, k1 + k2 - n), min(k1, k2) + 1):
        p = Fraction(math.comb(k1, i) * math.comb(n - k1, k2 - i), total)
        e += p * Fraction(i, k1 + k2 - i)
    return {"n": n, "k1": k1, "k2": k2, "expected": float(e)}


def permutation(diffs, resamples, seed):
    """Two-sided sign-flip test of the mean paired difference: exact for n <= 16 (fractions over
    all 2^n assignments), else seeded Monte Carlo (one SplitMix64 bit per sample, in order)."""
    n = len(diffs)
    observed = abs(sum(diffs))
    out = {"diffs": diffs, "resamples": resamples, "seed": seed}
    if n == 0 or observed == 0.0:
        return {**out, "p": 1.0}
    if n <= 16:
        exact = [Fraction(d) for d in diffs]
        target = abs(sum(exact))
        hits = 0
        for mask in range(1 << n):
            total = sum(-d if mask >> i & 1 else d for i, d in enumerate(exact))
            hits += abs(total) >= target
        return {**out, "p": float(Fraction(hits, 1 << n))}
    tol = 1e-9 * sum(abs(d) for d in diffs)
    rng = SplitMix64(seed)
    hits = 0
    for _ in range(resamples):
        total = 0.0
        for d in diffs:
            total += -d if rng.next_u64() >> 63 == 1 else d
        hits += abs(total) >= observed - tol
    return {**out, "p": (hits + 1) / (resamples + 1)}


def main():
    # Python's round() is round-half-even; no nearest-rank index below lands on a half.
    accuracy = [1.0 if (i * 7) % 10 < 6 else 0.0 for i in range(40)]
    logprobs = [-(i % 13) * 0.37 - 1.0 for i in range(25)]
    out = {
        "bootstrap": [bootstrap(accuracy, 1000, 0), bootstrap(logprobs, 500, 42)],
        "mcnemar": [mcnemar(b, c) for b, c in [(0, 5), (2, 9), (10, 10), (1, 30), (17, 40), (0, 60)]],
        "random_jaccard": [random_jaccard(n, k1, k2)
                           for n, k1, k2 in [(270, 50, 50), (336, 50, 50), (270, 10, 30), (20, 15, 15)]],
        # Per-sample top-k minus mean-over-5-draws correctness (multiples of 0.2), and a larger
        # Monte Carlo case.
        "permutation": [
            permutation([-1.0, -0.8, 0.0, -0.6, 0.2, -1.0, 0.0, -0.4, -0.2, 0.0, -1.0, 0.4], 0, 0),
            permutation([0.0, 0.2, -0.2, 0.0, 0.2, -0.2, 0.4, -0.4], 0, 0),
            permutation([-(i % 5) * 0.2 + (0.4 if i % 7 == 0 else 0.0) for i in range(40)], 4000, 9),
            permutation([0.0] * 10, 0, 0),
        ],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
