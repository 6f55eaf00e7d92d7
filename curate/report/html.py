"""One self-contained HTML page: sections of escaped text, tables, embedded PNGs and image galleries.

Every string that reaches the page goes through `html.escape` here, so a caption holding `<script>` shows as
text. Images are embedded as data URIs (no external requests).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.gallery{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;width:160px;font-size:.8em}figure img{width:160px;height:160px;object-fit:cover;border:1px solid #ccc}
.muted{color:#777}
"""


def esc(value: Any) -> str:  # noqa: ANN401
    return html.escape("" if value is None else str(value), quote=True)


def png_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(data: bytes, alt: str, mime: str = "image/png") -> str:
    return f'<img src="{png_uri(data, mime)}" alt="{esc(alt)}">'


def gallery(items: Sequence[tuple[bytes | None, str]]) -> str:
    """(jpeg bytes or None, caption) figures."""
    figs = []
    for data, caption in items:
        img = image(data, caption, "image/jpeg") if data else '<div class="muted">(no image)</div>'
        figs.append(f"<figure>{img}<figcaption>{esc(caption)}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figs)}</div>'


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """sections: (heading, already-built HTML body) pairs; headings are escaped here."""
    body = "".join(f"<h2>{esc(h)}</h2>{b}" for h, b in sections)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>")
