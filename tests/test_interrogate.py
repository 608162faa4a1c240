"""POST /sdapi/v1/interrogate over the real server with tiny, randomly initialised BLIP and CLIP models
saved in transformers' folder layout (nothing is downloaded), and the 4xx answers when none is installed."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import requests
import torch
from PIL import Image

from conftest import ROOT, start_server, stop_server

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "circle", "on", "blue",
         "background", "cat", "photo", "of"]
MEDIUMS = ["a photograph", "an oil painting", "a pencil sketch"]
FLAVORS = ["vivid colours", "soft light", "high contrast", "minimalism"]


def make_tiny_blip(d: Path) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    d.mkdir(parents=True, exist_ok=True)
    vocab = d.parent / "tiny-blip-vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = BlipConfig(
            text_config=dict(vocab_size=len(WORDS), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                             num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=64,
                             bos_token_id=5, pad_token_id=0, sep_token_id=3, eos_token_id=3),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                               image_size=32, patch_size=8),
            projection_dim=16)
        BlipForConditionalGeneration(cfg).eval().save_pretrained(d)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=BertTokenizer(str(vocab), bos_token="[DEC]")).save_pretrained(d)
    vocab.unlink()
    return d


def make_tiny_clip(d: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tok_dir = ROOT / "webui" / "models" / "tokenizer"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                                          num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=77),
                         vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                            num_hidden_layers=2, image_size=32, patch_size=8),
                         projection_dim=16)
        CLIPModel(cfg).eval().save_pretrained(d)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))).save_pretrained(d)
    return d


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    data = tmp_path_factory.mktemp("interrogate")
    srv = start_server(data, model_dir, "--skip-load-model-at-start")
    yield srv
    stop_server(srv)


def test_missing_models_are_4xx_naming_the_folder(server) -> None:
    img = b64(Image.new("RGB", (40, 30), "red"))
    models = server.data_dir / "models"
    r = requests.post(server.api("interrogate"), json={"image": img, "model": "clip"}, timeout=60)
    assert r.status_code == 400 and str(models / "BLIP") in r.json()["detail"]
    r = requests.post(server.api("interrogate"), json={"image": img, "model": "deepdanbooru"}, timeout=60)
    assert r.status_code == 400 and str(models / "deepbooru") in r.json()["detail"]
    assert requests.post(server.api("interrogate"), json={"image": img, "model": "x"}, timeout=60).status_code == 404
    assert requests.post(server.api("interrogate"), json={"image": "", "model": "clip"}, timeout=60).status_code == 422
    assert requests.post(server.api("interrogate"), json={"image": "!!", "model": "clip"}, timeout=60).status_code == 400


def test_blip_caption_then_clip_ranked_categories(server) -> None:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    models = server.data_dir / "models"
    blip = make_tiny_blip(models / "BLIP" / "tiny-blip")
    img = Image.new("RGB", (48, 40), (200, 30, 30))
    r = requests.post(server.api("interrogate"), json={"image": b64(img), "model": "clip"}, timeout=120)
    assert r.status_code == 200, r.text
    # the caption is what the BLIP folder's model writes for this picture (A1111's 24..48 tokens, 1 beam)
    proc = BlipProcessor.from_pretrained(blip, local_files_only=True)
    model = BlipForConditionalGeneration.from_pretrained(blip, local_files_only=True).eval()
    with torch.inference_mode():
        out = model.generate(**proc(images=img, return_tensors="pt"), num_beams=1, min_length=24, max_length=48)
    caption = proc.decode(out[0], skip_special_tokens=True).strip()
    assert caption and r.json() == {"caption": caption}
    assert set(caption.split()) <= set(WORDS)

    make_tiny_clip(models / "CLIP" / "tiny-clip")
    cats = models / "interrogate"
    cats.mkdir()
    (cats / "mediums.txt").write_text("\n".join(MEDIUMS) + "\n")
    (cats / "flavors.txt").write_text("\n".join(FLAVORS) + "\n")
    (cats / "flavors.top").write_text("2")
    r = requests.post(server.api("interrogate"), json={"image": b64(img)}, timeout=120)
    assert r.status_code == 200, r.text
    parts = r.json()["caption"].split(", ")
    assert parts[0] == caption and len(parts) == 4  # caption, 2 flavors (files in name order), 1 medium
    assert set(parts[1:3]) <= set(FLAVORS) and len(set(parts[1:3])) == 2 and parts[3] in MEDIUMS
