"""docs/python.md runs: its plain ``python`` blocks against a real exported model and the
synthetic data (no Ray); its ``python tuned`` blocks run in test_tune_e2e against a real search;
its ``python long`` blocks (they start a search) compile and match the real signatures. And the
API itself: ``import msa_model`` is light, every public name resolves, ``rank`` and
``TrainedModel`` behave."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import msa_model
from msa_model.retrieval import embed_images, embed_texts
from tests.test_model_use import searched  # noqa: F401  (a two-trial results folder, no Ray)
from workflows.cli import build_parser, main
from workflows.experiment import SEARCH_SPACES
from workflows.runtime.search import run_tune

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
BLOCK = re.compile(r"^```python ?(\S*)\n(.*?)^```$", re.S | re.M)


def doc_blocks(tag: str = "") -> list[str]:
    """The doc's python blocks whose info string after ``python`` is ``tag``, in order."""
    return [code for info, code in BLOCK.findall(DOC.read_text()) if info == tag]


def run_blocks(blocks: list[str]) -> dict:
    """Run ``blocks`` in order in one namespace (like notebook cells); returns it."""
    namespace: dict = {"__name__": "docs_python"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} block {i + 1}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def workdir(searched: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A folder laid out as the doc assumes: results/demo (+ model/), data/synth, search_spaces."""
    assert main(["export", str(searched), "--model"]) == 0
    work = tmp_path_factory.mktemp("python_doc")
    (work / "results").mkdir()
    (work / "results" / "demo").symlink_to(searched)
    (work / "data").mkdir()
    (work / "data" / "synth").symlink_to(searched.parents[1] / "data")
    (work / "search_spaces").symlink_to(SEARCH_SPACES)
    return work


def test_the_doc_blocks_run(workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    ns = run_blocks(doc_blocks())
    assert "captions find their own image first" in capsys.readouterr().out
    trained, images, captions = ns["trained"], ns["images"], ns["captions"]
    image_embeds, text_embeds = ns["image_embeds"], ns["text_embeds"]
    # the same embeddings msa search and the evaluation compute
    names, folder = [p.name for p in images], workdir / "data" / "synth" / "images"
    ours = embed_images(trained.model, trained.data, folder, names, "cpu")
    assert torch.equal(image_embeds, ours)
    assert torch.equal(text_embeds, embed_texts(trained.model, captions, "cpu"))
    assert torch.allclose(image_embeds.norm(dim=1), torch.ones(8))
    full = image_embeds @ text_embeds.T
    assert ns["order"].shape == ns["scores"].shape == (8, 3)
    assert torch.equal(ns["scores"], full.gather(1, ns["order"]))
    assert torch.equal(ns["order"][:, 0], full.argmax(dim=1))
    assert set(ns["metrics"]) >= {"mr", "i2t_r1", "t2i_r10"} and ns["chance"]["mr"] > 0
    # fit -> save_model -> load_model gives back the trained model
    assert len(ns["history"]) == 1 and ns["again"].meta["epoch"] == 1
    assert ns["again"].data == ns["spec"].data
    with torch.no_grad():
        expected = embed_texts(ns["model"], captions, "cpu")
    assert torch.allclose(ns["again"].embed_texts(captions), expected, atol=1e-6)
    assert torch.isfinite(ns["parts"]["loss"])


def test_the_search_blocks_match_the_real_signatures() -> None:
    subprocess_block, run_tune_block = doc_blocks("long")
    calls = {}
    for code in (subprocess_block, run_tune_block):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                calls[ast.unparse(node.func)] = node
    argv = ast.literal_eval(calls["subprocess.run"].args[0])
    assert argv[:2] == ["msa", "tune"]
    args = build_parser().parse_args(argv[1:])  # msa tune accepts them
    assert (str(args.config), args.set, args.no_final) == (argv[2], ["search.num_samples=4"], True)
    call = calls["run_tune"]
    inspect.signature(run_tune).bind(*call.args, **{k.arg: k.value for k in call.keywords})
    assert (SEARCH_SPACES / "demo.yaml").is_file()


def test_import_is_light_and_every_public_name_resolves() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import msa_model; "
        "print(time.perf_counter() - t); "
        "print(sorted(m for m in ('torch', 'ray', 'transformers', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, heavy = out.stdout.splitlines()
    assert heavy == "[]" and float(seconds) < 5
    assert all(getattr(msa_model, name) is not None for name in msa_model.__all__)
    assert msa_model.fit.__module__ == "msa_model.training"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        msa_model.nope  # noqa: B018


def test_rank_orders_by_score_and_keeps_ties_in_gallery_order() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores, order = msa_model.rank(queries, gallery)
    assert order.tolist() == [[0, 2, 3, 1], [1, 3, 0, 2]]
    assert torch.allclose(scores, torch.tensor([[1, 1, 0.6, 0], [1, 0.8, 0, 0]]))
    assert msa_model.rank(queries, gallery, k=1)[1].tolist() == [[0], [1]]


def test_embedding_files_names_what_is_wrong(workdir: Path, tmp_path: Path) -> None:
    trained = msa_model.load_model(workdir / "results" / "demo" / "model")
    with pytest.raises(FileNotFoundError, match=r"^nowhere\.png: no such image file$"):
        trained.embed_images(["nowhere.png"])
    with pytest.raises(ValueError, match="no images to embed"):
        trained.embed_images([])
    # files from two folders, through a symbolic link and ..
    a = sorted((workdir / "data" / "synth" / "images").iterdir())[0]
    (tmp_path / "other").mkdir()
    b = tmp_path / "other" / "copy.png"
    b.write_bytes(a.read_bytes())
    both = trained.embed_images([a, tmp_path / "other" / ".." / "other" / "copy.png"])
    assert both.shape[0] == 2 and torch.equal(both[0], both[1])
