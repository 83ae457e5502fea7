"""The page around the data: the page's assets inlined, and safe JSON embedding.

`write_page(out, meta, chunks, merged, nonce)` writes the whole HTML document
piece by piece (`render_page` returns it as one string, for small data). Data goes
into `<script type="application/json">` elements through `embed_json`, which
escapes every character that could end the element or be read as markup; the
script reads it with `textContent` + `JSON.parse` and builds the DOM with
`textContent` only (no `innerHTML`, no `href` from the wire).

Order in the document: meta, the first chunk, the script, then the other
chunks. The script draws the first screen at once and enables what needs the
whole capture (filters, search, far rows) on DOMContentLoaded.
"""

from __future__ import annotations

import json
from importlib import resources

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_TABLE = str.maketrans(_ESCAPES)


def embed_json(value) -> str:
    """JSON text that is inert inside a <script> element (no </script>, no <!--)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_TABLE)


# The page's own files (analyzer/outputs/html/assets/, package data in pyproject.toml):
# the skeleton (head, header, filters, panes) with {nonce} and {css} holes, the stylesheet,
# and the scripts, concatenated in this order into one strict function in one nonce'd
# <script> (they share its scope: later files use what earlier ones define).
ASSET_SCRIPTS = ("data.js", "list.js", "overview.js", "ladder.js", "plots.js", "main.js")
ASSET_FILES = ("skeleton.html", "page.css") + ASSET_SCRIPTS


def asset(name: str) -> str:
    """The text of one asset file, read once."""
    text = _ASSETS.get(name)
    if text is None:
        text = _ASSETS[name] = (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")
    return text


_ASSETS: dict[str, str] = {}


def page_script() -> str:
    """The page's JavaScript: every script asset inside one strict function."""
    body = "\n".join(asset(name) for name in ASSET_SCRIPTS)
    return f'"use strict";\n(function () {{\n{body}}})();\n'


def page_head(nonce: str) -> str:
    """The document up to the data: the skeleton with the nonce and the stylesheet filled in."""
    return asset("skeleton.html").replace("{nonce}", nonce).replace("{css}", asset("page.css"))


def write_page(out, meta, chunks, merged=(), nonce: str = "", details=(), chats: str | None = None) -> None:
    """Write the document to `out` (a text file) piece by piece: the head, `meta`, the first
    row chunk, the page script, the other row chunks `c1..`, then the merged-order chunks
    `m0..`. `meta` (a string, or an iterable of its pieces) and every chunk are JSON texts
    already made inert by `embed_json`; the
    chunks come from iterables, so the whole page is never held at once."""
    write = out.write
    write(page_head(nonce))
    write('<script type="application/json" id="meta">')
    for piece in (meta,) if isinstance(meta, str) else meta:
        write(piece)
    write("</script>\n")
    k = -1
    for k, chunk in enumerate(chunks):
        write(f'<script type="application/json" id="c{k}">{chunk}</script>\n')
        if k == 0:
            write(f'<script nonce="{nonce}">{page_script()}</script>\n')
    if k < 0:
        write(f'<script nonce="{nonce}">{page_script()}</script>\n')
    # Lane details (`d{k}`) and the chats (`dc`): what the first screen does not need.
    for k, chunk in enumerate(details):
        write(f'<script type="application/json" id="d{k}">{chunk}</script>\n')
    if chats is not None:
        write(f'<script type="application/json" id="dc">{chats}</script>\n')
    for k, chunk in enumerate(merged):
        write(f'<script type="application/json" id="m{k}">{chunk}</script>\n')
    write("</body>\n</html>\n")


def render_page(meta: dict, chunks: list[list], nonce: str) -> str:
    """The whole document as one string, from plain data (small pages, tests)."""
    import io
    buf = io.StringIO()
    write_page(buf, embed_json(meta), (embed_json(c) for c in chunks), (), nonce)
    return buf.getvalue()
