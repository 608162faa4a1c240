"""img2img's own controls: the input sub-tabs (img2img, Sketch, Inpaint, Inpaint sketch, Inpaint
upload, Batch), resize mode, inpaint options and the built-in scripts. The rest of the tab (prompt
row, sampler, seed, results, the job polling) is the generation tab shared with txt2img."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np
from PIL import Image

from webui.imaging.resize import RESIZE_MODES
from webui.services.requests import INPAINTING_FILL

if TYPE_CHECKING:
    from webui.services.container import Services

MODES = ("img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch")
EDITOR_MODES = ("img2img", "Sketch", "Inpaint", "Inpaint sketch")  # "Copy image to" targets
SUB_TAB_IDS = {"img2img": "img2img_tab_img2img", "Sketch": "img2img_tab_sketch", "Inpaint": "img2img_tab_inpaint",
               "Inpaint sketch": "img2img_tab_inpaint_sketch"}
SKETCH_COLORS = ["#ffffff", "#000000", "#ff0000", "#ff8800", "#ffff00", "#00c000", "#0080ff", "#8000ff"]


class InputError(ValueError):
    """What the user must do before generating (no image uploaded, no mask drawn, ...)."""


@dataclass
class Img2ImgInputs:
    mode: gr.State
    init_img: gr.Image
    sketch: gr.ImageEditor
    inpaint: gr.ImageEditor
    inpaint_sketch: gr.ImageEditor
    upload_img: gr.Image
    upload_mask: gr.Image
    batch_input: gr.Textbox
    batch_output: gr.Textbox
    batch_mask: gr.Textbox
    resize_mode: gr.Radio
    mask_blur: gr.Slider
    mask_alpha: gr.Slider
    mask_invert: gr.Radio
    fill: gr.Radio
    full_res: gr.Radio
    padding: gr.Slider
    mask_group: Any
    tabs: Any = None
    # set by the generation tab, which lays them out among the shared controls
    denoising: Any = None
    scale_by: Any = None
    resize_tab: Any = None
    script: Any = None
    script_controls: dict[str, list[Any]] = field(default_factory=dict)

    def components(self) -> set[Any]:
        out = {self.mode, self.init_img, self.sketch, self.inpaint, self.inpaint_sketch, self.upload_img,
               self.upload_mask, self.batch_input, self.batch_output, self.batch_mask, self.resize_mode,
               self.scale_by, self.resize_tab, self.denoising, self.mask_blur, self.mask_alpha, self.mask_invert,
               self.fill, self.full_res, self.padding, self.script}
        for ctrls in self.script_controls.values():
            out.update(ctrls)
        return out

    def editor_for(self, name: str) -> Any:
        return {"img2img": self.init_img, "Sketch": self.sketch, "Inpaint": self.inpaint,
                "Inpaint sketch": self.inpaint_sketch}[name]

    # ---- values → request fields ----
    def request_fields(self, d: dict) -> dict[str, Any]:
        """The img2img part of the request for the selected sub-tab; InputError says what is missing."""
        mode = MODES[int(d[self.mode] or 0)]
        fields: dict[str, Any] = {
            "resize_mode": int(d[self.resize_mode] or 0),
            "denoising_strength": float(d[self.denoising]),
            "mask_blur": int(d[self.mask_blur]),
            "inpainting_mask_invert": int(d[self.mask_invert] or 0),
            "inpainting_fill": int(d[self.fill] if d[self.fill] is not None else 1),
            "inpaint_full_res": bool(d[self.full_res]),
            "inpaint_full_res_padding": int(d[self.padding]),
        }
        if mode == "Batch":
            raise InputError("batch")  # handled by the caller (a folder job, not one request)
        value = {"img2img": d[self.init_img], "Sketch": d[self.sketch], "Inpaint": d[self.inpaint],
                 "Inpaint sketch": d[self.inpaint_sketch], "Inpaint upload": d[self.upload_img]}[mode]
        from webui.imaging.decode import ImageInputError
        try:
            image, mask = editor_inputs(mode, value, d[self.upload_mask], float(d[self.mask_alpha] or 0))
        except ImageInputError as e:
            raise InputError(f"The {mode} picture cannot be used: {e}") from None
        if image is None:
            raise InputError(f"Put an image in the {mode} tab first.")
        fields["init_images"] = [image.convert("RGB") if image.mode not in ("RGB", "RGBA") else image]
        if mask is not None:
            fields["mask"] = mask
        return fields


# ---- editor values ----
def editor_inputs(mode: str, value: Any, upload_mask: Any = None,
                  mask_alpha: float = 0.0) -> tuple[Image.Image | None, Image.Image | None]:
    """(init image, mask) from a sub-tab's value, as A1111 reads each mode: img2img and Sketch give
    the (sketched) picture; Inpaint the picture and the strokes as mask (none drawn: an empty
    mask); Inpaint sketch the sketched picture and, as mask, where the sketch changed it (shown
    through by ``mask_alpha`` %); Inpaint upload the picture and the uploaded mask."""
    image: Image.Image | None = None
    mask: Image.Image | None = None
    if mode == "img2img":
        image = _as_image(value)
    elif mode == "Sketch":
        image = _composite(value)
    elif mode == "Inpaint":
        image = _background(value)
        mask = _drawn_mask(value)
        if image is not None and mask is None:  # nothing drawn: an empty mask (inpaints nothing, says so)
            mask = Image.new("L", image.size, 0)
    elif mode == "Inpaint sketch":
        base = _background(value)
        sketched = _composite(value)
        if base is not None and sketched is not None:
            diff = np.abs(np.asarray(sketched.convert("RGB"), np.int16)
                          - np.asarray(base.convert("RGB"), np.int16)).sum(-1) > 0
            mask = Image.fromarray((diff * 255).astype(np.uint8))
            alpha = mask_alpha / 100.0
            image = Image.blend(sketched.convert("RGB"), base.convert("RGB"), alpha) if alpha else sketched
    elif mode == "Inpaint upload":
        image = _as_image(value)
        mask = _as_image(upload_mask)
        if image is not None and mask is None:
            raise InputError("Inpaint upload needs a mask image too (white = repaint).")
    return image, mask


def _as_image(v: Any) -> Image.Image | None:
    """An upload as a picture. The inputs hand us file paths (type="filepath") so that a broken or
    oversized upload is our clear ImageInputError, not Gradio's generic preprocess failure."""
    if v is None:
        return None
    if isinstance(v, Image.Image):
        return v
    if isinstance(v, (str, Path)):
        from webui.imaging.decode import open_image_file
        return open_image_file(Path(v)) if str(v) else None
    if isinstance(v, np.ndarray):
        return Image.fromarray(v)
    if isinstance(v, dict):
        return _background(v)
    return None


def _background(v: Any) -> Image.Image | None:
    if isinstance(v, dict):
        return _as_image(v.get("background"))
    return _as_image(v)


def _composite(v: Any) -> Image.Image | None:
    if isinstance(v, dict):
        img = _as_image(v.get("composite")) or _background(v)
        return img.convert("RGB") if img is not None else None
    return _as_image(v)


def _drawn_mask(v: Any) -> Image.Image | None:
    """Inpaint tab: the brush strokes (any layer's alpha) are the mask."""
    if not isinstance(v, dict):
        return None
    out = None
    for layer in v.get("layers") or []:
        img = _as_image(layer)
        if img is None:
            continue
        a = np.asarray(img.convert("RGBA"))[..., 3] > 0
        out = a if out is None else (out | a)
    if out is None:
        return None
    return Image.fromarray((out * 255).astype(np.uint8))


def create_img2img_inputs(svc: "Services") -> Img2ImgInputs:
    """The input sub-tabs (call at the top of the settings column)."""
    from webui.ui.common import upload_components
    UploadImage, UploadEditor = upload_components()
    mode = gr.State(0)
    sketch_color = str(svc.settings.get("img2img_sketch_default_brush_color") or "#ffffff")
    mask_color = str(svc.settings.get("img2img_inpaint_mask_brush_color") or "#ffffff")
    colors = [sketch_color] + [c for c in SKETCH_COLORS if c.lower() != sketch_color.lower()]
    copy_buttons: list[tuple[str, str, Any]] = []

    def copy_row(source: str) -> None:
        with gr.Row(elem_classes="img2img-copy-row"):
            gr.Markdown("Copy image to:", elem_classes="img2img-copy-label")
            for target in EDITOR_MODES:
                if target != source:
                    b = gr.Button(target.lower(), size="sm", min_width=60,
                                  elem_id=f"img2img_copy_{_slug(source)}_to_{_slug(target)}")
                    copy_buttons.append((source, target, b))

    def editor(elem_id: str, brush: Any, label: str) -> gr.ImageEditor:
        return UploadEditor(label=label, type="filepath", image_mode="RGBA", sources=["upload", "clipboard"],
                              brush=brush, eraser=gr.Eraser(default_size=20), transforms=(), layers=False,
                              format="png", height=420, elem_id=elem_id)

    with gr.Tabs(elem_id="mode_img2img") as tabs:
        with gr.Tab("img2img", id="img2img_tab_img2img", elem_id="img2img_img2img_tab") as t0:
            init_img = UploadImage(label="Image for img2img", type="filepath", image_mode=None,
                                sources=["upload", "clipboard"], format="png", height=420, elem_id="img2img_image")
            copy_row("img2img")
        with gr.Tab("Sketch", id="img2img_tab_sketch", elem_id="img2img_img2img_sketch_tab") as t1:
            sketch = editor("img2img_sketch", gr.Brush(colors=colors, default_color=colors[0], default_size="auto",
                                                       color_mode="defaults"), "Image for img2img")
            copy_row("Sketch")
        with gr.Tab("Inpaint", id="img2img_tab_inpaint", elem_id="img2img_inpaint_tab") as t2:
            inpaint = editor("img2maskimg", gr.Brush(colors=[mask_color], default_color=mask_color, default_size="auto",
                                                      color_mode="fixed"), "Image for inpainting with mask")
            copy_row("Inpaint")
        with gr.Tab("Inpaint sketch", id="img2img_tab_inpaint_sketch", elem_id="img2img_inpaint_sketch_tab") as t3:
            # A1111's img2img_inpaint_sketch_default_brush_color: this editor's own first colour
            isk = str(svc.settings.get("img2img_inpaint_sketch_default_brush_color") or "#ffffff")
            isk_colors = [isk] + [c for c in SKETCH_COLORS if c.lower() != isk.lower()]
            inpaint_sketch = editor("inpaint_sketch", gr.Brush(colors=isk_colors, default_color=isk,
                                                               default_size="auto", color_mode="defaults"),
                                    "Color sketch inpainting")
            copy_row("Inpaint sketch")
        with gr.Tab("Inpaint upload", id="img2img_tab_inpaint_upload", elem_id="img2img_inpaint_upload_tab") as t4:
            upload_img = UploadImage(label="Image for img2img", type="filepath", image_mode=None,
                                  sources=["upload", "clipboard"], format="png", height=300,
                                  elem_id="img_inpaint_base")
            upload_mask = UploadImage(label="Mask", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                   format="png", height=300, elem_id="img_inpaint_mask")
        with gr.Tab("Batch", id="img2img_tab_batch", elem_id="img2img_batch_tab") as t5:
            gr.Markdown("Process every image in a folder on the server. Masks (for inpainting) are found in "
                        "the mask folder by file name. Empty output folder = the usual img2img output folder.")
            batch_input = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
            batch_output = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
            batch_mask = gr.Textbox(label="Inpaint batch mask directory (optional)",
                                    elem_id="img2img_batch_inpaint_mask_dir")
    resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label="Resize mode",
                           elem_id="img2img_resize_mode")
    with gr.Group(visible=False, elem_id="img2img_mask_options") as mask_group:
        with gr.Row():
            mask_blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
            mask_alpha = gr.Slider(0, 100, value=0, step=1, label="Mask transparency", elem_id="img2img_mask_alpha")
        mask_invert = gr.Radio(["Inpaint masked", "Inpaint not masked"], value="Inpaint masked", type="index",
                               label="Mask mode", elem_id="img2img_mask_mode")
        fill = gr.Radio(list(INPAINTING_FILL), value="original", type="index", label="Masked content",
                        elem_id="img2img_inpainting_fill")
        with gr.Row():
            full_res = gr.Radio(["Whole picture", "Only masked"], value="Whole picture", type="index",
                                label="Inpaint area", elem_id="img2img_inpaint_full_res")
            padding = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                elem_id="img2img_inpaint_full_res_padding")

    def select_mode(i: int) -> tuple[int, Any]:
        return i, gr.update(visible=MODES[i] in ("Inpaint", "Inpaint sketch", "Inpaint upload", "Batch"))

    for i, t in enumerate((t0, t1, t2, t3, t4, t5)):
        t.select(lambda i=i: select_mode(i), None, [mode, mask_group], show_progress="hidden",
                 api_visibility="private", queue=False)

    comps = {"img2img": init_img, "Sketch": sketch, "Inpaint": inpaint, "Inpaint sketch": inpaint_sketch}
    for source, target, button in copy_buttons:
        def picture(value: Any, source: str = source) -> Image.Image | None:
            from webui.imaging.decode import ImageInputError
            try:
                return _composite(value) if source in ("Sketch", "Inpaint sketch") else _background(value)
            except ImageInputError:
                return None

        def switch(value: Any, target: str = target, source: str = source) -> tuple[Any, int, Any]:
            if picture(value) is None:
                gr.Warning(f"The {source} tab has no image to copy.")
                return gr.update(), gr.update(), gr.update()
            i = MODES.index(target)
            return gr.Tabs(selected=SUB_TAB_IDS[target]), i, select_mode(i)[1]

        def fill_target(value: Any, target: str = target) -> Any:
            img = picture(value)
            if img is None:
                return gr.update()
            return img if target == "img2img" else {"background": img, "layers": [], "composite": img}

        # the editor draws a value only once its tab is on screen: switch first, then set the picture
        button.click(switch, comps[source], [tabs, mode, mask_group], show_progress="hidden",
                     api_visibility="private").then(fill_target, comps[source], comps[target],
                                                    show_progress="hidden", api_visibility="private")

    return Img2ImgInputs(mode, init_img, sketch, inpaint, inpaint_sketch, upload_img, upload_mask, batch_input,
                         batch_output, batch_mask, resize_mode, mask_blur, mask_alpha, mask_invert, fill, full_res,
                         padding, mask_group, tabs=tabs)


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")
