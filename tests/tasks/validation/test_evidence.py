"""Confidence bounds against values computed by hand."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from tasks.validation.evidence import (
    Bounds,
    PairedCounts,
    Predictions,
    bootstrap_chunk,
    bootstrap_metrics,
    labels_to_decide,
    mcnemar_p,
    paired_accuracy_bounds,
    percentile_bounds,
    proportion_bounds,
)


def test_109_of_110_correct():
    b = proportion_bounds(109, 110, 0.95)
    assert b.value == pytest.approx(109 / 110)
    # Clopper-Pearson by its definition: the lower bound L is where seeing 109 or more of
    # 110 has probability 5%: L^110 + 110 L^109 (1 - L) = 0.05 ...
    low = b.low
    assert low**110 + 110 * low**109 * (1 - low) == pytest.approx(0.05, abs=1e-9)
    assert round(low, 4) == 0.9576
    # ... and the upper bound U is where seeing 109 or fewer has probability 5%:
    # 1 - U^110 = 0.05, so U = 0.95^(1/110).
    assert b.high == pytest.approx(0.95 ** (1 / 110), abs=1e-9)


def test_all_correct_and_none_correct_have_the_closed_forms():
    assert proportion_bounds(11, 11, 0.95).low == pytest.approx(0.05 ** (1 / 11))  # 0.7616
    assert proportion_bounds(11, 11, 0.95).high == 1.0
    assert proportion_bounds(0, 20, 0.95).high == pytest.approx(1 - 0.05 ** (1 / 20))
    assert proportion_bounds(0, 0, 0.95) == Bounds(proportion_bounds(0, 0, 0.95).value, 0.0, 1.0)


def test_mcnemar_says_regression_when_every_discordant_pair_favours_the_champion():
    counts = PairedCounts(200, gained=0, lost=15)
    assert mcnemar_p(0, 15) == pytest.approx(2 * 0.5**15)  # 6.1e-5
    d = paired_accuracy_bounds(counts, 0.95)
    assert d.value == pytest.approx(-15 / 200)
    assert d.high < -0.01  # worse by more than a point, beyond noise


def test_mcnemar_says_noise_for_three_against_five():
    # 2 * P(X <= 3 | 8 fair coins) = 2 * (1 + 8 + 28 + 56) / 256
    assert mcnemar_p(3, 5) == pytest.approx(186 / 256)
    d = paired_accuracy_bounds(PairedCounts(200, gained=3, lost=5), 0.95)
    assert d.low < -0.01 < 0 < d.high  # a tie within noise: neither shown worse nor shown fine


def test_paired_bound_without_any_disagreement_is_the_score_bound():
    # No discordant pair: Tango's bound solves n d^2 ... to -z^2 / (n + z^2).
    z = norm.ppf(0.95)
    for n in (110, 500):
        d = paired_accuracy_bounds(PairedCounts(n, 0, 0), 0.95)
        assert d.value == 0
        assert d.low == pytest.approx(-(z**2) / (n + z**2), abs=1e-7)
        assert d.high == pytest.approx(z**2 / (n + z**2), abs=1e-7)


def test_paired_bounds_shrink_with_more_examples_and_bracket_the_difference():
    small = paired_accuracy_bounds(PairedCounts(200, 12, 8), 0.95)
    large = paired_accuracy_bounds(PairedCounts(2000, 120, 80), 0.95)
    assert small.value == large.value == pytest.approx(0.02)
    assert small.low < large.low < 0.02 < large.high < small.high
    # the width shrinks about as 1/sqrt(n): ten times the examples, ~1/3.16 the width
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 2.8 < ratio < 3.5


def _predictions(y, wrong, k, rng):
    pred = y.copy()
    pred[wrong] = (y[wrong] + 1) % k
    conf = np.where(wrong, rng.uniform(0.4, 0.7, len(y)), rng.uniform(0.9, 1.0, len(y)))
    return Predictions(pred, conf)


def test_bootstrap_is_seeded_stratified_and_brackets_the_value():
    rng = np.random.default_rng(0)
    k = 4
    y = np.repeat(np.arange(k), [50, 100, 150, 200])
    wrong = rng.random(len(y)) < 0.1
    model = _predictions(y, wrong, k, rng)
    a = bootstrap_metrics(y, [model], k, samples=500, seed=3)[0]
    b = bootstrap_metrics(y, [model], k, samples=500, seed=3)[0]
    assert all(np.array_equal(a[m], b[m]) for m in a)  # same seed, same replicates
    # Stratified: every replicate keeps each class's gold count, so a model right on
    # every example of a class keeps that class's recall at exactly 1 in every replicate.
    perfect = _predictions(y, y == 3, k, rng)  # class 3 always wrong, others always right
    reps = bootstrap_metrics(y, [perfect], k, samples=200, seed=1)[0]
    assert np.all(reps["worst_class_recall"] == 0.0)
    # The point macro-F1 lies inside its bounds, and the bounds are not degenerate.
    tp = np.bincount(y[~wrong], minlength=k)
    predicted = np.bincount(model.pred, minlength=k)
    support = np.bincount(y, minlength=k)
    f1 = (2 * tp / (support + predicted)).mean()
    bounds = percentile_bounds(f1, a["macro_f1"], 0.95)
    assert bounds.low < f1 < bounds.high and bounds.high - bounds.low > 0.02
    assert abs(np.mean(a["macro_f1"]) - f1) < 0.01


def test_bootstrap_differences_are_paired():
    # Two models that are the same model: every replicate's difference is exactly zero,
    # which only holds when both are scored on the same resampled examples.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    m = _predictions(y, rng.random(300) < 0.2, 3, rng)
    a, b = bootstrap_metrics(y, [m, m], 3, samples=300, seed=0)
    assert np.all(a["macro_f1"] - b["macro_f1"] == 0) and np.all(a["ece"] - b["ece"] == 0)
    assert np.std(a["macro_f1"]) > 0.005  # while each varies on its own


def test_bootstrap_handles_a_hundred_thousand_gold_labels():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 100_000)
    m = _predictions(y, rng.random(len(y)) < 0.05, 10, rng)
    reps = bootstrap_metrics(y, [m, m], 10, samples=200, seed=0)
    assert reps[0]["macro_f1"].shape == (200,)
    assert np.all(np.abs(reps[0]["macro_f1"] - 0.95) < 0.01)


def test_labels_to_decide_scales_the_bound_width_as_one_over_sqrt_n():
    b = Bounds(0.92, 0.83, 0.97)  # 50 labels; the floor 0.9 sits inside
    # The lower bound is 0.09 below the estimate; it must be 0.02 below to clear 0.9:
    # (0.09 / 0.02)^2 = 20.25 times the labels.
    assert labels_to_decide(50, b, 0.9) == math.ceil(50 * (0.09 / 0.02) ** 2)
    assert labels_to_decide(50, Bounds(0.9, 0.8, 0.95), 0.9) == 1_000_000  # on the line
    assert labels_to_decide(0, Bounds(math.nan, 0.0, 1.0), 0.9) == 0  # no estimate yet


def test_no_gold_gives_no_replicate_values_rather_than_whatever_was_in_memory():
    empty = Predictions(np.array([], dtype=np.int64), np.array([], dtype=np.float64))
    (reps,) = bootstrap_metrics(np.array([], dtype=np.int64), [empty], 3, samples=64, seed=0)
    assert {m: v.shape for m, v in reps.items()} == {
        "macro_f1": (64,),
        "ece": (64,),
        "worst_class_recall": (64,),
    }
    assert all(np.isnan(v).all() for v in reps.values())


def test_the_bootstrap_holds_a_bounded_step_however_large_gold_grows():
    """At 1M images gold test is ~100k examples; 64 replicates a step held ~350 MB of
    index arrays. The step shrinks with the gold set: peak traced memory stays tens of
    MB at 200k examples, and small gold sets keep 64 a step (the same replicates)."""
    import tracemalloc

    assert bootstrap_chunk(500) == bootstrap_chunk(10_000) == 64
    assert bootstrap_chunk(100_000) == 6 and bootstrap_chunk(10**8) == 1
    rng = np.random.default_rng(0)
    n, k = 200_000, 10
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    model = Predictions.of(probs)
    tracemalloc.start()
    try:
        (reps,) = bootstrap_metrics(y, [model], k, samples=100, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    accuracy_like = reps["worst_class_recall"]
    assert np.isfinite(accuracy_like).all() and 0.05 < accuracy_like.mean() < 0.2
