"""The Extras tab (A1111's layout): Single Image | Batch Process | Batch from Directory, then the
Upscale section: Scale by | Scale to, Upscaler 1, Upscaler 2 and its visibility, then face
restoration: GFPGAN visibility, CodeFormer visibility and weight. Under the result, A1111's row:
📂 and Send to img2img / inpaint / extras (no 💾 / 🗜️: the result is saved already)."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.common import md_escape
from webui.ui.page_caller import page_owner
from webui.ui.gallery_buttons import GalleryButtons, connect_file_buttons, create_gallery_buttons

if TYPE_CHECKING:
    from webui.services.container import Services
    from webui.services.extras import ExtrasService

EXTRAS_MODES = ("Single Image", "Batch Process", "Batch from Directory")


@dataclass
class ExtrasTab:
    image: gr.Image          # the single-image input ("Send to extras" fills it)
    gallery: gr.Gallery
    html_info: gr.HTML
    generate: gr.Button
    upscaler_1: gr.Dropdown
    upscaler_2: gr.Dropdown
    buttons: GalleryButtons  # 📂 and Send to (main.py wires Send to once every tab exists)
    gen_info: gr.State       # {"infotexts": each result's parameters text, "saved_files": [...]}
    selected: gr.State       # the selected result's index


def upscaler_status_md(ex: "ExtrasService", check: bool = False) -> str:
    """Unusable upscaler files with their reasons (read only when `check`; else what is known)."""
    entries = ex.upscalers.list() if check else ex.upscalers.list(check=False, refresh=False)
    bad = [e for e in entries if e.error]
    models = [e for e in entries if e.is_model and not e.error]
    lines = []
    if models:
        n = len(models)
        lines.append(f"{n} model upscaler{'s' if n != 1 else ''}" +
                     (" usable." if check else " found (🔄 rescans the folders and checks each file)."))
    else:
        lines.append("No model upscalers: put ESRGAN / Real-ESRGAN / SwinIR / DAT / HAT files (.pth, .safetensors) "
                     f"into `{md_escape(ex.upscalers.folders.get('ESRGAN', 'models/ESRGAN'))}` or the folders beside "
                     "it and press 🔄.")
    if bad:
        lines.append("Unusable: " + "; ".join(f"`{md_escape(e.path.name if e.path else e.name)}`: {md_escape(e.error)}"
                                              for e in bad))
    return "  \n".join(lines)


def face_status_md(ex: "ExtrasService", check: bool = False) -> str:
    """The file each face restorer uses (checked only when `check`), or the folder to fill."""
    lines = []
    for name in ex.faces.names():
        files = ex.faces.files(name, check=check)
        good = [f for f in files if not f.error]
        if good:
            lines.append(f"{name}: `{md_escape(good[0].path.name)}`" + ("" if check else " (checked at first use)"))
        else:
            lines.append(f"{name}: no usable model file in `{md_escape(ex.faces.folders[name])}`" if files else
                         md_escape(ex.faces.missing_reason(name)))
        bad = [f for f in files if f.error]
        if bad:
            lines.append("Unusable: " + "; ".join(f"`{md_escape(f.path.name)}`: {md_escape(f.error)}" for f in bad))
    return "  \n".join(lines)


def _choices(ex: "ExtrasService") -> list[str]:
    return ex.upscalers.names()


def create_extras_tab(svc: "Services") -> ExtrasTab:
    from webui.imaging.decode import ImageInputError
    from webui.imaging.upscalers import UpscalerError
    from webui.services.extras import ExtrasError, ExtrasParams

    ex = svc.extras
    names = _choices(ex)
    extras_mode = gr.State(0)
    resize_mode = gr.State(0)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab(EXTRAS_MODES[0], id="single_image", elem_id="extras_single_tab") as tab_single:
                    image = gr.Image(label="Source", type="pil", image_mode=None, sources=["upload", "clipboard"],
                                     elem_id="extras_image", height=360)
                with gr.Tab(EXTRAS_MODES[1], id="batch_process", elem_id="extras_batch_process_tab") as tab_batch:
                    files = gr.File(label="Batch Process", file_count="multiple", type="filepath",
                                    elem_id="extras_image_batch")
                with gr.Tab(EXTRAS_MODES[2], id="batch_from_directory",
                            elem_id="extras_batch_directory_tab") as tab_dir:
                    input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir",
                                           placeholder="A directory on the same machine where the server is running.")
                    output_dir = gr.Textbox(label="Output directory", elem_id="extras_batch_output_dir",
                                            placeholder="Leave blank to save images to the default path.")
                    show_results = gr.Checkbox(label="Show result images", value=True,
                                               elem_id="extras_show_extras_results")
            generate = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            with gr.Group(elem_id="extras_upscale"):
                with gr.Tabs(elem_id="extras_resize_mode"):
                    with gr.Tab("Scale by", id="scale_by", elem_id="extras_scale_by_tab") as tab_scale_by:
                        with gr.Row():
                            resize = gr.Slider(1.0, 8.0, value=4, step=0.05, label="Resize", scale=4,
                                               elem_id="extras_upscaling_resize")
                            max_side = gr.Number(label="Max side length", value=0, precision=0, minimum=0, step=8,
                                                 scale=1, min_width=160, elem_id="extras_upscale_max_side_length",
                                                 info="0 = no limit")
                    with gr.Tab("Scale to", id="scale_to", elem_id="extras_scale_to_tab") as tab_scale_to:
                        with gr.Row():
                            with gr.Column(scale=4):
                                width = gr.Slider(64, 8192, value=512, step=8, label="Width",
                                                  elem_id="extras_upscaling_resize_w")
                                height = gr.Slider(64, 8192, value=512, step=8, label="Height",
                                                   elem_id="extras_upscaling_resize_h")
                            with gr.Column(scale=1, min_width=120):
                                switch = gr.Button("⇅", size="sm", elem_id="upscaling_res_switch_btn")
                                crop = gr.Checkbox(label="Crop to fit", value=True, elem_id="extras_upscaling_crop")
                with gr.Row(equal_height=True):
                    upscaler_1 = gr.Dropdown(names, value="None", label="Upscaler 1", elem_id="extras_upscaler_1",
                                             scale=1)
                    refresh = gr.Button("🔄", size="sm", scale=0, min_width=44, elem_id="extras_refresh_upscalers")
                with gr.Row(equal_height=True):
                    upscaler_2 = gr.Dropdown(names, value="None", label="Upscaler 2", elem_id="extras_upscaler_2")
                    visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                           elem_id="extras_upscaler_2_visibility")
                status = gr.Markdown(upscaler_status_md(ex), elem_id="extras_upscaler_status", padding=True)
            with gr.Group(elem_id="extras_face_restoration"):
                gfpgan_visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility",
                                              elem_id="extras_gfpgan_visibility")
                with gr.Row():
                    codeformer_visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility",
                                                      elem_id="extras_codeformer_visibility")
                    codeformer_weight = gr.Slider(0.0, 1.0, value=0.0, step=0.001,
                                                  label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)",
                                                  elem_id="extras_codeformer_weight")
                face_status = gr.Markdown(face_status_md(ex), elem_id="extras_face_restorer_status", padding=True)
        with gr.Column(scale=1):
            # preview mode fits the picture in the box; a lone grid cell grew past the box and was cut off
            gallery = gr.Gallery(label="Result", show_label=False, elem_id="extras_gallery", format="png",
                                 columns=4, height=480, object_fit="contain", preview=True, interactive=False)
            buttons = create_gallery_buttons(svc, "extras", save_buttons=False)
            gen_info = gr.State(None)
            selected = gr.State(0)
            html_info = gr.HTML("", elem_id="extras_html_info")

    for i, tab in enumerate((tab_single, tab_batch, tab_dir)):
        tab.select(lambda i=i: i, None, extras_mode, show_progress="hidden", api_visibility="private")
    tab_scale_by.select(lambda: 0, None, resize_mode, show_progress="hidden", api_visibility="private")
    tab_scale_to.select(lambda: 1, None, resize_mode, show_progress="hidden", api_visibility="private")
    switch.click(lambda w, h: (h, w), [width, height], [width, height], show_progress="hidden",
                 api_visibility="private")

    def do_refresh(u1: str | None, u2: str | None) -> tuple[Any, Any, str, str]:
        md = upscaler_status_md(ex, check=True)
        choices = _choices(ex)
        return (gr.update(choices=choices, value=u1 if u1 in choices else "None"),
                gr.update(choices=choices, value=u2 if u2 in choices else "None"), md, face_status_md(ex, check=True))

    refresh.click(do_refresh, [upscaler_1, upscaler_2], [upscaler_1, upscaler_2, status, face_status],
                  show_progress="minimal", show_progress_on=[status], api_visibility="private")

    def run(mode: int, img: Any, batch: list[str] | None, in_dir: str, out_dir: str, show: bool, rmode: int,
            by: float, max_len: Any, w: Any, h: Any, crop_: bool, u1: str | None, u2: str | None, vis: float,
            gfp_vis: float, cf_vis: float, cf_weight: float, request: gr.Request,
            progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        owner = page_owner(svc, request)
        p = ExtrasParams(resize_mode=int(rmode or 0), upscaling_resize=float(by), max_side_length=int(max_len or 0),
                         upscaling_resize_w=int(w), upscaling_resize_h=int(h), upscaling_crop=bool(crop_),
                         upscaler_1=u1 or "None", upscaler_2=u2 or "None",
                         extras_upscaler_2_visibility=float(vis or 0), gfpgan_visibility=float(gfp_vis or 0),
                         codeformer_visibility=float(cf_vis or 0), codeformer_weight=float(cf_weight or 0))
        try:
            if mode == 2:
                job = ex.submit_directory(in_dir or "", out_dir or "", p, show_results=bool(show), owner=owner)
            elif mode == 1:
                if not batch:
                    raise ExtrasError("no files: drop images into Batch Process first")
                job = ex.submit([(Path(f), Path(f).name) for f in batch], p, save=True, owner=owner)
            else:
                if img is None:
                    raise ExtrasError("image not selected: drop an image into Source first")
                job = ex.submit([(img, None)], p, save=True, owner=owner)
            while not job.future.done():  # the queue runs it; show where it is
                st = job.state
                pos = svc.queue.position(job)
                if pos > 0:
                    progress(0.0, desc=f"In queue: {pos} job{'s' if pos > 1 else ''} ahead")
                elif st.sampling_steps:
                    progress(st.progress, desc=f"Upscaling image {st.job_no + 1}/{st.job_count}: "
                                               f"tile {st.sampling_step}/{st.sampling_steps}")
                time.sleep(0.15)
            res = job.result()
        except (ExtrasError, UpscalerError, ImageInputError) as e:
            gr.Warning(str(e), title="Extras")
            return gr.update(), f"<p class='extras-error'>❌ {html.escape(str(e))}</p>", gr.update(), gr.update()
        except Exception as e:  # noqa: BLE001 - a model that fails at run time (memory...) must not kill the page
            msg = f"{type(e).__name__}: {e}"
            gr.Warning(msg, title="Extras failed")
            return gr.update(), f"<p class='extras-error'>❌ {html.escape(msg)}</p>", gr.update(), gr.update()
        shown = []
        for im, chunks in zip(res.images, res.pnginfo):
            im.info.update(chunks)  # gradio copies text chunks into the gallery PNGs
            shown.append(im)
        notes = []
        if res.saved:
            where = res.saved[0].parent
            notes.append(f"Saved {len(res.saved)} image{'s' if len(res.saved) != 1 else ''} to "
                         f"{html.escape(str(where))}")
        if res.interrupted:
            notes.append("Interrupted.")
        if res.errors:
            gr.Warning(f"{len(res.errors)} file{'s' if len(res.errors) != 1 else ''} skipped", title="Extras")
            notes.append("Skipped: " + "<br>".join(html.escape(e) for e in res.errors))
        for w in res.warnings:  # html_info already lists them
            gr.Warning(w, title="Face restoration")
        extra = "".join(f"<p class='extras-note'>{n}</p>" for n in notes)
        # what 📂 and Send to read: each result's own parameters (an uploaded plain picture has none)
        info = {"infotexts": [c.get("parameters", "") for c in res.pnginfo], "index_of_first_image": 0,
                "saved_files": [str(f) for f in res.saved]}
        return gr.Gallery(value=shown, selected_index=0 if shown else None), res.html_info + extra, info, 0

    generate.click(run, [extras_mode, image, files, input_dir, output_dir, show_results, resize_mode, resize,
                         max_side, width, height, crop, upscaler_1, upscaler_2, visibility, gfpgan_visibility,
                         codeformer_visibility, codeformer_weight],
                   [gallery, html_info, gen_info, selected], show_progress_on=[gallery],
                   api_visibility="private", concurrency_limit=None)  # the job queue serialises; the event only waits on it
    def on_select(evt: gr.SelectData) -> int:
        return int(evt.index) if isinstance(evt.index, int) else 0

    gallery.select(on_select, None, selected, show_progress="hidden", api_visibility="private")
    connect_file_buttons(svc, "extras", buttons, gallery, gen_info, selected)
    return ExtrasTab(image=image, gallery=gallery, html_info=html_info, generate=generate,
                     upscaler_1=upscaler_1, upscaler_2=upscaler_2, buttons=buttons, gen_info=gen_info,
                     selected=selected)
