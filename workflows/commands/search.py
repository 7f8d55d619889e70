"""``msa search MODEL``: a sentence against a folder of images, or an image against captions."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from workflows.commands.options import positive_int

if TYPE_CHECKING:
    from msa_model.config import DataConfig

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "cache_dir", "model_tag"]

HELP = "search images by a sentence, or captions by an image, with a trained model"
DESCRIPTION = (
    "msa search MODEL --images DIR --query TEXT: the images of DIR that best match the "
    "sentence. msa search MODEL --image FILE --captions FILE: the captions (one per line) that "
    "best match the image. The folder is embedded once and cached next to the model (embedded "
    "again when its files change); the results are printed and written as one self-contained "
    "HTML page (the query, the model, thumbnails inlined, the dataset's captions of each image)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL, the two kinds of query, ``--top`` and ``--html``."""
    p.add_argument(
        "model",
        type=Path,
        help="an exported model (msa export --model), a checkpoint folder or a results folder",
    )
    p.add_argument("--images", type=Path, help="the image folder to search (any depth)")
    p.add_argument("--query", help="with --images: the sentence to search for")
    p.add_argument("--image", type=Path, help="an image file whose captions to find")
    p.add_argument("--captions", type=Path, help="with --image: the candidates, one per line")
    p.add_argument("--top", type=positive_int, default=5, help="how many results (default: 5)")
    p.add_argument(
        "--html",
        type=Path,
        help="the results page to write (default: search.html in the cache folder)",
    )


def cache_dir(model_dir: Path) -> Path:
    """Where the searches of a model keep embeddings and pages: ``<model>.search`` beside it.

    Beside a read-only model: ``$XDG_CACHE_HOME/msa/search/<name>-<digest of its path>``.
    """
    model_dir = model_dir.resolve()
    beside = model_dir.parent / f"{model_dir.name}.search"
    if beside.is_dir() and os.access(beside, os.W_OK | os.X_OK):
        return beside
    if not beside.exists() and os.access(model_dir.parent, os.W_OK | os.X_OK):
        return beside
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(model_dir).encode()).hexdigest()[:12]
    return home / "msa" / "search" / f"{model_dir.name}-{digest}"


def model_tag(model_dir: Path) -> str:
    """Changes when the model's weights file does (its path, size and modification time)."""
    from msa_model.checkpoint import MODEL_FILE, WEIGHTS_FILE

    for name in (WEIGHTS_FILE, MODEL_FILE):
        path = model_dir.resolve() / name
        if path.is_file():
            stat = path.stat()
            return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    raise FileNotFoundError(f"{model_dir}: holds no model weights ({WEIGHTS_FILE} or {MODEL_FILE})")


def _read_captions(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file."""
    from msa_model.config import ConfigError

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"--captions {path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8, one caption per line"
        ) from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise ConfigError(f"--captions {path}: no captions (one per line)")
    return captions


def known_captions(data: DataConfig) -> dict[str, tuple[str, ...]]:
    """The dataset's captions by image filename (and by base name where it is unique); empty
    when the dataset file is not on this machine or does not read."""
    from msa_model.data import DatasetError, read_karpathy

    try:
        records = read_karpathy(data.json)
    except (OSError, DatasetError, ValueError):
        return {}
    names = [Path(r.filename).name for r in records]
    by_name = {n: r.captions for n, r in zip(names, records, strict=True) if names.count(n) == 1}
    return {**by_name, **{r.filename: r.captions for r in records}}


def _check(args: argparse.Namespace) -> None:
    from msa_model.config import ConfigError

    by_text = args.images is not None or args.query is not None
    by_image = args.image is not None or args.captions is not None
    if (
        by_text == by_image
        or (by_text and None in (args.images, args.query))
        or (by_image and None in (args.image, args.captions))
    ):
        raise ConfigError(
            "msa search: give either --images DIR --query TEXT or --image FILE --captions FILE"
        )
    if by_text and not args.query.strip():
        raise ConfigError("--query: empty; give the sentence to search for")


def run(args: argparse.Namespace) -> int:
    """Print the top results with their scores; write the HTML page."""
    from msa_model.checkpoint import restore_model
    from msa_model.config import DataConfig, from_dict
    from msa_model.engine import default_device
    from msa_model.retrieval import load_gallery, search_captions, search_images
    from workflows.results.locate import resolve_checkpoint
    from workflows.results.model_meta import read_model_meta, weights_must_fit
    from workflows.results.search_page import write_search_page

    _check(args)
    model_dir = resolve_checkpoint(args.model)
    read_model_meta(model_dir)
    device = default_device()
    with weights_must_fit(model_dir):
        model, meta = restore_model(model_dir, device)
    data = from_dict(DataConfig, meta["experiment"]["data"], "data")
    shown = f"{meta['experiment'].get('name', model_dir.name)} ({model_dir})"
    if "seed" in (source := meta.get("source") or {}):  # msa export --model of a final stage
        shown += f", the final winner {source.get('candidate')} seed {source['seed']}"
    known = known_captions(data)
    batch = int(meta["experiment"].get("train", {}).get("eval_batch_size", 256))
    cache = cache_dir(model_dir)
    page = args.html or cache / "search.html"
    if args.images is not None:
        folder = args.images.resolve()
        digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
        gallery = load_gallery(
            model, data, folder, cache / f"images-{digest}.pt", model_tag(model_dir), device, batch
        )
        how = "from the cache" if gallery.cached else "embedded now"
        print(f"[msa] {len(gallery.names)} images of {args.images} ({how})")
        hits = search_images(model, gallery, args.query, args.top, device)
        write_search_page(
            page, hits, model=shown, query=args.query, image_folder=folder, captions=known
        )
    else:
        captions = _read_captions(args.captions)
        hits = search_captions(model, data, args.image, captions, args.top, device, batch)
        print(f"[msa] {len(captions)} captions of {args.captions}")
        write_search_page(page, hits, model=shown, query_image=args.image, captions=known)
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:3d}  {hit.score:7.4f}  {hit.item}")
    print(f"[msa] page: {page}")
    return 0
