"""SDXL files whose widths differ from SDXL's: every width read from the shapes, and a mismatch the
shapes cannot reveal is a 4xx naming the file, never a 500 (real server, tiny sgm-layout files)."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from conftest import start_server, stop_server
from tiny_models import TINY_OPEN_CLIP, make_tiny_checkpoint
from webui.models.detect import UnsupportedModelError, detect_checkpoint
from webui.models.file_io import read_key_shapes

POOLED = TINY_OPEN_CLIP["projection_dim"]  # the second text encoder's projection width (32)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("xl") / "models" / "Stable-diffusion"
    # time ids 8 wide instead of 256: label_emb takes 32 + 6 * 8 = 80 inputs
    make_tiny_checkpoint(d / "xl-narrow-ids.safetensors", "sdxl",
                         unet_overrides={"addition_time_embed_dim": 8,
                                         "projection_class_embeddings_input_dim": POOLED + 6 * 8})
    # cross-attention 48 wide while the text encoder gives 32: nothing in the shapes ties them
    make_tiny_checkpoint(d / "sd1-mismatch.safetensors", "sd1", unet_overrides={"cross_attention_dim": 48})
    return d


def test_time_id_width_is_read_from_the_shapes(ckpt_dir: Path) -> None:
    det = detect_checkpoint(*read_key_shapes(ckpt_dir / "xl-narrow-ids.safetensors"))
    assert det.family == "sdxl"
    assert det.unet_config["addition_time_embed_dim"] == 8
    assert det.unet_config["projection_class_embeddings_input_dim"] == POOLED + 48
    shapes, meta = read_key_shapes(ckpt_dir / "xl-narrow-ids.safetensors")
    label = "model.diffusion_model.label_emb.0.0.weight"
    shapes = dict(shapes, **{label: (shapes[label][0], POOLED + 7)})  # 7 is no six-fold width
    with pytest.raises(UnsupportedModelError, match="time-id"):
        detect_checkpoint(shapes, meta)


def test_generation_with_narrow_time_ids_and_a_clear_error_for_a_mismatch(ckpt_dir: Path) -> None:
    server = start_server(ckpt_dir.parent.parent, ckpt_dir)
    try:
        titles = {m["model_name"]: m["title"] for m in requests.get(server.api("sd-models"), timeout=10).json()}
        body = {"prompt": "a cat", "seed": 1, "steps": 2, "width": 64, "height": 64}
        r = requests.post(server.api("txt2img"), timeout=300, json=dict(
            body, override_settings={"sd_model_checkpoint": titles["xl-narrow-ids"]}))
        assert r.status_code == 200, r.text
        assert r.json()["images"] and "Model: xl-narrow-ids" in r.json()["info"]
        r = requests.post(server.api("txt2img"), timeout=300, json=dict(
            body, override_settings={"sd_model_checkpoint": titles["sd1-mismatch"]}))
        assert 400 <= r.status_code < 500, r.text
        detail = r.json()["detail"]
        assert "sd1-mismatch.safetensors" in detail and "shapes cannot be multiplied" in detail
        assert requests.get(server.api("options"), timeout=10).status_code == 200  # the server goes on
    finally:
        stop_server(server)
