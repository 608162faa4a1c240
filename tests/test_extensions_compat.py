"""A1111's `modules.*` names (webui/extensions/compat) on real services built from flags, with a
tiny real-layout checkpoint: options, flags, the loaded model, scripts' ui() arguments, processing,
saving, callbacks, extra networks, the unsupported LDM modules and the install.py helpers."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from tiny_models import make_tiny_checkpoint
from webui.cli import build_parser, resolve_paths
from webui.extensions.compat import binding
from webui.extensions.manager import ExtensionManager
from webui.services.container import Services, build_services
from webui.settings import Settings

COMPAT_DIR = Path(binding.__file__).resolve().parent


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("compat")
    ckpt = data / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    make_tiny_checkpoint(ckpt / "tiny.safetensors", family="sd1", seed=5)
    ext = data / "extensions" / "myext"
    (ext / "scripts").mkdir(parents=True)
    (ext / "helper.py").write_text("def where():\n    from modules import scripts\n    return scripts.basedir()\n")
    parser = build_parser()
    parser.add_argument("--myext-dir", default=None)  # what an extension's preload(parser) does
    args = parser.parse_args(["--data-dir", str(data), "--use-cpu", "all", "--port", "7999",
                              "--ckpt", str(ckpt / "tiny.safetensors"), "--myext-dir", "/some/where"])
    services = build_services(args, resolve_paths(args))
    services.models.load()
    manager = ExtensionManager(data / "extensions", services.settings, args)
    manager.refresh()
    binding.bind(services, manager)
    sys.path.insert(0, str(COMPAT_DIR))
    try:
        yield services
    finally:
        sys.path.remove(str(COMPAT_DIR))
        for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
            del sys.modules[name]
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_UnsupportedFinder"]
        binding.unbind()
        services.queue.close()


def generate(svc: Services, **kw: Any) -> Any:
    from modules import processing
    args = dict(prompt="a red circle", steps=2, width=64, height=64, seed=11, sampler_name="Euler",
                do_not_save_samples=True, do_not_save_grid=True)
    args.update(kw)
    p = processing.StableDiffusionProcessingTxt2Img(**args)
    return p, processing.process_images(p)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


# ---- shared: options, flags, the model, state ----
def test_add_option_registers_persists_and_fires_onchange(svc: Services) -> None:
    import gradio as gr
    from modules import shared

    seen: list[Any] = []
    info = shared.OptionInfo(0.5, "My strength", gr.Slider, {"minimum": 0.0, "maximum": 2.0, "step": 0.1},
                             onchange=lambda: seen.append(shared.opts.myext_strength),
                             section=("myext", "My Extension")).info("how strong").needs_reload_ui()
    assert isinstance(info, shared.OptionInfo)
    shared.opts.add_option("myext_strength", info)
    shared.opts.add_option("myext_mode", shared.OptionInfo("fast", "Mode", gr.Radio, {"choices": ["fast", "slow"]},
                                                           section=("myext", "My Extension")))
    native = svc.settings.options["myext_strength"]
    assert (native.section, native.component, native.minimum, native.maximum) == ("My Extension", "slider", 0.0, 2.0)
    assert native.label.startswith("My strength (how strong)") and "requires Reload UI" in native.label
    assert svc.settings.options["myext_mode"].choices == ("fast", "slow")
    assert svc.settings.get("myext_strength") == 0.5 and svc.options()["myext_strength"] == 0.5
    assert shared.opts.myext_strength == 0.5 and shared.opts.data["myext_mode"] == "fast"

    assert shared.opts.set("myext_strength", 1.5) is True
    assert seen == [1.5]  # onchange read the new value through opts
    assert shared.opts.set("myext_strength", 1.5) is False  # unchanged
    assert shared.opts.set("myext_mode", "bogus") is False  # not one of the choices
    shared.opts.save()
    assert Settings.load(svc.settings.path).values["myext_strength"] == 1.5
    svc.settings.set("myext_strength", 0.2)  # a POST /options: the extension's onchange runs too
    assert seen == [1.5, 0.2] and shared.opts.data_labels["myext_strength"] is info


def test_onchange_that_raises_refuses_the_change(svc: Services) -> None:
    from modules import shared

    def boom() -> None:
        raise ValueError("no")

    shared.opts.add_option("myext_guarded", shared.OptionInfo(1, "Guarded", onchange=boom, section=("myext", "My")))
    assert shared.opts.set("myext_guarded", 2) is False
    assert shared.opts.myext_guarded == 1


def test_opts_read_the_live_settings(svc: Services) -> None:
    from modules import shared

    svc.settings.set("CLIP_stop_at_last_layers", 3, save=False)
    try:
        assert shared.opts.CLIP_stop_at_last_layers == 3 and shared.opts["CLIP_stop_at_last_layers"] == 3
        shared.opts.CLIP_stop_at_last_layers = 2
        assert svc.settings.get("CLIP_stop_at_last_layers") == 2
    finally:
        svc.settings.set("CLIP_stop_at_last_layers", None, save=False)
    assert shared.opts.CLIP_stop_at_last_layers == 1
    assert shared.opts.sd_model_checkpoint == svc.models.current.info.title
    assert shared.opts.grid_format == svc.settings.get("samples_format")
    with pytest.raises(AttributeError):
        shared.opts.no_such_option_anywhere


def test_cmd_opts_has_every_flag(svc: Services) -> None:
    from modules import shared

    assert shared.cmd_opts.port == 7999
    assert shared.cmd_opts.myext_dir == "/some/where"  # a flag an extension's preload added
    assert shared.cmd_opts.data_dir == str(svc.paths.data_dir)
    assert shared.cmd_opts.lora_dir == str(svc.paths.lora_dir)  # A1111's default is a path, not None
    assert shared.cmd_opts.share is False and vars(shared.cmd_opts)["port"] == 7999
    with pytest.raises(AttributeError):
        shared.cmd_opts.not_a_flag


def test_sd_model_and_checkpoints(svc: Services) -> None:
    from modules import sd_models, shared

    info = svc.models.current.info
    m = shared.sd_model
    assert m.sd_checkpoint_info.title == info.title and m.sd_checkpoint_info.filename == str(info.path)
    assert (m.is_sdxl, m.is_sd1, m.is_sd2) == (False, True, False)
    assert m.sd_model_hash == info.shorthash and m.unet is svc.models.current.sd.unet
    assert len(m.sd_checkpoint_info.hash) == 8
    assert info.title in sd_models.checkpoints_list
    assert sd_models.select_checkpoint().title == info.title
    assert sd_models.get_closet_checkpoint_match("tiny").title == info.title
    assert sd_models.model_hash(info.path) == m.sd_checkpoint_info.hash
    with pytest.raises(AttributeError, match="LDM"):
        m.cond_stage_model


def test_state_follows_the_running_job(svc: Services) -> None:
    import threading

    from modules import shared

    assert shared.state.interrupted is False and shared.state.job_count == 1
    started, release, seen = threading.Event(), threading.Event(), {}

    def work(state: Any) -> None:
        started.set()
        release.wait(10)
        seen["interrupted"] = state.interrupted

    job = svc.queue.submit(work, label="compat-test")
    assert started.wait(10)
    assert shared.state.job == "compat-test"
    shared.state.sampling_steps = 7
    shared.state.interrupt()
    release.set()
    job.result(10)
    assert seen["interrupted"] is True


def test_paths_devices_samplers_parser(svc: Services) -> None:
    import torch

    from modules import devices, paths, paths_internal, prompt_parser, sd_samplers, shared

    assert paths.models_path == str(svc.paths.models_dir) == paths_internal.models_path == shared.models_path
    assert paths_internal.data_path == str(svc.paths.data_dir)
    assert paths_internal.extensions_dir == str(svc.paths.data_dir / "extensions")
    assert devices.device == torch.device("cpu") and devices.dtype == torch.float32
    with devices.autocast():
        pass
    devices.torch_gc()
    assert "DPM++ 2M" in sd_samplers.visible_sampler_names() and "Euler a" in sd_samplers.all_samplers_map
    assert sd_samplers.samplers_map["k_euler_a"] == "Euler a"
    assert prompt_parser.get_learned_conditioning_prompt_schedules(["a [b:c:5]"], 10) == [[[5, "a b"], [10, "a c"]]]
    assert prompt_parser.parse_prompt_attention("(x:1.5)") == [["x", 1.5]]


# ---- scripts ----
def test_script_arg_infos_from_ui(svc: Services) -> None:
    import gradio as gr
    from modules import scripts
    from modules.ui_components import InputAccordion

    class MyScript(scripts.Script):
        def title(self) -> str:
            return "My Script"

        def show(self, is_img2img: bool) -> Any:
            return scripts.AlwaysVisible

        def ui(self, is_img2img: bool) -> list[Any]:
            with InputAccordion(False, label="Enable mine", elem_id=self.elem_id("enabled")) as enabled:
                strength = gr.Slider(0.0, 2.0, value=0.7 if is_img2img else 0.5, step=0.05, label="Strength")
                flag = gr.Checkbox(True, label="Flag")
                mode = gr.Dropdown(["a", "b"], value="b", label="Mode")
            return [enabled, strength, flag, mode]

    s = MyScript()
    infos = s.arg_infos(False)
    assert [a.label for a in infos] == ["Enable mine", "Strength", "Flag", "Mode"]
    assert [a.value for a in infos] == [False, 0.5, True, "b"]
    assert (infos[1].minimum, infos[1].maximum, infos[1].step, infos[1].kind) == (0.0, 2.0, 0.05, "slider")
    assert infos[0].kind == infos[2].kind == "checkbox" and infos[3].choices == ["a", "b"]
    assert s.arg_infos(True)[1].value == 0.7
    assert s.arg_infos(False) == infos  # cached
    assert s.elem_id("enabled") == "script_txt2img_my_script_enabled"
    assert s.api_info["args"][1]["label"] == "Strength"

    class Broken(MyScript):
        def ui(self, is_img2img: bool) -> list[Any]:
            gr.Textbox(label="half built")
            raise RuntimeError("ui failed")

    with gr.Blocks() as page:  # the UI may ask while it builds the page: nothing leaks into it
        gr.Textbox(label="page's own")
        assert len(MyScript().arg_infos(True)) == 4
        with pytest.raises(RuntimeError, match="ui failed"):
            Broken().arg_infos(False)
        gr.Textbox(label="after")
    labels = [c.get("props", {}).get("label") for c in page.get_config_file()["components"]]
    assert "page's own" in labels and "after" in labels
    assert "Strength" not in labels and "half built" not in labels


def test_compat_script_runs_on_the_pipeline(svc: Services) -> None:
    import gradio as gr
    from modules import processing, scripts

    calls: dict[str, Any] = {}

    class Tagger(scripts.Script):
        def title(self) -> str:
            return "Tagger"

        def show(self, is_img2img: bool) -> Any:
            return scripts.AlwaysVisible

        def ui(self, is_img2img: bool) -> list[Any]:
            return [gr.Checkbox(True, label="On"), gr.Textbox("blue", label="Word")]

        def process(self, p: Any, on: bool, word: str) -> None:
            calls["process"] = (on, word, isinstance(p, processing.StableDiffusionProcessingTxt2Img))
            p.extra_generation_params["Tagger"] = word

        def postprocess_image(self, p: Any, pp: scripts.PostprocessImageArgs, on: bool, word: str) -> None:
            calls["image"] = pp.image.size

    class Picker(scripts.Script):
        def title(self) -> str:
            return "Picker"

        def ui(self, is_img2img: bool) -> list[Any]:
            return [gr.Slider(1, 4, value=2, step=1, label="Count")]

        def run(self, p: Any, count: int) -> Any:
            p.do_not_save_samples = True
            out = [processing.process_images(p).images[0] for _ in range(int(count))]
            return processing.Processed(p, out, p.seed, "custom info")

    catalog = svc.pipeline.scripts
    tagger, picker = Tagger(), Picker()
    catalog.txt2img.add(tagger)
    catalog.txt2img.add(picker)
    try:
        from webui.services.requests import Txt2ImgRequest
        req = Txt2ImgRequest(prompt="a red circle", steps=2, width=64, height=64, seed=4, sampler_name="Euler",
                             alwayson_scripts={"Tagger": {"args": [True, "green"]}})
        result = svc.submit_txt2img(req, save=False).result(120)
        assert calls["process"] == (True, "green", True) and calls["image"] == (64, 64)
        assert "Tagger: green" in result.infotexts[0]
        req2 = Txt2ImgRequest(prompt="a red circle", steps=2, width=64, height=64, seed=4, sampler_name="Euler",
                              script_name="Picker", script_args=[3])
        result2 = svc.submit_txt2img(req2, save=False).result(120)
        assert isinstance(result2, processing.Processed) and len(result2.images) == 3
        assert result2.infotexts == ["custom info"] * 3
    finally:
        for runner in (catalog.txt2img,):
            for s in (tagger, picker):
                runner.scripts.remove(s)
                (runner.alwayson if s.alwayson else runner.selectable).remove(s)


def test_basedir_while_importing_and_from_the_caller(svc: Services) -> None:
    from modules import scripts

    root = svc.paths.data_dir / "extensions" / "myext"
    binding.set_current_extension("myext", root)
    try:
        assert scripts.basedir() == str(root)
    finally:
        binding.set_current_extension(None, None)
    spec = importlib.util.spec_from_file_location("myext_helper", root / "helper.py")
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    assert Path(helper.where()) == root.resolve()  # no import under way: the calling file's extension
    assert scripts.basedir() == str(Path(__file__).resolve().parent.parent)  # our own caller: the app folder
    assert scripts.scripts_txt2img is svc.pipeline.scripts.txt2img and scripts.scripts_data == []
    binding.add_script_data(scripts.Script, root / "scripts" / "x.py", root, helper)
    try:
        entry = scripts.scripts_data[0]
        assert isinstance(entry, scripts.ScriptClassData) and entry.module is helper and entry.basedir == str(root)
    finally:
        binding.state().scripts_data.clear()


# ---- processing and images ----
def test_processing_classes_generate(svc: Services) -> None:
    from modules import processing

    p, result = generate(svc, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    assert isinstance(result, processing.Processed)
    text = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, position_in_batch=1)
    assert text == result.infotexts[1] and "Seed: 12" in text
    p2 = processing.StableDiffusionProcessingTxt2Img(prompt="x", seed=-1, outpath_samples="/tmp/x")
    processing.fix_seed(p2)
    assert p2.seed != -1 and p2.outpath_samples == "/tmp/x"
    i2i = processing.StableDiffusionProcessingImg2Img(init_images=[result.images[0]], denoising_strength=0.5, steps=2,
                                                      width=64, height=64)
    assert isinstance(i2i, processing.StableDiffusionProcessingImg2Img)
    assert not isinstance(i2i, processing.StableDiffusionProcessingTxt2Img)
    assert isinstance(i2i, processing.StableDiffusionProcessing)
    assert len(processing.process_images(i2i).images) == 1
    with pytest.raises(TypeError, match="unexpected keyword"):
        processing.StableDiffusionProcessingTxt2Img(prompt="x", not_a_field=1)


def test_save_image_with_infotext_and_saved_callbacks(svc: Services, tmp_path: Path) -> None:
    from modules import images, script_callbacks

    seen: dict[str, Any] = {}

    def before(params: script_callbacks.ImageSaveParams) -> None:
        seen["before"] = (params.image.size, params.pnginfo.get("parameters"))

    def after(params: script_callbacks.ImageSaveParams) -> None:
        seen["after"] = params.filename

    script_callbacks.on_before_image_saved(before)
    script_callbacks.on_image_saved(after)
    try:
        img = Image.new("RGB", (32, 16), "red")
        full, txt = images.save_image(img, str(tmp_path), "", 1234, "a prompt", "png", info="a prompt\nSteps: 2")
    finally:
        script_callbacks.remove_callbacks_for_function(before)
        script_callbacks.remove_callbacks_for_function(after)
    assert txt is None and Path(full).parent.parent == tmp_path and Path(full).name == "00000-1234.png"
    assert Image.open(full).info["parameters"] == "a prompt\nSteps: 2"
    assert seen == {"before": ((32, 16), "a prompt\nSteps: 2"), "after": full}
    # A1111's file-name and folder patterns apply to extensions' saves too
    svc.settings.update({"samples_filename_pattern": "[seed]-[prompt_words]", "directories_filename_pattern": "x"})
    try:
        full, _ = images.save_image(img, str(tmp_path), "", 1234, "a prompt, red", "png", info="i")
    finally:
        svc.settings.update({"samples_filename_pattern": None, "directories_filename_pattern": None})
    assert Path(full) == tmp_path / "x" / "00000-1234-a prompt red.png"
    assert images.FilenameGenerator(None, 7, "a cat", img).apply("[seed]_[width]_[nope]") == "7_32_[nope]"
    assert images.sanitize_filename_part("a b:c") == "a_b_c"
    grid = images.image_grid([img] * 4, rows=2)
    assert grid.size == (64, 32)
    assert images.resize_image(1, img, 16, 16).size == (16, 16)


def test_pipeline_saving_fires_before_image_saved(svc: Services) -> None:
    from modules import script_callbacks

    seen: list[tuple[int, int]] = []

    def before(params: script_callbacks.ImageSaveParams) -> None:
        seen.append(params.image.size)

    script_callbacks.on_before_image_saved(before)
    try:
        generate(svc, do_not_save_samples=False)
    finally:
        script_callbacks.remove_callbacks_for_function(before)
    assert seen == [(64, 64)]


def test_cfg_denoiser_callback_changes_the_image(svc: Services) -> None:
    from modules import script_callbacks

    _, base = generate(svc)
    steps: list[tuple[int, int]] = []

    def darken(params: script_callbacks.CFGDenoiserParams) -> None:
        steps.append((params.sampling_step, params.total_sampling_steps))
        params.x = params.x * 0.2

    script_callbacks.on_cfg_denoiser(darken, name="darken")
    entry = binding.callbacks_for("cfg_denoiser")[-1]
    try:
        _, changed = generate(svc)
    finally:
        script_callbacks.remove_callbacks_for_function(darken)
    assert entry.name == "darken" and steps == [(0, 2), (1, 2)]
    assert np.abs(pixels(changed.images[0]) - pixels(base.images[0])).mean() > 1.0
    _, again = generate(svc)
    assert np.array_equal(pixels(again.images[0]), pixels(base.images[0]))  # removed: back to the original


def test_extra_noise_option_and_callback_in_hires_fix(svc: Services) -> None:
    """A1111's img2img_extra_noise: hires fix (and img2img) add noise × the option on top of the
    start latent, say so in the infotext, and on_extra_noise callbacks may replace that noise."""
    from modules import script_callbacks

    hires = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5, hr_second_pass_steps=2)
    _, base = generate(svc, **hires)
    p, noisy = generate(svc, override_settings={"img2img_extra_noise": 0.5}, **hires)
    assert "Extra noise: 0.5" in noisy.infotexts[0] and "Extra noise" not in base.infotexts[0]
    assert np.abs(pixels(noisy.images[0]) - pixels(base.images[0])).mean() > 1.0
    seen: list[tuple[tuple[int, ...], bool]] = []

    def silence(params: script_callbacks.ExtraNoiseParams) -> None:
        # xi = x + the schedule's noise: it differs from x; a zero replacement adds nothing extra
        seen.append((tuple(params.noise.shape), bool((params.xi != params.x).any())))
        params.noise = params.noise * 0

    script_callbacks.on_extra_noise(silence)
    try:
        _, silenced = generate(svc, override_settings={"img2img_extra_noise": 0.5}, **hires)
    finally:
        script_callbacks.remove_callbacks_for_function(silence)
    assert seen == [((1, 4, 12, 12), True)]
    assert "Extra noise: 0.5" in silenced.infotexts[0]
    assert np.abs(pixels(silenced.images[0]) - pixels(base.images[0])).max() <= 1  # nothing extra was added


def test_before_token_counter_sees_and_changes_what_is_counted(svc: Services) -> None:
    from modules import script_callbacks

    from webui.ui.common import token_counter_text

    seen: list[tuple[str, int, list[str], bool]] = []

    def longer(params: script_callbacks.BeforeTokenCounterParams) -> None:
        seen.append((params.prompt, params.steps, params.styles, params.is_positive))
        params.prompt = params.prompt + ", " + ", ".join(["cat"] * 40)

    assert token_counter_text(svc, "a cat", 20, True, ["mine"]) == "2/75"
    script_callbacks.on_before_token_counter(longer)
    try:
        counted = token_counter_text(svc, "a cat", 20, False, ["mine"])
    finally:
        script_callbacks.remove_callbacks_for_function(longer)
    assert seen == [("a cat", 20, ["mine"], False)]
    assert counted == "82/150"  # 2 + 40 × (", " + "cat"): the extension's text was counted


def test_raising_pipeline_callback_is_named_in_the_warnings(svc: Services) -> None:
    from modules import script_callbacks

    def broken(params: Any) -> None:
        raise RuntimeError("kaput")

    binding.set_current_extension("myext", svc.paths.data_dir / "extensions" / "myext")
    try:
        script_callbacks.on_cfg_after_cfg(broken)
    finally:
        binding.set_current_extension(None, None)
    try:
        _, result = generate(svc)
    finally:
        script_callbacks.remove_callbacks_for_function(broken)
    assert any("myext" in w and "kaput" in w for w in result.info["warnings"])


def test_model_loaded_and_image_grid_callbacks(svc: Services) -> None:
    from modules import images, script_callbacks

    loaded: list[Any] = []
    script_callbacks.on_model_loaded(lambda m: loaded.append(m.sd_checkpoint_info.title), name="ml")
    grids: list[tuple[int, int]] = []

    def one_row(params: script_callbacks.ImageGridLoopParams) -> None:
        grids.append((params.cols, params.rows))
        params.cols, params.rows = len(params.imgs), 1

    script_callbacks.on_image_grid(one_row)
    try:
        svc.models.unload()
        svc.models.require()
        grid = images.image_grid([Image.new("RGB", (8, 8))] * 4)
    finally:
        binding.remove_callbacks(lambda e: e.name == "ml")
        script_callbacks.remove_callbacks_for_function(one_row)
    assert loaded == [svc.models.current.info.title]
    assert grids == [(2, 2)] and grid.size == (32, 8)


# ---- app-time callbacks ----
def test_app_callbacks_are_recorded_per_extension_and_isolated(svc: Services) -> None:
    from modules import script_callbacks

    calls: list[str] = []
    binding.set_current_extension("myext", svc.paths.data_dir / "extensions" / "myext")
    try:
        script_callbacks.on_ui_settings(lambda: calls.append("settings"))
        script_callbacks.on_ui_tabs(lambda: [("blocks", "My tab", "my_tab")])
        script_callbacks.on_app_started(lambda demo, app: (_ for _ in ()).throw(RuntimeError("bad start")))
        script_callbacks.on_app_started(lambda demo, app: calls.append(f"started {app}"))
        for on in (script_callbacks.on_before_component, script_callbacks.on_after_component,
                   script_callbacks.on_script_unloaded, script_callbacks.on_before_ui,
                   script_callbacks.on_extra_noise, script_callbacks.on_before_token_counter,
                   script_callbacks.on_ui_train_tabs, script_callbacks.on_infotext_pasted):
            on(lambda *a, **k: None)
    finally:
        binding.set_current_extension(None, None)
    try:
        assert [e.extension for e in binding.callbacks_for("ui_settings")] == ["myext"]
        binding.fire("ui_settings")
        assert script_callbacks.ui_tabs_callback() == [("blocks", "My tab", "my_tab")]
        results = binding.fire("app_started", None, "APP")
        assert len(results) == 1 and calls == ["settings", "started APP"]
        ext = binding.manager().get("myext")
        assert any("bad start" in err and "app_started" in err for err in ext.errors)
        for kind in ("before_component", "after_component", "script_unloaded", "before_ui", "extra_noise",
                     "before_token_counter", "ui_train_tabs"):
            assert binding.callbacks_for(kind), kind
        # registered from this file: remove_current_script_callbacks takes them all
        script_callbacks.remove_current_script_callbacks()
        assert not any(e.script == __file__ for e in binding.state().entries)
        assert not svc.pipeline.callbacks.has("infotext_pasted")
    finally:
        ext = binding.manager().get("myext")
        ext.errors.clear()


def test_infotext_pasted_gets_text_and_params(svc: Services) -> None:
    from modules import script_callbacks

    def add(infotext: str, params: dict[str, Any]) -> None:
        params["Mine"] = infotext.upper()

    script_callbacks.on_infotext_pasted(add)
    try:
        params: dict[str, Any] = {}
        svc.pipeline.callbacks.run("infotext_pasted", binding.InfotextPastedParams("abc", params))
    finally:
        script_callbacks.remove_callbacks_for_function(add)
    assert params == {"Mine": "ABC"}


def test_list_optimizers_says_not_supported(svc: Services) -> None:
    from modules import script_callbacks

    with pytest.raises(NotImplementedError, match="not supported"):
        script_callbacks.on_list_unets(lambda lst: None)


# ---- extra networks ----
def test_extra_network_gets_prompt_tags(svc: Services) -> None:
    from modules import extra_networks, processing

    calls: list[tuple[bool, list[list[str]]]] = []

    class MyNet(extra_networks.ExtraNetwork):
        def activate(self, p: Any, params_list: list[extra_networks.ExtraNetworkParams]) -> None:
            calls.append((isinstance(p, processing.StableDiffusionProcessing), [x.items for x in params_list]))
            if params_list:
                p.extra_generation_params["MyNet"] = params_list[0].items[0]

        def deactivate(self, p: Any) -> None:
            pass

    extra_networks.register_extra_network(MyNet("mynet"))
    try:
        _, result = generate(svc, prompt="a red circle <mynet:foo:0.5>")
        _, plain = generate(svc)
    finally:
        del svc.models.network_kinds["mynet"]
    assert calls == [(True, [["foo", "0.5"]]), (True, [])]
    assert "MyNet: foo" in result.infotexts[0] and "MyNet" not in plain.infotexts[0]
    with pytest.raises(ValueError, match="handled by the app"):
        extra_networks.register_extra_network(MyNet("lora"))


# ---- what is not there ----
def test_ldm_internals_are_not_supported(svc: Services) -> None:
    import modules

    for name in ("modules.sd_hijack", "modules.sd_samplers_kdiffusion", "ldm.modules.attention"):
        with pytest.raises(ImportError, match="not supported"):
            importlib.import_module(name)
    assert "modules.sd_hijack" in modules.UNSUPPORTED
    from modules import sd_samplers
    with pytest.raises(NotImplementedError):
        sd_samplers.all_samplers[0].constructor(None)


def test_other_modules_import(svc: Services) -> None:
    import gradio as gr
    from modules import generation_parameters_copypaste, hashes, infotext_utils, ui_components

    parsed = infotext_utils.parse_generation_parameters("cat\nNegative prompt: dog\nSteps: 5, Seed: 3, Size: 64x32")
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Steps"], parsed["Size-1"]) == ("cat", "dog", "5", "64")
    assert generation_parameters_copypaste.parse_generation_parameters is infotext_utils.parse_generation_parameters
    with gr.Blocks() as demo:
        with ui_components.FormRow():
            button = ui_components.ToolButton("🔄")
        with ui_components.ResizeHandleRow(), ui_components.FormGroup():
            gr.Textbox()
    infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(button, "txt2img"))
    assert generation_parameters_copypaste.registered_param_bindings[-1].paste_button is button
    types = {c["type"] for c in demo.get_config_file()["components"]}
    assert {"button", "row", "group", "textbox"} <= types
    assert "tool" in button.elem_classes
    assert infotext_utils.create_override_settings_dict(["Clip skip: 2", "Nothing: 1"]) == {"CLIP_stop_at_last_layers": 2}
    ckpt = svc.models.current.info
    assert hashes.sha256(ckpt.path, "checkpoint/tiny") == hashes.calculate_sha256(ckpt.path) == ckpt.sha256


def test_launch_helpers_in_an_install_subprocess(tmp_path: Path) -> None:
    script = tmp_path / "install.py"
    script.write_text(
        "import launch\n"
        "assert launch.is_installed('pip') and not launch.is_installed('surely_not_installed_pkg_x')\n"
        "assert launch.python and launch.git and isinstance(launch.commit_hash(), str)\n"
        "assert launch.run('echo hello').strip() == 'hello'\n"
        "try:\n"
        "    launch.run('exit 3', errdesc='failing on purpose')\n"
        "except RuntimeError as e:\n"
        "    assert 'failing on purpose' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "print('ok', launch.args.skip_install)\n")
    env = dict(os.environ, PYTHONPATH=str(COMPAT_DIR), COMMANDLINE_ARGS="--skip-install")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok True")
