"""Using a trained model: msa export (configs, --trial, --top, --out, --model), msa evaluate by
trial id or exported model, and msa search (the same R@5 as the evaluation, its cache, its page).

The results folder is what `msa tune --no-final` leaves, built without Ray: two trials trained
by the real loop into the in-trial launcher's checkpoint store, and trials.csv from their
histories.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from msa_model.checkpoint import read_checkpoint_meta, restore_model
from msa_model.constants import METRIC_KEYS
from msa_model.data import write_synthetic_dataset
from msa_model.evaluation import evaluate_checkpoint
from msa_model.pipeline import load_splits
from msa_model.retrieval import Hit, load_gallery, search_images
from msa_model.session import LoopSession
from msa_model.training import train
from tests.conftest import tiny_experiment
from workflows.cli import main
from workflows.commands.search import cache_dir, model_tag
from workflows.experiment import dump_experiment, load_experiment, parse_experiment
from workflows.results.locate import resolve_checkpoint
from workflows.results.paths import relative_to_results
from workflows.results.schema import Candidate, FinalRun, write_final
from workflows.results.search_page import write_search_page
from workflows.results.summary import final_summary
from workflows.results.trials import TrialRecord, read_table, trials_table
from workflows.runtime.checkpoints import RunCheckpoints

LRS = {"aaaa1111": 1e-3, "bbbb2222": 3e-3}


class _StoreSession(LoopSession):
    """The in-trial launcher's storage without Tune: each epoch's checkpoint into the run."""

    def __init__(self, store: RunCheckpoints, reports: list[dict]) -> None:
        super().__init__(device="cpu", keeps_checkpoints=True)
        self.store, self.reports = store, reports

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        path = self.store.save(checkpoint_dir, int(metrics["epoch"]), metrics)
        self.reports.append({**metrics, "checkpoint_path": path})


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/tiny after a two-trial search (lr 1e-3 and 3e-3), 100 images, 2 epochs each."""
    root = tmp_path_factory.mktemp("model_use")
    data = root / "data"
    write_synthetic_dataset(data, num_images=100, size=32, seed=1)
    raw = tiny_experiment(data, search={"space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}})
    exp = parse_experiment(raw)
    out = root / "results" / "tiny"
    dump_experiment(exp, out / "experiment.yaml")
    records = []
    for trial_id, lr in LRS.items():
        trial = parse_experiment({**raw, "optim": {"lr": lr}})
        store = RunCheckpoints(str(out / "ray" / "trials" / f"tiny_{trial_id}"), 1, "val_mr", "max")
        reports: list[dict] = []
        train(trial.spec(), _StoreSession(store, reports))
        history = pd.DataFrame(reports)
        history["checkpoint_path"] = [
            relative_to_results(p, out) for p in history["checkpoint_path"]
        ]
        records.append(TrialRecord(trial_id, {"optim.lr": lr}, "TERMINATED", history=history))
    trials_table(records, "val_mr", "max", 2).to_csv(out / "trials.csv", index=False)
    return out


def _best(out: Path) -> pd.Series:
    return read_table(out / "trials.csv").iloc[0]


def test_export_out_is_a_file_or_a_folder(searched: Path, tmp_path: Path, capsys) -> None:
    best = _best(searched)
    assert main(["export", str(searched), "--out", f"{tmp_path}/configs/"]) == 0
    written = tmp_path / "configs" / "best_config.yaml"
    assert capsys.readouterr().out.strip() == str(written)
    assert load_experiment(written).optim.lr == pytest.approx(LRS[best["trial_id"]])
    assert main(["export", str(searched), "--out", str(tmp_path / "configs")]) == 0  # a folder
    assert capsys.readouterr().out.strip() == str(written)
    assert main(["export", str(searched), "--out", str(tmp_path / "one.yaml")]) == 0
    assert (tmp_path / "one.yaml").is_file() and not (tmp_path / "one.yaml").is_dir()
    capsys.readouterr()
    assert main(["export", str(searched), "--top", "2", "--out", str(tmp_path / "top")]) == 0
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == ["rank1.yaml", "rank2.yaml"]
    assert main(["export", str(searched), "--top", "3"]) == 2
    err = capsys.readouterr().err
    assert "--top 3: the search has only 2 trials that reported val_mr" in err
    assert main(["export", str(searched), "--top", "2", "--out", str(tmp_path / "one.yaml")]) == 2
    assert "give a folder, not a file" in capsys.readouterr().err


def test_export_and_evaluate_one_trial(searched: Path, tmp_path: Path, capsys) -> None:
    other = read_table(searched / "trials.csv").iloc[1]["trial_id"]
    assert main(["export", str(searched), "--trial", other[:4], "--out", f"{tmp_path}/"]) == 0
    path = Path(capsys.readouterr().out.strip())
    exp = load_experiment(path)
    assert exp.optim.lr == pytest.approx(LRS[other]) and exp.name == f"tiny_{other}"
    assert path.read_text().startswith(f"# exported from {searched} trial {other}")
    assert main(["evaluate", str(searched), "--trial", other, "--split", "test"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    checkpoint = searched / read_table(searched / "trials.csv").iloc[1]["best_checkpoint"]
    expected = evaluate_checkpoint(checkpoint, ["test"], device="cpu")["test"]
    assert {k: float(v) for k, v in printed.items()} == pytest.approx(expected, abs=0.006)
    assert main(["evaluate", str(searched), "--trial", "zzz"]) == 2
    assert "--trial zzz: no trial of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(searched: Path) -> Path:
    assert main(["export", str(searched), "--model"]) == 0
    return searched / "model"


def test_exported_model_is_the_winner_without_optimizer_state(exported: Path, searched: Path):
    best = searched / _best(searched)["best_checkpoint"]
    assert sorted(p.name for p in exported.iterdir()) == [
        "experiment.yaml", "meta.json", "model.safetensors", "tokenizer",
    ]  # fmt: skip
    meta = read_checkpoint_meta(exported)
    assert meta["source"]["checkpoint"] == _best(searched)["best_checkpoint"]
    assert meta["metrics"] == read_checkpoint_meta(best)["metrics"]
    ours, theirs = evaluate_checkpoint(exported, ["test"], device="cpu"), None
    theirs = evaluate_checkpoint(best, ["test"], device="cpu")
    assert ours == theirs
    assert main(["export", str(searched), "--model", "--out", str(best.parent)]) == 2  # not ours


def test_search_ranks_each_caption_image_as_the_evaluation_does(exported: Path, tmp_path: Path):
    """For every test caption, its image is in msa search's top 5 at the rate of t2i R@5."""
    model, meta = restore_model(exported)
    data = load_experiment(exported / "experiment.yaml").data
    test = load_splits(data)["test"]
    folder = tmp_path / "test_images"
    for record in test:
        target = folder / record.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(data.images) / record.filename, target)
    gallery = load_gallery(model, data, folder, None, "", torch.device("cpu"), 64)
    hits = [
        record.filename in [h.item for h in search_images(model, gallery, caption, 5, "cpu")]
        for record in test
        for caption in record.captions
    ]
    rate = 100.0 * sum(hits) / len(hits)
    r5 = evaluate_checkpoint(exported, ["test"], device="cpu")["test"]["t2i_r5"]
    assert len(hits) == 50 and 0 < rate < 100  # neither chance-free nor trivial
    assert rate == pytest.approx(r5, abs=1e-9)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _sources(page: str) -> list[str]:
    parser = _Images()
    parser.feed(page)
    return parser.sources


def _thumbnail(src: str) -> tuple[int, int]:
    """The size of an inlined JPEG (``data:`` URI); fails on any other address."""
    prefix = "data:image/jpeg;base64,"
    assert src.startswith(prefix), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.removeprefix(prefix)))).size


def test_search_page_inlines_thumbnails_and_escapes_text(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (1000, 500), (10, 200, 30)).save(big)
    (tmp_path / "broken.png").write_text("not an image")
    hits = [Hit(0, "big.png", 0.5), Hit(1, "broken.png", 0.25)]
    page = write_search_page(tmp_path / "p" / "s.html", hits, model="m<1> (/x)",
                             query="roofs & <b>", image_folder=tmp_path,
                             captions={"big.png": ["<script>alert(1)</script>"]})  # fmt: skip
    text = page.read_text()
    assert [_thumbnail(src) for src in _sources(text)] == [(256, 128)]  # the unreadable: none
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert "roofs &amp; &lt;b&gt;" in text and "m&lt;1&gt; (/x)" in text
    assert "broken.png: not a readable image" in text


def _search(*args: str, capsys) -> list[str]:
    assert main(["search", *args]) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_search_cli_caches_the_folder_and_writes_the_page(exported: Path, tmp_path: Path, capsys):
    data = load_experiment(exported / "experiment.yaml").data
    folder = tmp_path / "gallery"
    shutil.copytree(data.images, folder)
    (folder / "notes.txt").write_text("not an image")
    query = load_splits(data)["test"][0].captions[0]
    lines = _search(str(exported), "--images", str(folder), "--query", query, "--top", "3",
                    capsys=capsys)  # fmt: skip
    assert lines[0] == f"[msa] 100 images of {folder} (embedded now)"
    ranked = [line.split() for line in lines[1:4]]
    assert [r[0] for r in ranked] == ["1", "2", "3"]
    scores = [float(r[1]) for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    page = cache_dir(exported) / "search.html"
    assert lines[-1] == f"[msa] page: {page}"
    text = page.read_text()
    assert [_thumbnail(src) for src in _sources(text)] == [
        Image.open(folder / r[2]).size
        for r in ranked  # 32 px images: not scaled up
    ]  # every image inlined: the page can move alone
    known = {r.filename: r.captions for split in load_splits(data).values() for r in split}
    assert all(known[name] for _, _, name in ranked)  # the dataset lists every image
    assert f"query: <b>{html.escape(query)}</b>" in text
    assert f"model: <b>tiny ({exported.resolve()})</b>" in text
    for _, _, name in ranked:  # each hit's dataset captions, where the split lists it
        assert all(html.escape(c) in text for c in known[name])

    again = _search(str(exported), "--images", str(folder), "--query", query, capsys=capsys)
    assert again[0] == f"[msa] 100 images of {folder} (from the cache)"
    assert [line.split()[2] for line in again[1:4]] == [r[2] for r in ranked]
    shutil.copy(folder / ranked[0][2], folder / "copy.png")  # the folder changed
    changed = _search(str(exported), "--images", str(folder), "--query", query, capsys=capsys)
    assert changed[0] == f"[msa] 101 images of {folder} (embedded now)"
    assert {line.split()[2] for line in changed[1:3]} >= {"copy.png"}  # ties with its original
    caches = list(cache_dir(exported).glob("images-*.pt"))
    assert len(caches) == 1 and "copy.png" in torch.load(caches[0], weights_only=True)["names"]
    assert model_tag(exported).endswith(str((exported / "model.safetensors").stat().st_mtime_ns))


def test_search_captions_of_an_image(exported: Path, tmp_path: Path, capsys) -> None:
    data = load_experiment(exported / "experiment.yaml").data
    test = load_splits(data)["test"]
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(c for r in test[:4] for c in r.captions) + "\n\n")
    page = tmp_path / "out" / "page.html"
    image = Path(data.images) / test[0].filename
    lines = _search(str(exported), "--image", str(image), "--captions", str(captions),
                    "--html", str(page), capsys=capsys)  # fmt: skip
    assert lines[0] == f"[msa] 20 captions of {captions}"
    hits = [line.split(maxsplit=2)[2] for line in lines[1:6]]
    assert len(hits) == 5 and set(hits) <= {c for r in test[:4] for c in r.captions}
    text = page.read_text()
    assert [_thumbnail(src) for src in _sources(text)] == [Image.open(image).size]
    assert all(html.escape(h) in text for h in hits)
    assert all(html.escape(c) in text for c in test[0].captions)  # the query image's own


def test_search_refuses_half_a_query(exported: Path, capsys) -> None:
    assert main(["search", str(exported), "--query", "a roof"]) == 2
    assert "give either --images DIR --query TEXT or --image FILE" in capsys.readouterr().err


def test_export_model_is_the_winners_best_validation_seed(searched: Path, tmp_path: Path, capsys):
    """A final stage whose winner's seed 2 validated best: --model and evaluate read seed 2."""
    out = tmp_path / "tiny"
    shutil.copytree(searched, out)
    rows = read_table(out / "trials.csv")
    ckpts = list(rows["best_checkpoint"])  # two real checkpoints stand for seeds 1 and 2
    metrics = dict.fromkeys(METRIC_KEYS, 1.0)
    runs = [
        FinalRun("rank1", seed, f"r{seed}", ckpt, 2, {**metrics, "mr": mr}, metrics)
        for seed, ckpt, mr in ((1, ckpts[0], 10.0), (2, ckpts[1], 20.0))
    ]
    cand = Candidate("rank1", 1, True, rows["trial_id"][0], 5.0, {"optim.lr": 1e-3})
    final = final_summary([cand], runs, metric="val_mr", mode="max", epochs=2, seeds=[1, 2],
                          retrained=False, gallery={}, search_trials=2)  # fmt: skip
    (out / "final").mkdir(exist_ok=True)  # msa evaluate above left its test-read ledger
    write_final(out / "final" / "metrics.json", final)
    assert main(["export", str(out), "--model"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [
        str(out / "model"),
        "the winner rank1, seed 2: the best validation mr (20.00) of seeds [1, 2]",
    ]
    source = read_checkpoint_meta(out / "model")["source"]
    assert (source["seed"], source["checkpoint"]) == (2, ckpts[1])
    assert resolve_checkpoint(out) == out / ckpts[1]  # what msa evaluate RESULTS_DIR reads
    runs = [dataclasses.replace(r, val=None) for r in runs]  # trained on train+val
    winner = dataclasses.replace(final.winner, runs=tuple(runs), val=None)
    final = dataclasses.replace(final, winner=winner, candidates=(winner,))
    write_final(out / "final" / "metrics.json", final)
    assert main(["export", str(out), "--model"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1] == (
        "the winner rank1, seed 1: the first of seeds [1, 2]: trained on train+val, no "
        "validation to pick by"
    )
    assert read_checkpoint_meta(out / "model")["source"]["checkpoint"] == ckpts[0]
