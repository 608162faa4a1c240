"""Extra-networks cards: tag toggling, previews, user metadata files (pure parts; the page is in
test_ui_browser.py)."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from webui.ui.extra_networks import (Card, filter_sort, preview_for, read_user_metadata, tag_for, toggle_in_prompt,
                                     write_user_metadata)


def test_toggle_adds_then_removes_tags_and_activation_text() -> None:
    p = toggle_in_prompt("a cat", "<lora:ink:0.7>", "inkstyle")
    assert p == "a cat <lora:ink:0.7> inkstyle"  # A1111's extra_networks_add_text_separator " "
    assert toggle_in_prompt("a cat", "<lora:ink:0.7>", "", ", ") == "a cat, <lora:ink:0.7>"
    assert toggle_in_prompt(p, "<lora:ink:0.7>", "inkstyle") == "a cat"
    assert toggle_in_prompt("a cat <lora:ink:1.3>", "<lora:ink:0.7>") == "a cat"  # any weight counts as present
    assert toggle_in_prompt("", "myemb") == "myemb"
    assert toggle_in_prompt("myembx, myemb", "myemb") == "myembx"  # whole words only


def test_tags_previews_metadata(tmp_path: Path) -> None:
    f = tmp_path / "ink.safetensors"
    f.write_bytes(b"x")
    card = Card("Lora", "ink", "ink", f)
    assert not isinstance(preview_for(card), str)  # placeholder image
    Image.new("RGB", (8, 8)).save(tmp_path / "ink.preview.png")
    assert preview_for(card) == str(tmp_path / "ink.preview.png")
    assert tag_for(card, {}) == "<lora:ink:1>"
    write_user_metadata(card, {"preferred weight": 0.6, "activation text": "inkstyle"})
    (tmp_path / "ink.json").write_text(json.dumps({**json.loads((tmp_path / "ink.json").read_text()),
                                                   "sd version": "SD1"}))
    write_user_metadata(card, {"description": "ink drawings"})  # keeps keys it does not edit
    meta = read_user_metadata(card)
    assert meta == {"preferred weight": 0.6, "activation text": "inkstyle", "sd version": "SD1",
                    "description": "ink drawings"}
    assert tag_for(card, meta) == "<lora:ink:0.6>"
    assert tag_for(Card("Hypernetworks", "hn", "hn", None), {}) == "<hypernet:hn:1>"
    assert tag_for(Card("Textual Inversion", "emb", "emb", None), {"preferred weight": 0.5}) == "emb"
    g = tmp_path / "zeta.safetensors"
    g.write_bytes(b"y")
    cards = [Card("Lora", "zeta", "zeta", g), card]
    assert [c.name for c in filter_sort(cards, "", "Name")] == ["ink", "zeta"]
    assert [c.name for c in filter_sort(cards, "zet", "Name")] == ["zeta"]
