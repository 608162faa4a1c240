"""Checkpoint merger on real tiny single-file checkpoints: arithmetic per tensor, recipe, reload."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny_models import make_tiny_checkpoint
from webui.models.file_io import load_state_dict, read_safetensors_header
from webui.models.load import load_checkpoint
from webui.models.merge import MergeError, MergeRecipe, merge_checkpoints


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("merge")
    return {"a": make_tiny_checkpoint(d / "a.safetensors", seed=1, dtype=torch.float32),
            "b": make_tiny_checkpoint(d / "b.safetensors", seed=2, dtype=torch.float32),
            "c": make_tiny_checkpoint(d / "c.safetensors", seed=3, dtype=torch.float32),
            "xl": make_tiny_checkpoint(d / "xl.safetensors", family="sdxl", seed=4), "dir": d}


def test_weighted_sum_and_add_difference_per_tensor(files) -> None:
    a, b, c = (load_state_dict(files[k]) for k in "abc")
    out = merge_checkpoints(MergeRecipe(files["a"], files["b"], None, "Weighted sum", 0.25,
                                        output=files["dir"] / "ws.safetensors"))
    ws = load_state_dict(out)
    assert set(ws) == set(a)
    k = next(k for k in a if k.endswith("attn1.to_q.weight"))
    assert torch.allclose(ws[k], a[k] * 0.75 + b[k] * 0.25, atol=1e-6)
    out = merge_checkpoints(MergeRecipe(files["a"], files["b"], files["c"], "Add difference", 0.5, save_as_half=True,
                                        output=files["dir"] / "ad.safetensors"))
    ad = load_state_dict(out)
    assert ad[k].dtype == torch.float16
    assert torch.allclose(ad[k].float(), (a[k] + (b[k] - c[k]) * 0.5).half().float())
    _, meta = read_safetensors_header(out)
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["interp_method"] == "Add difference" and recipe["multiplier"] == 0.5 and recipe["save_as_half"]
    assert len(recipe["primary_model_hash"]) == 64  # A1111 writes the full sha256
    merged = load_checkpoint(out)  # the result is a normal checkpoint for our own loader
    assert merged.family == "sd1"


def test_merge_refuses_mismatched_families_and_missing_inputs(files) -> None:
    with pytest.raises(MergeError, match="same family"):
        merge_checkpoints(MergeRecipe(files["a"], files["xl"], None, output=files["dir"] / "bad.safetensors"))
    assert not (files["dir"] / "bad.safetensors").exists()
    with pytest.raises(MergeError, match="tertiary"):
        merge_checkpoints(MergeRecipe(files["a"], files["b"], None, "Add difference", output=files["dir"] / "x.safetensors"))


def test_builtin_merged_with_itself_draws_exactly_like_the_builtin(tmp_path: Path) -> None:
    """A1111's "copy metadata" (on by default): the merge keeps v-prediction, the 64x64 resolution and
    the file's noise schedule, so A merged with A gives A's pixels (it drew noise at 512x512 before)."""
    import base64

    import requests

    from conftest import ROOT, start_server, stop_server, wait_for_model
    from webui.models.detect import detect_checkpoint
    from webui.models.file_io import read_key_shapes

    builtin = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
    ckpt_dir = tmp_path / "models" / "Stable-diffusion"
    out = merge_checkpoints(MergeRecipe(builtin, builtin, None, "Weighted sum", 0.3,
                                        output=ckpt_dir / "self-merge.safetensors"))
    _, meta = read_safetensors_header(out)
    _, src = read_safetensors_header(builtin)
    for key in ("modelspec.prediction_type", "modelspec.resolution", "modelspec.architecture"):
        assert meta[key] == src[key], key
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe["primary_model_hash"] == recipe["secondary_model_hash"]
    assert list(json.loads(meta["sd_merge_models"])) == [recipe["primary_model_hash"]]
    assert detect_checkpoint(*read_key_shapes(out)).default_size == 64
    assert torch.equal(load_state_dict(out)["alphas_cumprod"], load_state_dict(builtin)["alphas_cumprod"])

    server = start_server(tmp_path, ckpt_dir)
    try:
        wait_for_model(server)
        names = {m["model_name"]: m["title"] for m in requests.get(server.api("sd-models"), timeout=10).json()}
        assert "self-merge" in names and "shapes-demo-v4" in names
        images = []
        for name in ("shapes-demo-v4", "self-merge"):
            r = requests.post(server.api("txt2img"), json={
                "prompt": "a red circle on a blue background", "seed": 3, "steps": 8, "width": 64, "height": 64,
                "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": names[name]}}, timeout=300)
            assert r.status_code == 200, r.text
            images.append(base64.b64decode(r.json()["images"][0]))
            assert f"Model: {name}" in r.json()["info"]
        from io import BytesIO

        import numpy as np
        from PIL import Image
        a, b = (np.asarray(Image.open(BytesIO(x)).convert("RGB")) for x in images)
        assert a.shape == (64, 64, 3) and np.array_equal(a, b)
    finally:
        stop_server(server)


def test_merge_without_copy_metadata_keeps_only_the_recipe(files) -> None:
    out = merge_checkpoints(MergeRecipe(files["a"], files["b"], None, output=files["dir"] / "nocopy.safetensors",
                                        copy_metadata=False))
    _, meta = read_safetensors_header(out)
    assert set(meta) == {"format", "sd_merge_recipe", "sd_merge_models"}
    out = merge_checkpoints(MergeRecipe(files["a"], files["b"], None, output=files["dir"] / "nometa.safetensors",
                                        save_metadata=False))
    assert read_safetensors_header(out)[1] == {}
