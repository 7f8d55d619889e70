"""Retrieval metrics: the chunked ranks equal a plain per-query sort, ties included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msa_model.metrics import RECALL_KEYS, _count_ge, retrieval_metrics


def _first_positive_rank(scores: torch.Tensor, positive: torch.Tensor) -> int:
    """Rank of the best positive after sorting by score, positives last among equal scores."""
    by_label = torch.argsort(positive.long(), stable=True)  # negatives first
    order = by_label[torch.argsort(-scores[by_label], stable=True)]
    return int(torch.nonzero(positive[order])[0])


def _reference(images, texts, caption_image) -> dict[str, float]:
    sims = F.normalize(images.float(), dim=-1) @ F.normalize(texts.float(), dim=-1).T
    i2t, t2i = [], []
    for i in range(images.shape[0]):
        positive = caption_image == i
        if positive.any():
            i2t.append(_first_positive_rank(sims[i], positive))
    for j in range(texts.shape[0]):
        positive = torch.arange(images.shape[0]) == caption_image[j]
        t2i.append(_first_positive_rank(sims[:, j], positive))
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    out["mr"] = sum(out[k] for k in RECALL_KEYS) / 6
    return out


def _assert_same(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(RECALL_KEYS) | {"mr"}
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def _ragged_captions(n_images: int, gen: torch.Generator) -> torch.Tensor:
    """Caption owners: image 0 has 7 captions, image 1 has 1, image 2 has none, others 1-7."""
    counts = torch.randint(1, 8, (n_images,), generator=gen)
    counts[:3] = torch.tensor([7, 1, 0])
    owners = torch.repeat_interleave(torch.arange(n_images), counts)
    return owners[torch.randperm(owners.numel(), generator=gen)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matches_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    caption_image = _ragged_captions(40, gen)
    images = torch.randn(40, 8, generator=gen)
    # captions near their image so recalls are neither 0 nor 100
    texts = images[caption_image] + 1.5 * torch.randn(caption_image.numel(), 8, generator=gen)
    expected = _reference(images, texts, caption_image)
    assert 0 < expected["mr"] < 100
    _assert_same(retrieval_metrics(images, texts, caption_image), expected)
    _assert_same(retrieval_metrics(images, texts, caption_image, chunk_size=3), expected)


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_exact_ties_are_pessimistic(chunk_size):
    gen = torch.Generator().manual_seed(3)
    # entries in {-1, 1} with d = 16: unit vectors of entries +-1/4, every dot product exact
    images = torch.randint(0, 2, (30, 16), generator=gen).float() * 2 - 1
    images[10:20] = images[:10]  # duplicated images: exact ties in both directions
    caption_image = _ragged_captions(30, gen)
    texts = images[caption_image].clone()
    flip = torch.rand(texts.shape, generator=gen) < 0.3
    texts[flip] = -texts[flip]
    texts[5] = texts[4]  # duplicated captions
    expected = _reference(images, texts, caption_image)
    sims = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T
    positive = sims.gather(0, caption_image[None])[0]
    optimistic_r1 = 100.0 * ((sims > positive).sum(0) == 0).float().mean().item()
    assert expected["t2i_r1"] < optimistic_r1 - 10  # the ties matter here
    _assert_same(retrieval_metrics(images, texts, caption_image, chunk_size), expected)


def test_one_hot_ties_by_hand():
    images = torch.eye(3)
    images[2] = images[0]  # image 2 duplicates image 0
    texts = torch.stack([torch.eye(3)[0], torch.eye(3)[1], torch.eye(3)[1]])
    caption_image = torch.tensor([0, 1, 1])  # image 2 has no caption: gallery only
    got = retrieval_metrics(images, texts, caption_image)
    # caption 0 ties with images 0 and 2 -> rank 1 (pessimistic); captions 1, 2 -> rank 0
    assert got["t2i_r1"] == pytest.approx(200 / 3)
    assert got["t2i_r5"] == 100.0
    # image 0: caption 0 is alone at score 1 -> rank 0; image 1: captions 1, 2 -> rank 0
    assert got["i2t_r1"] == 100.0


def test_perfect_embeddings_give_100():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(50, 32, generator=gen)
    caption_image = torch.arange(50).repeat_interleave(5)
    got = retrieval_metrics(images, 3.0 * images[caption_image], caption_image, chunk_size=7)
    assert all(value == 100.0 for value in got.values())


def test_rejects_bad_caption_index():
    with pytest.raises(ValueError):
        retrieval_metrics(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_count_in_column_blocks():
    sims = torch.tensor([[0.1, 0.5, 0.5, 0.9, 0.2, 0.7, 0.5], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    counts = _count_ge(sims.clone(), torch.tensor([[0.5], [1.0]]), block=3)
    assert counts.tolist() == [5, 4]


def test_query_examples_mark_pairs_right_and_others_wrong() -> None:
    from msa_model.data import EvalImages, ImageRecord
    from msa_model.evaluation import EvalSet, query_examples

    e = torch.eye(3)
    records = [ImageRecord(f"{n}.png", "test", (f"{n}a", f"{n}b")) for n in "xyz"]
    data = EvalSet(EvalImages(records, None, None), ["xa", "xb", "ya", "yb", "za", "zb"],
                   torch.tensor([0, 0, 1, 1, 2, 2]))  # fmt: skip
    # cosines by hand: zb (image z's) is nearest to x (3/sqrt(10) = 0.9487)
    texts = torch.stack(
        [e[0], e[0] + e[1], e[1], 2 * e[1] + e[2], e[0] + 2 * e[2], 3 * e[0] + e[2]]
    )
    got = query_examples(e, texts, data, count=2, k=2)
    x, z = got["image_to_text"]  # images spread over the split: the first and the last
    assert x["image"] == "x.png"
    assert x["hits"] == [{"caption": "xa", "right": True, "score": 1.0},
                         {"caption": "zb", "right": False, "score": 0.9487}]  # fmt: skip
    assert z["hits"] == [{"caption": "za", "right": True, "score": 0.8944},
                         {"caption": "yb", "right": False, "score": 0.4472}]  # fmt: skip
    # caption queries: those of the images not queried above (y's)
    assert [q["caption"] for q in got["text_to_image"]] == ["ya", "yb"]
    assert got["text_to_image"][1] == {"caption": "yb", "image": "y.png", "hits": [
        {"image": "y.png", "right": True, "score": 0.8944},
        {"image": "z.png", "right": False, "score": 0.4472}]}  # fmt: skip


def test_query_examples_show_each_caption_text_once() -> None:
    """RSICD-like captions repeated across images: hits and caption queries distinct by text."""
    from msa_model.data import EvalImages, ImageRecord
    from msa_model.evaluation import EvalSet, query_examples

    captions = ["a port.", "A  port", "a port", "a farm", "a port", "a town", "a port", "a farm"]
    owner = [0, 0, 1, 1, 2, 2, 3, 3]
    records = [ImageRecord(f"{n}.png", "test", ()) for n in "wxyz"]
    data = EvalSet(EvalImages(records, None, None), captions, torch.tensor(owner))
    gen = torch.Generator().manual_seed(0)
    got = query_examples(torch.randn(4, 8, generator=gen), torch.randn(8, 8, generator=gen), data,
                         count=2, k=3)  # fmt: skip
    for query in got["image_to_text"]:  # images w and z
        texts = [" ".join(h["caption"].lower().split()).rstrip(".") for h in query["hits"]]
        assert sorted(texts) == ["a farm", "a port", "a town"]  # 3 distinct of 8 captions
        right = {"w.png": {"a port"}, "z.png": {"a port", "a farm"}}[query["image"]]
        assert {t for t, h in zip(texts, query["hits"], strict=True) if h["right"]} == right
    # caption queries spread over x's and y's distinct texts (a port, a farm, a town)
    assert [q["caption"] for q in got["text_to_image"]] == ["a port", "a town"]
    assert all(h["right"] for h in got["text_to_image"][0]["hits"])  # every image has "a port"
