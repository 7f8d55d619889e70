"""The HTML page of ``msa search``: the query, the model, its top results; one file that can move.

Images are inlined as JPEG thumbnails (``data:`` URIs, at most :data:`THUMB` px a side), so the
page needs no file beside it; every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from msa_model.retrieval import Hit

__all__ = ["THUMB", "thumbnail_uri", "write_search_page"]

THUMB = 256  # px, the longer side of an inlined thumbnail
_STYLE = (
    "body{font-family:sans-serif;margin:2em}li{margin:.8em 0}img{max-width:256px;"
    "max-height:256px;vertical-align:top;margin-right:1em}.score{font-family:monospace}"
    ".caps{color:#444;font-size:.9em;margin:.3em 0 0 0}"
)


def thumbnail_uri(image: Path) -> str | None:
    """``image`` downscaled to :data:`THUMB` px as a JPEG ``data:`` URI; None when unreadable."""
    try:
        with Image.open(image) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=85)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image: Path, alt: str) -> str:
    uri = thumbnail_uri(image)
    if uri is None:
        return f"<i>({html.escape(alt)}: not a readable image)</i> "
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _captions(captions: Sequence[str]) -> str:
    if not captions:
        return ""
    items = "".join(f"<li>{html.escape(c)}</li>" for c in captions)
    return f'<ul class="caps">{items}</ul>'


def write_search_page(
    page: str | Path,
    hits: list[Hit],
    *,
    model: str,
    query: str | None = None,
    image_folder: str | Path | None = None,
    query_image: str | Path | None = None,
    captions: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write the page; returns it.

    Either a sentence ``query`` with image ``hits`` (names under ``image_folder``), or a
    ``query_image`` with caption ``hits``. ``model``: the model searched with, as shown;
    ``captions``: the dataset's captions by image name (relative to ``image_folder``), shown
    under each image they are known for.
    """
    page, captions = Path(page), captions or {}
    page.parent.mkdir(parents=True, exist_ok=True)
    if query_image is not None:
        image = Path(query_image)
        title = f"captions for {image.name}"
        head = (
            f"<p>query image: <b>{html.escape(str(image))}</b></p>\n<p>"
            f"{_img(image, image.name)}{_captions(captions.get(image.name, ()))}</p>"
        )
        items = [
            f'<li><span class="score">{h.score:.4f}</span> {html.escape(h.item)}</li>' for h in hits
        ]
    else:
        assert query is not None and image_folder is not None
        folder = Path(image_folder)
        title = f"images for: {query}"
        head = f"<p>query: <b>{html.escape(query)}</b> in {html.escape(str(folder))}</p>"
        items = [
            f'<li>{_img(folder / h.item, h.item)}<span class="score">{h.score:.4f}</span> '
            f"{html.escape(h.item)}{_captions(captions.get(h.item, ()))}</li>"
            for h in hits
        ]
    body = "\n".join(items)
    page.write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>msa search</h1>\n"
        f"<p>model: <b>{html.escape(model)}</b></p>\n{head}\n<ol>\n{body}\n</ol>\n</body></html>\n",
        encoding="utf-8",
    )
    return page
