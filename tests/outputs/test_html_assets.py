"""The HTML page's assets: shipped as package data, inlined whole, inert inside the document."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from analyzer.outputs.html import template

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "analyzer" / "outputs" / "html" / "assets"


def test_package_data_covers_every_asset_file():
    # A non-editable install ships only what package-data names: an asset left out would
    # make every page of an installed analyzer fail to render.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["analyzer.outputs.html"]
    on_disk = sorted(p.name for p in ASSETS.iterdir() if p.is_file())
    assert on_disk, "no asset files"
    for name in on_disk:
        assert any(fnmatch.fnmatch(f"assets/{name}", pat) for pat in patterns), name
    # ... and the template reads only files that exist.
    assert set(template.ASSET_FILES) <= set(on_disk)
    unused = set(on_disk) - set(template.ASSET_FILES)
    assert not unused, f"asset files the page never reads: {unused}"


def test_page_inlines_every_asset_under_one_nonce():
    page = template.render_page({"title": "t"}, [[]], nonce="NONCE123")
    assert template.asset("page.css") in page
    for name in template.ASSET_SCRIPTS:
        assert template.asset(name) in page
    assert "{nonce}" not in page and "{css}" not in page
    assert page.count('nonce="NONCE123"') == 2  # the style and the one script
    assert "default-src 'none'" in page


def test_assets_cannot_end_their_element():
    # Inlined verbatim: a "</script" or "</style" in an asset would cut the page short.
    for name in template.ASSET_SCRIPTS:
        assert "</script" not in template.asset(name).lower(), name
    assert "</style" not in template.asset("page.css").lower()
