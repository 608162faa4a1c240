"""PNG Info tab: read generation parameters (and every other text chunk) from an image."""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.txt2img import Txt2ImgTab, paste_values

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


def create_pnginfo_tab(svc: "Services", txt2img: Txt2ImgTab, tabs: gr.Tabs) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            image = gr.Image(label="Source", type="pil", image_mode=None, sources=["upload", "clipboard"],
                             elem_id="pnginfo_image", height=480)
        with gr.Column(scale=1):
            info_html = gr.HTML("", elem_id="pnginfo_html")
            geninfo = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            send_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")

    def read(img: Any) -> tuple[str, str]:
        from webui.infotext import read_info_from_image
        if img is None:
            return "", ""
        try:
            text, items = read_info_from_image(img)
        except Exception as e:  # odd metadata must not break the tab
            return f"<p>Could not read metadata: {html.escape(f'{type(e).__name__}: {e}')}</p>", ""
        return pnginfo_html(text, items), text or ""

    image.change(read, image, [info_html, geninfo], show_progress="hidden", api_name="pnginfo",
                 api_visibility="undocumented")

    fields = list(txt2img.paste_fields().values()) + [txt2img.extra]

    def send(text: str) -> dict:
        from webui.infotext import infotext_to_request, parse_generation_parameters
        if not text:
            gr.Warning("This image has no generation parameters.")
            return {c: gr.update() for c in fields} | {tabs: gr.update()}
        params = parse_generation_parameters(text)
        req = infotext_to_request(params, svc.options())
        out = paste_values(txt2img, req)
        overrides = req.get("override_settings") or {}
        if overrides:
            gr.Info("Not applied (settings): " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
        out[tabs] = gr.Tabs(selected="txt2img")
        return out

    send_txt2img.click(send, geninfo, fields + [tabs], show_progress="hidden", api_visibility="private")
