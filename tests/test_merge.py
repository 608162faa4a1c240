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
    assert len(recipe["primary_model_hash"]) == 10
    merged = load_checkpoint(out)  # the result is a normal checkpoint for our own loader
    assert merged.family == "sd1"


def test_merge_refuses_mismatched_families_and_missing_inputs(files) -> None:
    with pytest.raises(MergeError, match="same family"):
        merge_checkpoints(MergeRecipe(files["a"], files["xl"], None, output=files["dir"] / "bad.safetensors"))
    assert not (files["dir"] / "bad.safetensors").exists()
    with pytest.raises(MergeError, match="tertiary"):
        merge_checkpoints(MergeRecipe(files["a"], files["b"], None, "Add difference", output=files["dir"] / "x.safetensors"))
