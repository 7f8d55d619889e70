"""The chance level that the learnability check compares against, by hand."""

from __future__ import annotations

import pytest

from msa_model.chance import chance_metrics


def test_chance_two_images_one_caption_each() -> None:
    got = chance_metrics([1, 1])
    assert got["i2t_r1"] == pytest.approx(50.0) and got["t2i_r1"] == pytest.approx(50.0)
    assert got["i2t_r5"] == pytest.approx(100.0) and got["t2i_r10"] == pytest.approx(100.0)
    assert got["mr"] == pytest.approx((50 + 100 + 100) * 2 / 6)


def test_chance_multiple_positives() -> None:
    # 4 captions, image 0 owns 3: a random top-1 misses with probability 1/4.
    got = chance_metrics([3, 1])
    assert got["i2t_r1"] == pytest.approx(100 * ((1 - 1 / 4) + 1 / 4) / 2)
