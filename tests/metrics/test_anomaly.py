"""AUPRC (average precision) against scikit-learn and closed forms; the bound score on a toy."""
from __future__ import annotations

import numpy as np
import pytest

from mstar_engine.metrics.anomaly import average_precision


def test_perfect_and_inverted_rankings():
    y = np.array([0, 0, 1, 1])
    assert average_precision([0.1, 0.2, 0.8, 0.9], y) == 1.0
    # anomalies ranked last: precision at recall 1/2 is 1/3, at 1 is 2/4 → (1/3 + 1/2) / 2
    assert average_precision([0.9, 0.8, 0.2, 0.1], y) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_ties_count_together():
    # every score equal: one threshold, precision = prevalence
    assert average_precision([1.0] * 5, [1, 0, 0, 1, 0]) == pytest.approx(2 / 5)


@pytest.mark.parametrize("seed", range(5))
def test_matches_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.2
    scores = rng.normal(size=300) + 1.5 * y
    scores[::7] = scores[1::7][: len(scores[::7])]  # some ties
    assert average_precision(scores, y) == pytest.approx(sk.average_precision_score(y, scores), abs=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="at least one anomaly"):
        average_precision([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="1-D of one length"):
        average_precision([0.1, 0.2], [0, 1, 1])
