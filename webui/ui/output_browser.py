"""The Image Browser tab: the output folders (txt2img, img2img, Extras, grids, 💾 saved) by date
folder, newest first, a page of thumbnails at a time; a click shows the picture with its infotext,
name and size; Send to txt2img / img2img / inpaint / Extras / PNG Info; delete to the trash.

Every handler goes through `webui.services.output_browser` (the API's routes do the same). The
thumbnails are served by Gradio straight from their cache folder (a static path, no copy); the
picture shown is re-encoded by Gradio, and the file itself never leaves the server unchecked.
"""
from __future__ import annotations

import html
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.admin_gate import admin_refusal
from webui.services.output_browser import ALL, KINDS, OutputBrowser, OutputBrowserError, first_line

if TYPE_CHECKING:
    from webui.services.container import Services
    from webui.ui.txt2img import Txt2ImgTab

log = logging.getLogger(__name__)

ALL_FOLDERS = "All folders"
KIND_CHOICES = [(label, key) for key, (label, _, _) in KINDS.items()] + [("All (search everywhere)", ALL)]


def _size_text(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _page_number(value: Any) -> int:
    try:
        return max(1, int(value or 1))
    except (TypeError, ValueError):
        return 1


def create_output_browser_tab(svc: "Services", tab: Any, tabs: gr.Tabs, txt2img: "Txt2ImgTab",
                              img2img: "Txt2ImgTab | None", extras_image: Any, pnginfo_image: Any) -> None:
    """Build the tab's content (call inside its gr.Tab, passed as `tab`: it lists when opened)."""
    from webui.ui.pnginfo import connect_infotext_send, pnginfo_html

    thumbs_dir = OutputBrowser.for_services(svc).thumbs.folder
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    gr.set_static_paths([thumbs_dir])  # only thumbnails: Gradio serves them without copying

    with gr.Row(equal_height=False):
        kind = gr.Radio(KIND_CHOICES, value="txt2img", label="Images", elem_id="image_browser_kind", scale=3)
        folder = gr.Dropdown([ALL_FOLDERS], value=ALL_FOLDERS, label="Folder", elem_id="image_browser_folder",
                             scale=1, min_width=160)
        search = gr.Textbox("", label="Search prompts", placeholder="text in the infotext (Enter to search)",
                            elem_id="image_browser_search", scale=2, min_width=200)
        refresh = gr.Button("🔄", elem_id="image_browser_refresh", scale=0, min_width=44)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row(elem_id="image_browser_pager"):
                first = gr.Button("⏮ First", elem_id="image_browser_first", size="sm", min_width=60)
                prev = gr.Button("◀ Prev", elem_id="image_browser_prev", size="sm", min_width=60)
                page = gr.Number(1, precision=0, minimum=1, label="Page", elem_id="image_browser_page", min_width=80)
                nxt = gr.Button("Next ▶", elem_id="image_browser_next", size="sm", min_width=60)
                last = gr.Button("Last ⏭", elem_id="image_browser_last", size="sm", min_width=60)
            status = gr.Markdown("", elem_id="image_browser_status")
            gallery = gr.Gallery(label="Images", columns=6, height=640, allow_preview=False, object_fit="cover",
                                 elem_id="image_browser_gallery", show_label=False)
        with gr.Column(scale=2):
            shown = gr.Image(label="Selected", type="pil", interactive=False, elem_id="image_browser_image",
                             height=420)
            file_note = gr.HTML("", elem_id="image_browser_file_info")
            info_html = gr.HTML("", elem_id="image_browser_infotext")
            geninfo = gr.Textbox(visible=False, elem_id="image_browser_generation_info")
            with gr.Row(elem_classes="gallery-buttons"):
                send_txt2img = gr.Button("Send to txt2img", elem_id="image_browser_send_to_txt2img", size="sm")
                send_img2img = gr.Button("Send to img2img", elem_id="image_browser_send_to_img2img", size="sm",
                                         visible=img2img is not None)
                send_inpaint = gr.Button("Send to inpaint", elem_id="image_browser_send_to_inpaint", size="sm",
                                         visible=img2img is not None)
                send_extras = gr.Button("Send to extras", elem_id="image_browser_send_to_extras", size="sm",
                                        visible=extras_image is not None)
                send_pnginfo = gr.Button("Send to PNG Info", elem_id="image_browser_send_to_pnginfo", size="sm",
                                         visible=pnginfo_image is not None)
            with gr.Row():
                confirm = gr.Checkbox(False, label="Confirm delete", elem_id="image_browser_confirm_delete")
                delete = gr.Button("🗑️ Delete (to trash)", elem_id="image_browser_delete", variant="stop", size="sm")
    page_ids = gr.State([])  # the ids (<kind>/<path>) behind the gallery's items, in order
    selected_id = gr.State(None)
    selected_path = gr.State(None)  # the checked file on the server, for the send buttons (server side only)

    def folder_update(k: str, current: str | None) -> Any:
        names = OutputBrowser.for_services(svc).folders(k) if k != ALL else []
        value = current if current in names else ALL_FOLDERS
        return gr.update(choices=[ALL_FOLDERS, *names], value=value, interactive=k != ALL)

    def show(k: str, f: str | None, number: Any, text: str | None) -> tuple[Any, ...]:
        b = OutputBrowser.for_services(svc)
        wanted = _page_number(number)
        f = "" if not f or f == ALL_FOLDERS or k == ALL else f
        try:
            result = b.page(k, f, wanted, text or "")
            if result.page > result.pages:  # a page past the end (files deleted meanwhile): the last one
                result = b.page(k, f, result.pages, text or "")
        except OutputBrowserError as e:
            gr.Warning(str(e))
            return gr.update(), gr.update(), gr.update(), gr.update()
        thumbs = b.thumbnails(result.files)
        texts = b.infotexts(result.files)
        items, ids = [], []
        for file, thumb in zip(result.files, thumbs):
            if thumb is not None:  # unreadable images are left out of the page
                items.append((str(thumb), f"{file.name}: {first_line(texts[file.id])[:80]}"))
                ids.append(file.id)
        what = f" matching “{html.escape(result.search)}”" if result.search else ""
        note = (f"Page {result.page} of {result.pages}: {result.total} image{'s' * (result.total != 1)}{what}, "
                f"newest first" if result.total else f"No images{what} here yet.")
        return items, ids, result.page, note

    listing = [kind, folder, page, search]
    shown_out = [gallery, page_ids, page, status]

    def reload_all(k: str, f: str | None, number: Any, text: str | None) -> tuple[Any, ...]:
        return (folder_update(k, f), *show(k, f, number, text))

    common = {"show_progress": "hidden", "api_visibility": "private"}
    tab.select(reload_all, listing, [folder, *shown_out], **common)
    refresh.click(reload_all, listing, [folder, *shown_out], **common)
    kind.change(lambda k, t: (folder_update(k, None), *show(k, ALL_FOLDERS, 1, t)), [kind, search],
                [folder, *shown_out], **common)
    folder.input(lambda k, f, t: show(k, f, 1, t), [kind, folder, search], shown_out, **common)
    search.submit(lambda k, f, t: show(k, f, 1, t), [kind, folder, search], shown_out, **common)
    page.submit(show, listing, shown_out, **common)
    first.click(lambda k, f, t: show(k, f, 1, t), [kind, folder, search], shown_out, **common)
    prev.click(lambda k, f, n, t: show(k, f, _page_number(n) - 1, t), listing, shown_out, **common)
    nxt.click(lambda k, f, n, t: show(k, f, _page_number(n) + 1, t), listing, shown_out, **common)
    last.click(lambda k, f, t: show(k, f, 10**9, t), [kind, folder, search], shown_out, **common)

    def select(ids: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        from webui.imaging.decode import ImageInputError, open_image_file
        idx = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not ids or not 0 <= idx < len(ids):
            return None, "", "", "", None, None
        b = OutputBrowser.for_services(svc)
        try:
            d = b.details(ids[idx])
            f = b.resolve(ids[idx])
            img = open_image_file(f.path)
        except (OutputBrowserError, ImageInputError, OSError) as e:
            gr.Warning(f"Cannot show this image: {e}")
            return None, "", "", "", None, None
        where = f"{f.kind}/{f.rel.rpartition('/')[0]}"
        note = (f"<p class='gallery-note'><b>{html.escape(d['name'])}</b> · {img.width}×{img.height} · "
                f"{_size_text(d['size'])} · {html.escape(where)}</p>")
        text = d["infotext"]
        return img, note, pnginfo_html(text or None, {}), text, f.id, str(f.path)

    gallery.select(select, page_ids, [shown, file_note, info_html, geninfo, selected_id, selected_path], **common)

    connect_infotext_send(svc, send_txt2img, geninfo, selected_path, txt2img, tabs, "txt2img", None)
    if img2img is not None:
        connect_infotext_send(svc, send_img2img, geninfo, selected_path, img2img, tabs, "img2img", "img2img")
        connect_infotext_send(svc, send_inpaint, geninfo, selected_path, img2img, tabs, "img2img", "Inpaint")

    def checked_file(file_id: str | None) -> Path | None:
        if not file_id:
            gr.Warning("Select an image first.")
            return None
        try:
            return OutputBrowser.for_services(svc).resolve(file_id).path
        except OutputBrowserError as e:
            gr.Warning(str(e))
            return None

    if extras_image is not None:
        def to_extras(file_id: str | None) -> tuple[Any, Any]:
            from webui.imaging.decode import ImageInputError, open_image_file
            path = checked_file(file_id)
            try:
                img = open_image_file(path) if path is not None else None
            except ImageInputError as e:
                gr.Warning(str(e))
                img = None
            return (img, gr.Tabs(selected="extras")) if img is not None else (gr.update(), gr.update())
        send_extras.click(to_extras, selected_id, [extras_image, tabs], **common)

    if pnginfo_image is not None:
        def to_pnginfo(file_id: str | None) -> tuple[Any, Any]:
            path = checked_file(file_id)
            if path is None:
                return gr.update(), gr.update()
            # a copy in the temp folder: Gradio hands out only files from there, and the PNG Info
            # tab must read the file's own metadata (a re-encoded picture would have none)
            copy = Path(tempfile.mkdtemp(prefix="webui-browser-")) / path.name
            shutil.copy2(path, copy)
            return str(copy), gr.Tabs(selected="pnginfo")
        send_pnginfo.click(to_pnginfo, selected_id, [pnginfo_image, tabs], **common)

    def remove(file_id: str | None, sure: bool, k: str, f: str | None, number: Any,
               text: str | None, request: gr.Request) -> tuple[Any, ...]:
        keep = (gr.update(),) * 7
        refused = admin_refusal(svc, request, "delete images (outputs have no owners)")
        if refused:
            gr.Warning(refused)
            return keep + (gr.update(),) * 4
        if not file_id:
            gr.Warning("Select an image first.")
            return keep + (gr.update(),) * 4
        if not sure:
            gr.Warning("Tick “Confirm delete” first: the image is moved to the trash folder in the data dir.")
            return keep + (gr.update(),) * 4
        try:
            dest = OutputBrowser.for_services(svc).trash(file_id)
        except (OutputBrowserError, OSError) as e:
            gr.Warning(f"Not deleted: {e}")
            return keep + (gr.update(),) * 4
        log.info("moved %s to %s", file_id, dest)
        gr.Info(f"Moved {Path(file_id).name} to the trash.")
        return (None, "", "", "", None, None, False, *show(k, f, number, text))

    delete.click(remove, [selected_id, confirm, *listing],
                 [shown, file_note, info_html, geninfo, selected_id, selected_path, confirm, *shown_out], **common)
