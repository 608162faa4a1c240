"""The txt2img tab: A1111's layout over `Services.submit_txt2img` and the shared job queue.

Generation runs in our own `JobQueue` (UI and API jobs in arrival order); the Gradio event only
submits the job and then polls its `JobState`, so the event itself is not serialized by Gradio
(`concurrency_limit=None`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import gradio as gr

from webui.ui.common import (AUTOMATIC, DEFAULT_SAMPLER, sampler_names, schedule_label_to_name, schedule_labels,
                             token_counter_html, token_counter_text, upscaler_names)
from webui.ui.controlnet import create_controlnet_accordion
from webui.ui.extra_networks import create_extra_networks
from webui.ui.gallery_buttons import connect_file_buttons, create_gallery_buttons
from webui.ui.job_follow import create_task_state, fail as fail_message, follow, page_job, result_outputs
from webui.ui.gallery_values import (as_float, as_int, infotext_for_index, infotext_html, scaled_size,
                                     seed_for_index)
from webui.ui.page_caller import page_caller
from webui.ui.page_habits import interrupt_clicked
from webui.ui.params_file import load_params, save_params
from webui.ui.paste import parse_for_paste, parse_override_entries, paste_values, script_field_updates

if TYPE_CHECKING:
    from webui.services.container import Services

PROMPT_PLACEHOLDER = "Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"
NEG_PLACEHOLDER = "Negative prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)"


@dataclass
class Txt2ImgTab:
    prompt: gr.Textbox
    neg_prompt: gr.Textbox
    token_counter: gr.HTML
    neg_token_counter: gr.HTML
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    batch_count: gr.Slider
    batch_size: gr.Slider
    cfg_scale: gr.Slider
    seed: gr.Number
    random_seed: gr.Button
    reuse_seed: gr.Button
    extra: gr.Checkbox
    subseed: gr.Number
    subseed_strength: gr.Slider
    seed_resize_w: gr.Slider
    seed_resize_h: gr.Slider
    enable_hr: gr.Checkbox
    hr_upscaler: gr.Dropdown
    hr_steps: gr.Slider
    denoising: gr.Slider
    hr_scale: gr.Slider
    hr_resize_x: gr.Slider
    hr_resize_y: gr.Slider
    gallery: gr.Gallery
    status: gr.Textbox
    info: gr.HTML
    gen_info: gr.State
    selected: gr.State
    generate_event: Any = None
    styles: Any = None  # gr.Dropdown (multiselect)
    img2img: Any = None  # webui.ui.img2img.Img2ImgInputs on the img2img tab
    override: Any = None  # "Override settings" multiselect (entries like "Clip skip: 2")
    script_infotext_fields: list = field(default_factory=list)  # scripts' (component, infotext key)
    buttons: Any = None  # webui.ui.gallery_buttons.GalleryButtons (📂 💾 🗜️ and Send to)
    task_state: Any = None  # gr.BrowserState: the task id of the tab's newest job (restore after reload)

    # request field → component, for "Send to txt2img/img2img" from PNG Info
    def paste_fields(self) -> dict[str, Any]:
        if self.img2img is not None:
            i = self.img2img
            return {**self._common_fields(), "denoising_strength": i.denoising, "mask_blur": i.mask_blur,
                    "inpainting_mask_invert": i.mask_invert, "inpainting_fill": i.fill,
                    "inpaint_full_res": i.full_res, "inpaint_full_res_padding": i.padding}
        return self._common_fields()

    def _common_fields(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt, "negative_prompt": self.neg_prompt, "steps": self.steps,
            "sampler_name": self.sampler, "scheduler": self.scheduler, "cfg_scale": self.cfg_scale,
            "seed": self.seed, "width": self.width, "height": self.height, "batch_size": self.batch_size,
            "subseed": self.subseed, "subseed_strength": self.subseed_strength,
            "seed_resize_from_w": self.seed_resize_w, "seed_resize_from_h": self.seed_resize_h,
            "enable_hr": self.enable_hr, "hr_upscaler": self.hr_upscaler, "hr_second_pass_steps": self.hr_steps,
            "denoising_strength": self.denoising, "hr_scale": self.hr_scale,
            "hr_resize_x": self.hr_resize_x, "hr_resize_y": self.hr_resize_y,
            **({"styles": self.styles} if self.styles is not None else {}),  # infotext_styles on paste
        }


def create_txt2img_tab(svc: "Services", size: int | None = None) -> Txt2ImgTab:
    return create_generation_tab(svc, "txt2img", size)


def create_img2img_tab(svc: "Services", size: int | None = None) -> Txt2ImgTab:
    return create_generation_tab(svc, "img2img", size)


def initial_size(svc: "Services") -> int:
    """Width/Height the page starts with: the loaded model's native size, or, before it loads, the
    default checkpoint's `modelspec.resolution` read from its header — so a Generate clicked the
    moment the page opens already asks for the model's size (the load-time sync came too late)."""
    cur = svc.models.current
    if cur is not None and isinstance(getattr(cur.sd, "default_size", None), int):
        return int(cur.sd.default_size)
    info = svc.models.default_checkpoint()
    if info is not None and not info.is_folder and info.path.suffix.lower() == ".safetensors":
        from webui.models.detect import resolution_from_metadata
        from webui.models.file_io import ModelFileError, read_safetensors_header
        try:
            size = resolution_from_metadata(read_safetensors_header(info.path)[1])
        except (ModelFileError, OSError):
            size = None
        if size and 64 <= size <= 2048 and size % 8 == 0:
            return size
    return 512


def create_generation_tab(svc: "Services", mode: str, size: int | None = None) -> Txt2ImgTab:
    """Build a txt2img or img2img tab (call inside a `gr.Tab`) and wire its events. Both share this
    layout and job handling; img2img adds its input sub-tabs, inpaint options and scripts."""
    from webui.ui.img2img import InputError, create_img2img_inputs
    from webui.ui.script_controls import create_script_controls
    is_i2i = mode == "img2img"
    i2i = None
    start = size or initial_size(svc)  # Width/Height's first value
    hidden_samplers = set(svc.settings.get("hide_samplers") or ())  # A1111's hide_samplers (Reload UI)
    samplers = [s for s in sampler_names() if s not in hidden_samplers] or sampler_names()
    schedules = schedule_labels()
    upscalers = upscaler_names(svc)

    with gr.Row(elem_id=f"{mode}_toprow", equal_height=False):
        with gr.Column(scale=6, elem_id=f"{mode}_prompt_container"):
            with gr.Column(elem_classes="prompt-box"):
                prompt = gr.Textbox(label="Prompt", show_label=False, lines=3, max_lines=20,
                                    placeholder=PROMPT_PLACEHOLDER, elem_id=f"{mode}_prompt")
                counters_on = not svc.settings.get("disable_token_counters")  # A1111's option (Reload UI)
                token_counter = gr.HTML(token_counter_html("0/75"), elem_id=f"{mode}_token_counter",
                                        elem_classes="token-counter", padding=False, visible=counters_on)
            with gr.Column(elem_classes="prompt-box"):
                neg_prompt = gr.Textbox(label="Negative prompt", show_label=False, lines=3, max_lines=20,
                                        placeholder=NEG_PLACEHOLDER, elem_id=f"{mode}_neg_prompt")
                neg_token_counter = gr.HTML(token_counter_html("0/75"), elem_id=f"{mode}_negative_token_counter",
                                            elem_classes="token-counter", padding=False, visible=counters_on)
        with gr.Column(scale=1, min_width=240, elem_id=f"{mode}_actions_column"):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{mode}_generate", size="lg")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{mode}_interrupt", size="sm", min_width=80)
                skip = gr.Button("Skip", elem_id=f"{mode}_skip", size="sm", min_width=80)
            with gr.Row(elem_id=f"{mode}_styles_row", equal_height=True):
                styles = gr.Dropdown(sorted(svc.styles.styles), value=[], multiselect=True, label="Styles",
                                     elem_id=f"{mode}_styles", scale=4, min_width=120)
                paste = gr.Button("↙️", elem_id=f"{mode}_paste", size="sm", scale=0, min_width=44)
                style_apply = gr.Button("📋", elem_id=f"{mode}_style_apply", size="sm", scale=0, min_width=44)
            with gr.Accordion("Edit styles", open=False, elem_id=f"{mode}_styles_edit"):
                style_name = gr.Textbox(label="Style name", elem_id=f"{mode}_style_name", lines=1, max_lines=1)
                with gr.Row():
                    style_save = gr.Button("Save prompts as style", elem_id=f"{mode}_style_save", size="sm")
                    style_delete = gr.Button("Delete style", elem_id=f"{mode}_style_delete", size="sm")

    with gr.Row(elem_id=f"{mode}_main", equal_height=False):
        with gr.Column(scale=1, elem_id=f"{mode}_settings"):
            if is_i2i:
                i2i = create_img2img_inputs(svc)
            with gr.Row():
                sampler = gr.Dropdown(samplers, value=DEFAULT_SAMPLER if DEFAULT_SAMPLER in samplers else samplers[0],
                                      label="Sampling method", elem_id=f"{mode}_sampling", min_width=160)
                scheduler = gr.Dropdown(schedules, value=AUTOMATIC, label="Schedule type",
                                        elem_id=f"{mode}_scheduler", min_width=160)
            steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{mode}_steps")
            with gr.Row():
                with gr.Column(scale=3):
                    if is_i2i:
                        assert i2i is not None
                        with gr.Tabs(elem_id="img2img_dimensions_tabs"):
                            with gr.Tab("Resize to", id="img2img_tab_resize_to") as resize_to_tab:
                                width = gr.Slider(64, 2048, value=start, step=8, label="Width",
                                                  elem_id=f"{mode}_width")
                                height = gr.Slider(64, 2048, value=start, step=8, label="Height",
                                                   elem_id=f"{mode}_height")
                            with gr.Tab("Resize by", id="img2img_tab_resize_by") as resize_by_tab:
                                i2i.scale_by = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale",
                                                         elem_id="img2img_scale")
                                scale_note = gr.Markdown("", elem_id="img2img_scale_resolution_preview")
                        i2i.resize_tab = gr.State("to")
                    else:
                        width = gr.Slider(64, 2048, value=start, step=8, label="Width", elem_id=f"{mode}_width")
                        height = gr.Slider(64, 2048, value=start, step=8, label="Height", elem_id=f"{mode}_height")
                with gr.Column(scale=1, min_width=140):
                    batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count",
                                            elem_id=f"{mode}_batch_count")
                    batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{mode}_batch_size")
            cfg_scale = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{mode}_cfg_scale")
            if is_i2i:
                assert i2i is not None
                i2i.denoising = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                          elem_id="img2img_denoising_strength")
            with gr.Row(elem_id=f"{mode}_seed_row", equal_height=True):
                seed = gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{mode}_seed", scale=4, min_width=120)
                random_seed = gr.Button("🎲", elem_id=f"{mode}_random_seed", size="sm", scale=0, min_width=44)
                reuse_seed = gr.Button("♻️", elem_id=f"{mode}_reuse_seed", size="sm", scale=0, min_width=44)
                extra = gr.Checkbox(label="Extra", value=False, elem_id=f"{mode}_subseed_show", scale=1,
                                    min_width=80)
            with gr.Group(visible=False, elem_id=f"{mode}_seed_extras") as extra_group:
                with gr.Row():
                    subseed = gr.Number(label="Variation seed", value=-1, precision=0, elem_id=f"{mode}_subseed")
                    subseed_strength = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Variation strength",
                                                 elem_id=f"{mode}_subseed_strength")
                with gr.Row():
                    seed_resize_w = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                              elem_id=f"{mode}_seed_resize_from_w")
                    seed_resize_h = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                              elem_id=f"{mode}_seed_resize_from_h")
            enable_hr = gr.Checkbox(label="Hires. fix", value=False, elem_id=f"{mode}_hr", visible=not is_i2i)
            with gr.Group(visible=False, elem_id=f"{mode}_hires_fix") as hr_group:
                with gr.Row():
                    hr_upscaler = gr.Dropdown(upscalers, value="Latent", label="Upscaler",
                                              elem_id=f"{mode}_hr_upscaler")
                    hr_steps = gr.Slider(0, 150, value=0, step=1, label="Hires steps",
                                         elem_id=f"{mode}_hires_steps")
                    denoising = gr.Slider(0.0, 1.0, value=0.7, step=0.01, label="Denoising strength",
                                          elem_id=f"{mode}_denoising_strength")
                with gr.Row():
                    hr_scale = gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by",
                                         elem_id=f"{mode}_hr_scale")
                    hr_resize_x = gr.Slider(0, 2048, value=0, step=8, label="Resize width to",
                                            elem_id=f"{mode}_hr_resize_x")
                    hr_resize_y = gr.Slider(0, 2048, value=0, step=8, label="Resize height to",
                                            elem_id=f"{mode}_hr_resize_y")
            # A1111's "Override settings": filled when pasting an infotext that names settings
            override = gr.Dropdown([], value=[], multiselect=True, label="Override settings", visible=False,
                                   elem_id=f"{mode}_override_settings")

            cn_units = create_controlnet_accordion(svc, mode)
            scripts_ui = create_script_controls(svc, mode)
            if i2i is not None:
                i2i.script = scripts_ui.dropdown  # its controls are in scripts_ui.components()
            create_extra_networks(svc, mode, prompt, neg_prompt)

        with gr.Column(scale=1, elem_id=f"{mode}_results"):
            gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{mode}_gallery", format="png",
                                 columns=4, height=512, object_fit="contain", preview=True, interactive=False)
            buttons = create_gallery_buttons(svc, mode)
            status = gr.Textbox(label="Status", value="", interactive=False, lines=1, max_lines=3,
                                elem_id=f"{mode}_status")
            info = gr.HTML("", elem_id=f"{mode}_info", elem_classes="infotext-box")
            gen_info = gr.State(None)
            selected = gr.State(0)
            task_state = create_task_state(mode)

    tab = Txt2ImgTab(prompt, neg_prompt, token_counter, neg_token_counter, generate, interrupt, skip, sampler,
                     scheduler, steps, width, height, batch_count, batch_size, cfg_scale, seed, random_seed,
                     reuse_seed, extra, subseed, subseed_strength, seed_resize_w, seed_resize_h, enable_hr,
                     hr_upscaler, hr_steps, denoising, hr_scale, hr_resize_x, hr_resize_y, gallery, status, info,
                     gen_info, selected)
    tab.styles = styles
    tab.task_state = task_state
    tab.script_infotext_fields = scripts_ui.infotext_fields
    tab.img2img = i2i
    tab.override = override
    tab.buttons = buttons
    connect_file_buttons(svc, mode, buttons, gallery, gen_info, selected)
    if is_i2i:
        assert i2i is not None
        resize_to_tab.select(lambda: "to", None, i2i.resize_tab, show_progress="hidden", api_visibility="private",
                             queue=False)
        resize_by_tab.select(lambda: "by", None, i2i.resize_tab, show_progress="hidden", api_visibility="private",
                             queue=False)

        def scale_preview(scale: float, *images: Any) -> str:
            from webui.imaging.decode import ImageInputError
            from webui.ui.img2img import _as_image
            for v in images:
                try:
                    img = _as_image(v)
                except ImageInputError as e:
                    return f"Resize: {e}"
                if img is not None:
                    w, h = scaled_size(img.size, float(scale))
                    return f"Resize: from {img.width}x{img.height} to {w}x{h}"
            return "Resize: no image selected"

        preview_inputs = [i2i.scale_by, i2i.init_img, i2i.sketch, i2i.inpaint, i2i.inpaint_sketch, i2i.upload_img]
        for c in (i2i.scale_by, i2i.init_img, i2i.upload_img):
            c.change(scale_preview, preview_inputs, scale_note, show_progress="hidden", api_visibility="private")

    # ---------------------------------------------------------------- events
    def counter_for(is_positive: bool) -> Any:
        def count(text: str | None, n_steps: float | None, chosen: list[str] | None) -> str:
            try:
                return token_counter_html(token_counter_text(svc, text, as_int(n_steps, 20), is_positive,
                                                             list(chosen or [])))
            except Exception as e:  # a counter must never break typing
                return token_counter_html(f"?/75 ({type(e).__name__})")
        return count

    for box, counter, positive in ((prompt, token_counter, True), (neg_prompt, neg_token_counter, False)):
        if not counters_on:
            break
        # the enabled styles count too (include_styles_into_token_counters): choosing one recounts
        for trigger in (box.change, styles.change):
            trigger(counter_for(positive), [box, steps, styles], counter, show_progress="hidden",
                    trigger_mode="always_last", api_visibility="private")

    extra.change(lambda v: gr.update(visible=bool(v)), extra, extra_group, show_progress="hidden",
                 api_visibility="private", queue=False)
    enable_hr.change(lambda v: gr.update(visible=bool(v)), enable_hr, hr_group, show_progress="hidden",
                     api_visibility="private", queue=False)
    random_seed.click(lambda: -1, None, seed, show_progress="hidden", api_visibility="private", queue=False)

    def reuse(info: dict | None, index: int | None) -> Any:
        s = seed_for_index(info, index)
        if s is None:
            gr.Info("No generation yet: nothing to reuse.")
            return gr.update()
        return s

    reuse_seed.click(reuse, [gen_info, selected], seed, show_progress="hidden", api_visibility="private")

    def on_select(info: dict | None, evt: gr.SelectData) -> tuple[int, str]:
        index = int(evt.index) if isinstance(evt.index, int) else 0
        return index, infotext_html(infotext_for_index(info, index), (info or {}).get("warnings"))

    gallery.select(on_select, gen_info, [selected, info], show_progress="hidden", api_visibility="private")

    # queued, so its note can show (gr.Info needs the queue); every click counts (the second stops at once).
    # With accounts, someone who is no admin stops only this page's own job (its task id)
    def on_interrupt(task_id: str | None, request: gr.Request) -> None:
        interrupt_clicked(svc, page_caller(svc, request), task_id)

    def on_skip(task_id: str | None, request: gr.Request) -> None:
        job = page_job(svc, page_caller(svc, request), task_id)
        if job is not None:
            job.state.skip()

    interrupt.click(on_interrupt, task_state, None, show_progress="hidden", trigger_mode="multiple",
                    api_visibility="private")
    skip.click(on_skip, task_state, None, show_progress="hidden", queue=False, api_visibility="private")

    def style_choices(selected: list[str] | None = None) -> Any:
        svc.styles.reload()
        names = sorted(svc.styles.styles)
        return gr.update(choices=names, value=[n for n in selected or [] if n in names])

    def apply_styles(p: str, n: str, chosen: list[str] | None) -> tuple[str, str, Any]:
        """📋: write the selected styles into the prompt boxes and clear the selection (A1111)."""
        chosen = chosen or []
        return (svc.styles.apply_styles_to_prompt(p or "", chosen),
                svc.styles.apply_negative_styles_to_prompt(n or "", chosen), gr.update(value=[]))

    def save_style(name: str, p: str, n: str, chosen: list[str] | None) -> tuple[Any, str]:
        try:
            svc.save_style(name, p, n)
        except (ValueError, OSError) as e:
            gr.Warning(str(e), title="Style not saved")
            return style_choices(chosen), f"Style not saved: {e}"
        # as A1111: the new style joins the choices; the selection stays what the user picked
        return style_choices(chosen), f"Saved style {name.strip()!r} to {svc.styles.path.name}"

    def delete_style(name: str, chosen: list[str] | None) -> tuple[Any, str]:
        try:
            svc.delete_style((name or "").strip())
        except (ValueError, OSError) as e:
            gr.Warning(str(e), title="Style not deleted")
            return style_choices(chosen), f"Style not deleted: {e}"
        return style_choices(chosen), f"Deleted style {name.strip()!r}"

    style_apply.click(apply_styles, [prompt, neg_prompt, styles], [prompt, neg_prompt, styles],
                      show_progress="hidden", api_visibility="private")
    style_save.click(save_style, [style_name, prompt, neg_prompt, styles], [styles, status],
                     show_progress="hidden", api_visibility="private")
    style_delete.click(delete_style, [style_name, styles], [styles, status], show_progress="hidden",
                       api_visibility="private")
    styles.focus(style_choices, styles, styles, show_progress="hidden", api_visibility="private")

    inputs = {*(i2i.components() if i2i is not None else ()), *scripts_ui.components(), *[c for u in cn_units for c in u.components()], styles, prompt, neg_prompt, sampler, scheduler, steps, width, height, batch_count, batch_size, cfg_scale,
              seed, extra, subseed, subseed_strength, seed_resize_w, seed_resize_h, enable_hr, hr_upscaler,
              hr_steps, denoising, hr_scale, hr_resize_x, hr_resize_y, override}

    def build_request(d: dict) -> Any:
        from webui.services.requests import Img2ImgRequest, Txt2ImgRequest
        extras = bool(d[extra])
        hires = bool(d[enable_hr]) and not is_i2i
        fields: dict[str, Any] = {}
        fields.update(scripts_ui.fields(d))
        if i2i is not None:
            if _is_batch(d, i2i):
                fields["init_images"] = []
            else:
                fields.update(i2i.request_fields(d))
            if d[i2i.resize_tab] == "by" and fields.get("init_images"):
                w, h = scaled_size(fields["init_images"][0].size, as_float(d[i2i.scale_by], 1.0))
                d = dict(d)
                d[width], d[height] = w, h
        overrides = parse_override_entries(d[override])
        if overrides:
            fields["override_settings"] = overrides
        cls = Img2ImgRequest if is_i2i else Txt2ImgRequest
        script_alwayson = fields.pop("alwayson_scripts", {})
        return cls(**fields,
            prompt=d[prompt] or "", negative_prompt=d[neg_prompt] or "", styles=list(d[styles] or []),
            alwayson_scripts={**script_alwayson,
                              "controlnet": {"args": [u for u in (c.to_unit(d) for c in cn_units) if u]}},
            sampler_name=d[sampler] or DEFAULT_SAMPLER, scheduler=schedule_label_to_name(d[scheduler]),
            steps=as_int(d[steps], 20), width=as_int(d[width], 512), height=as_int(d[height], 512),
            n_iter=as_int(d[batch_count], 1), batch_size=as_int(d[batch_size], 1), cfg_scale=as_float(d[cfg_scale], 7.0),
            seed=as_int(d[seed], -1),
            subseed=as_int(d[subseed], -1) if extras else -1,
            subseed_strength=as_float(d[subseed_strength], 0.0) if extras else 0.0,
            seed_resize_from_w=as_int(d[seed_resize_w], 0) if extras and as_int(d[seed_resize_w], 0) > 0 else -1,
            seed_resize_from_h=as_int(d[seed_resize_h], 0) if extras and as_int(d[seed_resize_h], 0) > 0 else -1,
            enable_hr=hires, hr_upscaler=d[hr_upscaler] or "Latent", hr_second_pass_steps=as_int(d[hr_steps], 0),
            **({} if is_i2i else {"denoising_strength": as_float(d[denoising], 0.7) if hires else None}),
            hr_scale=as_float(d[hr_scale], 2.0),
            hr_resize_x=as_int(d[hr_resize_x], 0), hr_resize_y=as_int(d[hr_resize_y], 0),
        )

    def fail(message: str) -> dict:
        return fail_message(tab, message)

    def run_generate(d: dict, request: gr.Request, progress: gr.Progress = gr.Progress()) -> Iterator[dict]:
        from pydantic import ValidationError

        from webui.services.container import GenerationError
        from webui.services.jobs import TaskIdError
        caller = page_caller(svc, request)
        try:
            req = build_request(d)
            if i2i is not None and _is_batch(d, i2i):
                job = svc.submit_img2img_batch(req, d[i2i.batch_input] or "", d[i2i.batch_output] or "",
                                               d[i2i.batch_mask] or "", owner=caller.owner)
            elif is_i2i:
                job = svc.submit_img2img(req, save=True, owner=caller.owner)
            else:
                job = svc.submit_txt2img(req, save=True, owner=caller.owner)
        except InputError as e:
            gr.Warning(str(e), title="Nothing to generate from")
            yield {status: f"Error: {e}"}
            return
        except (GenerationError, ValidationError, TaskIdError, ValueError) as e:
            yield fail(str(e))
            return
        yield {status: "Starting…", task_state: job.task_id}  # the page keeps the id: a reload reattaches
        yield from follow(svc, job, tab, progress)
        result = job.result() if job.future.done() and not job.future.cancelled() \
            and job.future.exception() is None else None
        if result is not None and result.infotexts:  # A1111's params.txt: what ↙️ pastes when the prompt box is empty
            save_params(svc.paths.data_dir, caller, result.infotexts[0])
        yield result_outputs(svc, job, tab)

    paste_targets = list(dict.fromkeys([*tab.paste_fields().values(), extra, enable_hr, override,
                                        *[c for c, _ in scripts_ui.infotext_fields]]))

    def paste_params(text: str | None, request: gr.Request) -> dict:
        """↙️: the prompt box's text read as infotext into every field, or the last generation's
        parameters (params.txt) when the box is empty (A1111)."""
        from webui.infotext import infotext_to_request
        src = (text or "").strip()
        if not src:
            src = load_params(svc.paths.data_dir, page_caller(svc, request))
        if not src:
            gr.Info("Nothing to paste: the prompt box is empty and nothing was generated yet.")
            return {c: gr.update() for c in paste_targets}
        params = parse_for_paste(svc, src)
        req = infotext_to_request(params, svc.options())
        return ({c: gr.update() for c in paste_targets} | paste_values(tab, req)
                | script_field_updates(scripts_ui.infotext_fields, params))

    paste.click(paste_params, prompt, paste_targets, show_progress="hidden", api_visibility="private")

    tab.generate_event = generate.click(run_generate, inputs, [gallery, info, status, gen_info, selected, task_state],
                   show_progress_on=[status], concurrency_limit=None, api_name=mode,
                   api_visibility="undocumented")
    return tab


def _is_batch(d: dict, i2i: Any) -> bool:
    """img2img's Batch sub-tab is selected: a folder job instead of one request."""
    from webui.ui.img2img import MODES
    return MODES[int(d[i2i.mode] or 0)] == "Batch"
