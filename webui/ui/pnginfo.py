"""PNG Info tab: read generation parameters (and every other text chunk) from an image."""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.common import upload_components
from webui.ui.paste import apply_send_options, parse_for_paste, paste_values, script_field_updates
from webui.ui.txt2img import Txt2ImgTab

if TYPE_CHECKING:
    from webui.services.container import Services


def pnginfo_html(geninfo: str | None, items: dict[str, Any]) -> str:
    """A1111 `run_pnginfo` layout: one block per chunk, `parameters` first."""
    blocks = []
    if geninfo:
        blocks.append(("parameters", geninfo))
    for k, v in items.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, (str, int, float)):
            v = repr(v)
        blocks.append((str(k), str(v)))
    if not blocks:
        return "<div class='pnginfo-empty'><p>Nothing found in the image.</p></div>"
    out = []
    for k, v in blocks:
        out.append(f"<div class='pnginfo-item'><p><b>{html.escape(k)}</b></p>"
                   f"<p class='pnginfo-text'>{html.escape(v).replace(chr(10), '<br>')}</p></div>")
    return "".join(out)


def create_pnginfo_tab(svc: "Services", txt2img: Txt2ImgTab, tabs: gr.Tabs, img2img: Txt2ImgTab | None = None,
                       extras_image: Any = None) -> Any:
    """Returns the tab's image box (so other tabs can route images here)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = upload_components()[0](label="Source", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                             elem_id="pnginfo_image", height=480)
        with gr.Column(scale=1):
            info_html = gr.HTML("", elem_id="pnginfo_html")
            geninfo = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            with gr.Row():
                send_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                send_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img",
                                         visible=img2img is not None)
                send_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_to_inpaint",
                                         visible=img2img is not None)
                send_extras = gr.Button("Send to extras", elem_id="pnginfo_send_to_extras",
                                        visible=extras_image is not None)

    def read(path: Any) -> tuple[str, str]:
        from webui.imaging.decode import ImageInputError, open_image_file
        from webui.infotext import read_info_from_image
        if not path:
            return "", ""
        try:
            img = open_image_file(Path(path))
        except ImageInputError as e:  # a broken upload: say why instead of Gradio's generic error
            return f"<p>Cannot read this file: {html.escape(str(e))}</p>", ""
        try:
            text, items = read_info_from_image(img)
        except Exception as e:  # odd metadata must not break the tab
            return f"<p>Could not read metadata: {html.escape(f'{type(e).__name__}: {e}')}</p>", ""
        return pnginfo_html(text, items), text or ""

    image.change(read, image, [info_html, geninfo], show_progress="hidden", api_name="pnginfo",
                 api_visibility="undocumented")

    connect_infotext_send(svc, send_txt2img, geninfo, image, txt2img, tabs, "txt2img", None)
    if img2img is not None:
        connect_infotext_send(svc, send_img2img, geninfo, image, img2img, tabs, "img2img", "img2img")
        connect_infotext_send(svc, send_inpaint, geninfo, image, img2img, tabs, "img2img", "Inpaint")
    if extras_image is not None:
        send_extras.click(lambda img: (img, gr.Tabs(selected="extras")), image, [extras_image, tabs],
                          show_progress="hidden", api_visibility="private")
    return image


def connect_infotext_send(svc: "Services", button: Any, geninfo: Any, image: Any, target: Txt2ImgTab, tabs: gr.Tabs,
                          tab_id: str, sub_mode: str | None) -> None:
    """PNG Info's Send to txt2img / img2img / inpaint, for any button: every field the infotext in
    `geninfo` names, and (img2img, inpaint) the picture whose file path `image` holds. The Image
    Browser tab sends its selected file through this too."""
    fields = list(dict.fromkeys([*target.paste_fields().values(), target.extra, target.enable_hr,
                                 target.override, *[c for c, _ in target.script_infotext_fields]]))
    extra_out: list[Any] = []
    i2i = target.img2img
    if i2i is not None and sub_mode is not None:
        extra_out = [i2i.tabs, i2i.mode, i2i.mask_group]

    def send(text: str, img: Any) -> dict:
        from webui.infotext import infotext_to_request
        out: dict[Any, Any] = {c: gr.update() for c in fields + extra_out}
        if text:
            params = parse_for_paste(svc, text)
            opts = svc.options()
            req = apply_send_options(infotext_to_request(params, opts), opts)
            out.update(paste_values(target, req))
            out.update(script_field_updates(target.script_infotext_fields, params))
        elif sub_mode is None:
            gr.Warning("This image has no generation parameters.")
            return out | {tabs: gr.update()}
        if i2i is not None and sub_mode is not None:
            from webui.ui.img2img import MODES, SUB_TAB_IDS
            if img is None:
                gr.Warning("Drop an image first.")
                return out | {tabs: gr.update()}
            out[i2i.tabs] = gr.Tabs(selected=SUB_TAB_IDS[sub_mode])
            out[i2i.mode] = MODES.index(sub_mode)
            out[i2i.mask_group] = gr.update(visible=sub_mode != "img2img")
        out[tabs] = gr.Tabs(selected=tab_id)
        return out

    def set_image(path: Any) -> Any:
        from webui.imaging.decode import ImageInputError, open_image_file
        try:
            img = open_image_file(Path(path)) if path else None
        except ImageInputError:
            img = None
        if img is None:
            return gr.update()
        rgb = img.convert("RGB")
        return rgb if sub_mode == "img2img" else {"background": rgb, "layers": [], "composite": rgb}

    event = button.click(send, [geninfo, image], fields + extra_out + [tabs], show_progress="hidden",
                         api_visibility="private")
    if i2i is not None and sub_mode is not None:
        # the editor draws a value only once its tab is on screen: set the image after the switch
        event.then(set_image, image, i2i.editor_for(sub_mode), show_progress="hidden", api_visibility="private")
