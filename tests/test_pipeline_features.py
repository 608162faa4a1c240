"""Request fields end to end on the built-in demo model: tiling makes a picture that wraps, Restore
faces without a model file leaves the picture and says which folder to fill."""
from __future__ import annotations


import numpy as np
import pytest

from conftest import ROOT
from webui.imaging.face_restore import FaceRestorers
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.processing.pipeline import Pipeline
from webui.scripts.builtin import builtin_catalog
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.settings import Settings

DEMO = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("demo")
    (root / "models").mkdir()
    registry = CheckpointRegistry(root / "models", root / "cache", builtin=[DEMO])
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
    models.load(DEMO.name)
    settings = Settings.load(root / "config.json")
    faces = FaceRestorers({"GFPGAN": root / "GFPGAN", "Codeformer": root / "Codeformer"}, settings=settings)
    return Pipeline(models, settings, root / "outputs", scripts=builtin_catalog(), faces=faces)


def gen(pl: Pipeline, **kw):
    req = Txt2ImgRequest(**{"prompt": "a yellow star at the center on a purple background", "steps": 12,
                            "width": 64, "height": 64, "seed": 4, "sampler_name": "DPM++ 2M", **kw})
    return pl.run(req, JobState("t", "t"), save=False)


def seams(img: np.ndarray) -> tuple[float, float, float]:
    """(|last − first column|, |last − first row|, mean step between neighbouring columns), in levels."""
    a = img.astype(np.float32)
    return (float(np.abs(a[:, -1] - a[:, 0]).mean()), float(np.abs(a[-1] - a[0]).mean()),
            float(np.abs(np.diff(a, axis=1)).mean()))


def test_tiling_output_wraps(demo: Pipeline) -> None:
    """Over a few pictures, the right edge continues into the left (and the bottom into the top) about
    as smoothly as neighbouring columns do; without tiling the edges jump."""
    plain_seams, tiled_seams, steps = [], [], []
    for prompt in ("a red circle at the top on a green background", "a blue square at the right on a yellow background"):
        for seed in (1, 2):
            plain = np.asarray(gen(demo, prompt=prompt, seed=seed).images[0])
            res = gen(demo, prompt=prompt, seed=seed, tiling=True)
            assert "Tiling: True" in res.infotexts[0]
            p, t = seams(plain), seams(np.asarray(res.images[0]))
            plain_seams += p[:2]
            tiled_seams += t[:2]
            steps.append(t[2])
    assert np.mean(tiled_seams) < 0.5 * np.mean(plain_seams), (tiled_seams, plain_seams)
    assert np.mean(tiled_seams) < 1.5 * np.mean(steps), (tiled_seams, steps)


def test_restore_faces_without_a_model_file_warns(demo: Pipeline) -> None:
    plain = gen(demo)
    res = gen(demo, restore_faces=True)
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(plain.images[0]))
    assert any("GFPGAN" in w or "Codeformer" in w for w in res.info["warnings"]), res.info["warnings"]
    assert "Face restoration: CodeFormer" in res.infotexts[0]
