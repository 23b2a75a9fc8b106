"""siftkit.study.stats: the paired intervals against scipy's t-test, on the seeds both arms recorded."""

import math

import numpy as np
import pytest
from scipy import stats

from siftkit.study.stats import paired_difference, t_critical


def test_intervals_come_from_scipy_and_match_a_paired_t_test():
    rng = np.random.default_rng(0)
    a = dict(enumerate(rng.normal(0.7, 0.03, 5), start=1))
    b = {s: v - rng.normal(0.01, 0.02) for s, v in a.items()}
    d = paired_difference(a, b)
    ref = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert d["n"] == 5 and d["mean"] == pytest.approx(np.mean([a[s] - b[s] for s in a]))
    assert (d["low"], d["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))
    # not rounded from a table: df=7 and df=45 would have been read from neighbouring rows
    assert t_critical(7) == pytest.approx(2.3646, abs=1e-4)
    assert t_critical(45) == pytest.approx(stats.t.ppf(0.975, 45)) != 2.021
    assert math.isnan(t_critical(0))


def test_paired_difference_uses_only_seeds_both_recorded():
    d = paired_difference({1: 0.7, 2: 0.6, 3: math.nan}, {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.1})
    assert d["seeds"] == [1, 2] and d["mean"] == pytest.approx(0.15)
