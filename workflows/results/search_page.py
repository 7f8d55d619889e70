"""The HTML page of ``msa search``: the query and its top results, images by relative path."""

from __future__ import annotations

import html
import os
from pathlib import Path

from msa_model.retrieval import Hit

__all__ = ["write_search_page"]

_STYLE = (
    "body{font-family:sans-serif;margin:2em}li{margin:.6em 0}img{max-width:224px;"
    "max-height:224px;vertical-align:middle;margin-right:1em}.score{font-family:monospace}"
)


def _src(image: Path, page: Path) -> str:
    """The image's address as seen from the page: a relative path (the page can move with it)."""
    return html.escape(Path(os.path.relpath(image.resolve(), page.parent.resolve())).as_posix())


def write_search_page(
    page: str | Path,
    hits: list[Hit],
    query: str | None = None,
    image_folder: str | Path | None = None,
    query_image: str | Path | None = None,
) -> Path:
    """Write the page; returns it.

    Either a sentence ``query`` with image ``hits`` (names under ``image_folder``), or a
    ``query_image`` with caption ``hits``.
    """
    page = Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    if query_image is not None:
        title = f"captions for {Path(query_image).name}"
        head = f'<p><img src="{_src(Path(query_image), page)}" alt="query image"></p>'
        items = [
            f'<li><span class="score">{h.score:.4f}</span> {html.escape(h.item)}</li>' for h in hits
        ]
    else:
        assert query is not None and image_folder is not None
        title = f"images for: {query}"
        head = f"<p>query: <b>{html.escape(query)}</b> in {html.escape(str(image_folder))}</p>"
        items = [
            f'<li><img src="{_src(Path(image_folder) / h.item, page)}" alt="{html.escape(h.item)}">'
            f'<span class="score">{h.score:.4f}</span> {html.escape(h.item)}</li>'
            for h in hits
        ]
    body = "\n".join(items)
    page.write_text(
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n<h1>msa search</h1>\n{head}\n<ol>\n{body}\n"
        f"</ol>\n</body></html>\n",
        encoding="utf-8",
    )
    return page
