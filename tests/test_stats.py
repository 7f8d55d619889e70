"""Summaries over seeds and chance level, against hand-computed values."""

from __future__ import annotations

import itertools

import pytest

from workflows.results.stats import chance_metrics, paired_difference, summarize, verdict


def test_summary_mean_std_and_t_interval() -> None:
    # mean 2.5; std sqrt(5/3) = 1.29099; t(0.975, 3) = 3.18245; half width 3.18245 * 1.29099 / 2
    out = summarize([1.0, 2.0, 3.0, 4.0])
    assert out["n"] == 4 and out["mean"] == 2.5
    assert out["std"] == pytest.approx(1.2909944, abs=1e-6)
    assert out["ci95"] == pytest.approx([2.5 - 2.0542603, 2.5 + 2.0542603], abs=1e-6)
    # two values: t(0.975, 1) = 12.7062, std / sqrt(2) = 1
    assert summarize([10.0, 12.0])["ci95"] == pytest.approx([11 - 12.7062047, 11 + 12.7062047])
    assert summarize([7.0]) == {"n": 1, "mean": 7.0, "std": None, "ci95": None}
    with pytest.raises(ValueError):
        summarize([])


def test_paired_difference_and_its_sentence() -> None:
    # differences 4, 4, 3.5: mean 3.8333, std 0.288675, t(0.975, 2) = 4.302653
    diff = paired_difference([5.0, 6.0, 7.0], [1.0, 2.0, 3.5])
    assert diff["mean"] == pytest.approx(3.8333333)
    assert diff["ci95"] == pytest.approx([3.8333333 - 0.7171088, 3.8333333 + 0.7171088])
    assert verdict(diff) == "better than the baseline (CI excludes 0)"
    assert verdict(diff, mode="min") == "worse than the baseline (CI excludes 0)"
    noisy = paired_difference([5.0, 1.0, 6.0], [4.0, 3.0, 4.0])  # 1, -2, 2
    assert verdict(noisy) == "not distinguishable (CI includes 0)"
    assert verdict(paired_difference([2.0], [1.0])).startswith("not distinguishable")
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_chance_level_of_the_demo_gallery() -> None:
    # 100 images x 5 captions: i2t R@5 = 1 - C(495, 5) / C(500, 5), t2i R@K = K / 100
    out = chance_metrics([5] * 100)
    assert out["i2t_r1"] == pytest.approx(1.0)
    assert out["i2t_r5"] == pytest.approx(
        100 * (1 - 495 * 494 * 493 * 492 * 491 / (500 * 499 * 498 * 497 * 496))
    )
    assert [out["t2i_r1"], out["t2i_r5"], out["t2i_r10"]] == [1.0, 5.0, 10.0]
    assert out["mr"] == pytest.approx(5.2608924, abs=1e-6)


def test_chance_level_matches_every_ordering_of_a_tiny_gallery() -> None:
    """Images with 2, 1 and 0 captions: the exact value equals the average over all orders."""
    counts = [2, 1, 0]
    owner = [0, 0, 1]  # the image of each caption
    images, captions = range(3), range(3)
    i2t = {k: [] for k in (1, 5, 10)}
    for order in itertools.permutations(captions):
        for image in (0, 1):  # image 2 has no caption: no query
            for k in i2t:
                i2t[k].append(any(owner[c] == image for c in order[:k]))
    t2i = {k: [] for k in (1, 5, 10)}
    for order in itertools.permutations(images):
        for caption in captions:
            for k in t2i:
                t2i[k].append(owner[caption] in order[:k])
    out = chance_metrics(counts)
    for k in (1, 5, 10):
        assert out[f"i2t_r{k}"] == pytest.approx(100 * sum(i2t[k]) / len(i2t[k]))
        assert out[f"t2i_r{k}"] == pytest.approx(100 * sum(t2i[k]) / len(t2i[k]))
    assert out["i2t_r1"] == pytest.approx(50.0)  # (2/3 + 1/3) / 2
    assert out["t2i_r1"] == pytest.approx(100 / 3)
