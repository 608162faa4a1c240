"""The Processing pipeline and its script runner, in-process on tiny real-layout checkpoints:
hook order and arguments, scripts changing the job, failures isolated, the options snapshot."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.processing.pipeline import Pipeline
from webui.processing.scripts import AlwaysVisible, ArgInfo, Script, ScriptCatalog, ScriptRunner
from webui.scripts.builtin import builtin_catalog
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Img2ImgRequest, Txt2ImgRequest
from webui.settings import Settings


class Recorder(Script):
    """An always-on script that records every hook it receives, with the arguments."""
    args = [ArgInfo("tag", "default-tag")]

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def title(self) -> str:
        return "Recorder"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def _rec(self, name: str, detail: Any = None) -> None:
        self.calls.append((name, detail))

    def setup(self, p, tag):
        self._rec("setup", tag)

    def before_process(self, p, tag):
        self._rec("before_process", tag)

    def process(self, p, tag):
        self._rec("process", (list(p.all_prompts), list(p.all_seeds)))

    def before_process_batch(self, p, tag, *, batch_number, prompts, seeds, subseeds):
        self._rec("before_process_batch", (batch_number, list(prompts), list(seeds), list(subseeds)))

    def after_extra_networks_activate(self, p, tag, *, batch_number, prompts, seeds, subseeds, extra_network_data):
        self._rec("after_extra_networks_activate", (batch_number, sorted(extra_network_data)))

    def process_batch(self, p, tag, *, batch_number, prompts, seeds, subseeds):
        self._rec("process_batch", batch_number)

    def process_before_every_sampling(self, p, tag, *, x, noise, c, uc):
        self._rec("process_before_every_sampling", (tuple(x.shape), tuple(noise.shape)))

    def on_cfg_denoiser(self, p, params, tag):
        self._rec("on_cfg_denoiser", (params.sampling_step, params.total_sampling_steps, tuple(params.x.shape),
                                      params.text_cond is not None and params.text_uncond is not None))

    def on_cfg_denoised(self, p, params, tag):
        self._rec("on_cfg_denoised", params.sampling_step)

    def on_cfg_after_cfg(self, p, params, tag):
        self._rec("on_cfg_after_cfg", params.sampling_step)

    def before_hr(self, p, tag):
        self._rec("before_hr", None)

    def post_sample(self, p, ps, tag):
        self._rec("post_sample", tuple(ps.samples.shape))

    def postprocess_batch(self, p, tag, *, images, batch_number):
        self._rec("postprocess_batch", (batch_number, tuple(images.shape)))

    def postprocess_batch_list(self, p, pp, tag, *, batch_number):
        self._rec("postprocess_batch_list", (batch_number, len(pp.images)))

    def postprocess_image(self, p, pp, tag):
        self._rec("postprocess_image", pp.image.size)

    def postprocess(self, p, processed, tag):
        self._rec("postprocess", len(processed.images))


def _collapse(calls: list[tuple[str, Any]]) -> list[str]:
    """Hook names in order, with runs of per-step hooks folded to one entry."""
    out: list[str] = []
    for name, _ in calls:
        if name.startswith("on_cfg") and out and out[-1] == name:
            continue
        if name.startswith("on_cfg") and len(out) >= 2 and out[-2] == name:
            continue
        if name.startswith("on_cfg") and len(out) >= 3 and out[-3] == name:
            continue
        out.append(name)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("proc")
    ckpt = root / "models"
    ckpt.mkdir()
    make_tiny_checkpoint(ckpt / "a.safetensors", family="sd1", seed=21)
    make_tiny_checkpoint(ckpt / "b.safetensors", family="sd1", seed=22)
    registry = CheckpointRegistry(ckpt, root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
    models.load("a.safetensors")
    settings = Settings.load(root / "config.json")
    return models, settings, root


def pipeline_with(env, *scripts: Script) -> Pipeline:
    models, settings, root = env
    cat = builtin_catalog()
    for s in scripts:
        cat.txt2img.add(s)
        cat.img2img.add(s)  # the same instance: tests read what it recorded
    return Pipeline(models, settings, root / "outputs", scripts=cat)


BASE = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "seed": 7, "sampler_name": "Euler"}


def run(pl: Pipeline, save: bool = False, **kw) -> Any:
    cls = Img2ImgRequest if "init_images" in kw else Txt2ImgRequest
    return pl.run(cls(**{**BASE, **kw}), JobState("t", "t"), save=save)


def test_hook_order_txt2img_with_hires(env) -> None:
    rec = Recorder()
    pl = pipeline_with(env, rec)
    res = run(pl, batch_size=2, n_iter=2, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2,
              denoising_strength=0.5, alwayson_scripts={"recorder": {"args": ["mine"]}})
    assert len(res.images) == 4
    names = _collapse(rec.calls)
    batch = ["before_process_batch", "after_extra_networks_activate", "process_batch",
             "process_before_every_sampling", "on_cfg_denoiser", "on_cfg_denoised", "on_cfg_after_cfg",
             "before_hr", "process_before_every_sampling", "on_cfg_denoiser", "on_cfg_denoised", "on_cfg_after_cfg",
             "post_sample", "postprocess_batch", "postprocess_batch_list", "postprocess_image", "postprocess_image"]
    assert names == ["setup", "before_process", "process"] + batch + batch + ["postprocess"]
    calls = dict(rec.calls[:3])
    assert calls["setup"] == "mine"  # the script's own argument from alwayson_scripts
    assert rec.calls[2] == ("process", (["a red circle"] * 4, [7, 8, 9, 10]))
    pb = [d for n, d in rec.calls if n == "before_process_batch"]
    assert pb == [(0, ["a red circle"] * 2, [7, 8], pb[0][3]), (1, ["a red circle"] * 2, [9, 10], pb[1][3])]
    assert ("process_before_every_sampling", ((2, 4, 8, 8), (2, 4, 8, 8))) in rec.calls
    assert ("process_before_every_sampling", ((2, 4, 12, 12), (2, 4, 12, 12))) in rec.calls  # hires pass
    steps = [d for n, d in rec.calls if n == "on_cfg_denoiser"]
    assert steps[0][0] == 0 and steps[0][1] == 3 and steps[0][3]
    assert ("postprocess_batch", (0, (2, 3, 96, 96))) in rec.calls
    assert ("postprocess_image", (96, 96)) in rec.calls
    assert rec.calls[-1] == ("postprocess", 4)


def test_hook_order_img2img_inpaint(env) -> None:
    rec = Recorder()
    pl = pipeline_with(env, rec)
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    run(pl, init_images=[img], mask=mask, denoising_strength=0.6, alwayson_scripts={"Recorder": {"args": []}})
    names = _collapse(rec.calls)
    assert names == ["setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
                     "process_batch", "process_before_every_sampling", "on_cfg_denoiser", "on_cfg_denoised",
                     "on_cfg_after_cfg", "post_sample", "postprocess_batch", "postprocess_batch_list",
                     "postprocess_image", "postprocess"]
    assert rec.calls[0] == ("setup", "default-tag")  # no args given: the script's default


class ChangePrompts(Script):
    def title(self) -> str:
        return "Change prompts"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def process(self, p):
        p.all_prompts = ["a blue square" for _ in p.all_prompts]


def test_script_changing_all_prompts_changes_image_and_infotext(env) -> None:
    pl = pipeline_with(env, ChangePrompts())
    changed = run(pl)
    assert changed.infotexts[0].startswith("a blue square\n")
    assert changed.info["all_prompts"] == ["a blue square"]
    direct = run(pipeline_with(env), prompt="a blue square")
    plain = run(pipeline_with(env))
    assert np.array_equal(np.asarray(changed.images[0]), np.asarray(direct.images[0]))
    assert not np.array_equal(np.asarray(changed.images[0]), np.asarray(plain.images[0]))


class Invert(Script):
    def title(self) -> str:
        return "Invert"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def postprocess_image(self, p, pp):
        pp.image = Image.eval(pp.image, lambda v: 255 - v)


def test_postprocess_image_result_is_saved(env) -> None:
    plain = run(pipeline_with(env))
    res = run(pipeline_with(env, Invert()), save=True)
    assert np.array_equal(np.asarray(res.images[0]), 255 - np.asarray(plain.images[0]))
    saved = Image.open(res.paths[0])
    assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(res.images[0]))
    assert saved.info["parameters"] == res.infotexts[0]


class Broken(Script):
    def title(self) -> str:
        return "Broken"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def process(self, p):
        raise RuntimeError("boom")

    def postprocess_image(self, p, pp):  # never called: the script is left out after its failure
        raise AssertionError("a failed script must not run again in the same job")


def test_raising_script_is_reported_and_job_completes(env) -> None:
    res = run(pipeline_with(env, Broken()))
    assert len(res.images) == 1
    assert any("Broken" in w and "process" in w and "boom" in w for w in res.info["warnings"])


def test_unknown_scripts_are_refused(env) -> None:
    from webui.processing.errors import GenerationError
    pl = pipeline_with(env)
    with pytest.raises(GenerationError, match="no such script"):
        pl.validate(Txt2ImgRequest(**BASE, script_name="no such script"))
    with pytest.raises(GenerationError, match="mystery"):
        pl.validate(Txt2ImgRequest(**BASE, alwayson_scripts={"mystery": {"args": [1]}}))


class ChangeSettingMidJob(Script):
    """Plays a `POST /options` arriving while the job samples."""
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.seen: list[Any] = []

    def title(self) -> str:
        return "Mid-job settings change"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def on_cfg_denoiser(self, p, params):
        if params.sampling_step == 1 and self.settings is not None:
            self.settings.set("CLIP_stop_at_last_layers", 3)
        self.seen.append(p.opts.get("CLIP_stop_at_last_layers"))


@pytest.mark.parametrize("restore", [True, False])
def test_options_snapshot_keeps_a_concurrent_change_and_never_writes_overrides(env, restore: bool) -> None:
    models, settings, root = env
    settings.set("CLIP_stop_at_last_layers", 1)
    script = ChangeSettingMidJob(settings)
    cat = ScriptCatalog(ScriptRunner(False, [script]), ScriptRunner(True))
    pl = Pipeline(models, settings, root / "outputs", scripts=cat)
    res = run(pl, override_settings={"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337},
              override_settings_restore_afterwards=restore)
    assert set(script.seen) == {2}  # the job saw its override all along
    assert "Clip skip: 2" in res.infotexts[0] and "ENSD: 31337" in res.infotexts[0]
    assert settings.get("CLIP_stop_at_last_layers") == 3  # the change made during the job is kept
    saved = json.loads((root / "config.json").read_text())
    assert saved["CLIP_stop_at_last_layers"] == 3
    assert "eta_noise_seed_delta" not in saved and all(v is not None for v in saved.values())
    settings.set("CLIP_stop_at_last_layers", 1)


def test_checkpoint_override_runs_on_that_model_and_restores(env) -> None:
    models, settings, root = env
    models.load("a.safetensors")
    pl = pipeline_with(env)
    on_b = run(pl, override_settings={"sd_model_checkpoint": "b.safetensors"})
    assert "Model: b" in on_b.infotexts[0]
    assert models.current.info.stem == "a"


def test_jobs_on_two_threads_keep_their_own_options(env) -> None:
    """Two Processing objects never share per-job state (the queue runs one at a time; this checks
    that nothing of a job is left on the shared pipeline)."""
    pl = pipeline_with(env)
    results: dict[int, Any] = {}

    def go(i: int) -> None:
        results[i] = run(pl, override_settings={"CLIP_stop_at_last_layers": 1 + i})
    for i in (1, 2):
        t = threading.Thread(target=go, args=(i,))
        t.start()
        t.join()
    assert "Clip skip: 2" in results[1].infotexts[0] and "Clip skip: 3" in results[2].infotexts[0]


def test_request_fields_reach_the_image_and_infotext(env) -> None:
    """tiling, s_min_uncond (NGMS), sigma churn and the RNG source each change what is drawn and are
    written as A1111 writes them."""
    pl = pipeline_with(env)
    plain = run(pl, sampler_name="Euler")
    for kw, text in (({"tiling": True}, "Tiling: True"), ({"s_min_uncond": 100.0}, "NGMS: 100,"),
                     ({"s_churn": 0.5}, "Sigma churn: 0.5"),
                     ({"override_settings": {"randn_source": "NV"}}, "RNG: NV")):
        res = run(pl, sampler_name="Euler", **kw)
        assert text in res.infotexts[0], (kw, res.infotexts[0])
        assert not np.array_equal(np.asarray(res.images[0]), np.asarray(plain.images[0])), kw
    gpu = run(pl, override_settings={"randn_source": "GPU"})  # no CUDA here: NV, with a note
    nv = run(pl, override_settings={"randn_source": "NV"})
    assert np.array_equal(np.asarray(gpu.images[0]), np.asarray(nv.images[0]))
    assert any("NV" in w for w in gpu.info["warnings"])
    assert "RNG:" not in gpu.infotexts[0]  # A1111 writes nothing for its default GPU source


def test_unknown_scheduler_is_refused_with_the_names(env) -> None:
    from webui.processing.errors import GenerationError
    pl = pipeline_with(env)
    with pytest.raises(GenerationError, match="unknown schedule type 'Bogus'.*Karras"):
        pl.validate(Txt2ImgRequest(**BASE, scheduler="Bogus"))
    pl.validate(Txt2ImgRequest(**BASE, scheduler="karras"))  # names and labels both work
    pl.validate(Txt2ImgRequest(**BASE, scheduler="Karras"))


def _count_calls(module: Any) -> list[int]:
    calls: list[int] = []
    module.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    return calls


def test_refiner_takes_over_the_last_steps(env) -> None:
    models, settings, root = env
    models.set_cache_limit(2)  # both models stay loaded, so the hooks stay on their UNets
    try:
        models.load("b.safetensors")
        b_calls = _count_calls(models.current.sd.unet)
        models.load("a.safetensors")
        a_calls = _count_calls(models.current.sd.unet)
        pl = pipeline_with(env)
        res = run(pl, steps=10, sampler_name="Euler", refiner_checkpoint="b.safetensors", refiner_switch_at=0.5)
        assert len(a_calls) > 0 and len(b_calls) > 0 and len(a_calls) + len(b_calls) == 10
        assert 3 <= len(b_calls) <= 7  # the second half of the schedule, by timestep
        text = res.infotexts[0]
        assert "Refiner: b [" in text and "Refiner switch at: 0.5" in text and "Model: a" in text
        plain = run(pl, steps=10, sampler_name="Euler")
        assert not np.array_equal(np.asarray(res.images[0]), np.asarray(plain.images[0]))
        assert models.current.info.stem == "a"  # the job ends on the main model
        with pytest.raises(Exception, match="not found"):
            pl.validate(Txt2ImgRequest(**BASE, refiner_checkpoint="nope.safetensors"))
    finally:
        models.set_cache_limit(1)


def test_hires_checkpoint_runs_the_second_pass(env) -> None:
    models, settings, root = env
    models.load("a.safetensors")
    pl = pipeline_with(env)
    kw = dict(enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.6)
    same = run(pl, **kw)
    other = run(pl, hr_checkpoint_name="b.safetensors", **kw)
    assert "Hires checkpoint: b [" in other.infotexts[0] and "Model: a" in other.infotexts[0]
    assert not np.array_equal(np.asarray(same.images[0]), np.asarray(other.images[0]))
    assert models.current.info.stem == "a"


def test_firstphase_size_image_cfg_and_task_id(env) -> None:
    from webui.processing.errors import GenerationError
    pl = pipeline_with(env)
    res = run(pl, width=128, height=128, firstphase_width=64, firstphase_height=64, enable_hr=True, hr_scale=2,
              hr_second_pass_steps=1, denoising_strength=0.5, force_task_id="task-abc")
    assert res.images[0].size == (128, 128) and "Size: 64x64" in res.infotexts[0]
    assert res.info["task_id"] == "task-abc"
    img = Image.new("RGB", (64, 64), (10, 200, 10))
    run(pl, init_images=[img], image_cfg_scale=1.5)  # what clients send by default is accepted
    with pytest.raises(GenerationError, match="instruct-pix2pix"):
        pl.validate(Img2ImgRequest(**BASE, init_images=[img], image_cfg_scale=3.0))


def test_refiner_with_one_model_in_memory(env) -> None:
    """With the default cache of one checkpoint the main model is dropped when the refiner loads,
    in the middle of sampling, and loaded back for the next batch and after the job."""
    models, _, _ = env
    models.set_cache_limit(1)
    models.load("a.safetensors")
    pl = pipeline_with(env)
    res = run(pl, steps=6, n_iter=2, sampler_name="DPM++ 2M", refiner_checkpoint="b.safetensors",
              refiner_switch_at=0.4)
    assert len(res.images) == 2 and all("Refiner: b [" in t for t in res.infotexts)
    assert models.current.info.stem == "a"


def test_image_saved_callbacks_change_the_file_and_learn_its_path(env, tmp_path: Path) -> None:
    pl = pipeline_with(env)
    seen: list[str] = []

    def before(params) -> None:
        params.image = Image.eval(params.image, lambda v: 255 - v)
        params.pnginfo["comment"] = "from a callback"
        params.filename = str(tmp_path / "chosen-name.png")

    def after(params) -> None:
        seen.append(params.filename)
    pl.callbacks.add("before_image_saved", before, name="test before")
    pl.callbacks.add("image_saved", after, name="test after")
    pl.callbacks.add("cfg_after_cfg", lambda params: None, name="noop")
    res = run(pl, save=True)
    assert seen == [str(tmp_path / "chosen-name.png")] and res.paths == [tmp_path / "chosen-name.png"]
    saved = Image.open(res.paths[0])
    assert saved.info["comment"] == "from a callback" and saved.info["parameters"] == res.infotexts[0]
    assert np.array_equal(np.asarray(saved.convert("RGB")), 255 - np.asarray(res.images[0]))

    def broken(params) -> None:
        raise ValueError("bad callback")
    pl.callbacks.add("cfg_denoiser", broken, name="broken one")
    res = run(pl)
    assert any("broken one" in w and "bad callback" in w for w in res.info["warnings"])


def test_p_sd_model_answers_a1111_names(env) -> None:
    seen: dict[str, Any] = {}

    class Reader(Script):
        def title(self) -> str:
            return "Reader"

        def show(self, is_img2img: bool) -> Any:
            return AlwaysVisible

        def process(self, p):
            m = p.sd_model
            seen.update(title=m.sd_checkpoint_info.title, filename=m.sd_checkpoint_info.filename,
                        hash=m.sd_model_hash, sdxl=m.is_sdxl, sd1=m.is_sd1)
    run(pipeline_with(env, Reader()))
    assert seen["title"].startswith("a.safetensors [") and seen["filename"].endswith("a.safetensors")
    assert seen["sd1"] and not seen["sdxl"] and len(seen["hash"]) == 10
