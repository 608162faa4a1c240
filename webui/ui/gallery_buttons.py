"""A1111's buttons under the txt2img/img2img/Extras gallery: 📂 open the output folder, 💾 save,
🗜️ zip (not under Extras, as in A1111), and Send to img2img / inpaint / Extras.

💾 copies the shown images to `outdir_save` (`log/images` in the data dir) and appends a row to
`log.csv` there, as A1111's save button does; 🗜️ saves the same way and packs the files in a zip.
Both offer the files as a download. 📂 opens the folder with the desktop's file manager only when
the browser runs on the server's machine; a remote browser is shown the folder's path instead.
"""
from __future__ import annotations

import csv
import html
import ipaddress
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import gradio as gr
from PIL import Image

from webui.ui.gallery_values import infotext_for_index

if TYPE_CHECKING:
    from webui.services.container import Services
    from webui.ui.txt2img import Txt2ImgTab

log = logging.getLogger(__name__)

LOG_FIELDS = ["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename", "negative_prompt",
              "sd_model_name", "sd_model_hash"]  # A1111's log.csv columns, in its order
DEFAULT_SAVE_DIR = "log/images"


@dataclass
class GalleryButtons:
    open_folder: gr.Button
    save: gr.Button | None  # None under Extras (A1111 has no 💾 / 🗜️ there)
    save_zip: gr.Button | None
    send_img2img: gr.Button
    send_inpaint: gr.Button
    send_extras: gr.Button
    download: gr.File | None
    note: gr.HTML


class GallerySource(Protocol):
    """A tab whose gallery the Send to buttons read: txt2img, img2img or Extras."""
    buttons: GalleryButtons | None
    gallery: Any
    gen_info: Any  # gr.State: a dict with "infotexts" / "shown_infotexts", "saved_files"
    selected: Any  # gr.State: the selected gallery index


def create_gallery_buttons(svc: "Services", mode: str, save_buttons: bool = True) -> GalleryButtons:
    """The button row, the download box and a note line (call under the gallery); `save_buttons`
    False leaves out 💾 / 🗜️ and the download box."""
    hide_dirs = bool(getattr(svc.args, "hide_ui_dir_config", False))
    save = save_zip = download = None
    with gr.Row(elem_id=f"{mode}_gallery_buttons", elem_classes="gallery-buttons"):
        # A1111 hides 📂 with --hide-ui-dir-config: the flag keeps server paths away from the page
        open_folder = gr.Button("📂", elem_id=f"{mode}_open_folder", size="sm", min_width=44, scale=0,
                                visible=not hide_dirs)
        if save_buttons:
            save = gr.Button("💾", elem_id=f"save_{mode}", size="sm", min_width=44, scale=0)
            save_zip = gr.Button("🗜️", elem_id=f"save_zip_{mode}", size="sm", min_width=44, scale=0)
        send_img2img = gr.Button("🖼️ Send to img2img", elem_id=f"{mode}_send_to_img2img", size="sm", min_width=60)
        send_inpaint = gr.Button("🎨️ Send to inpaint", elem_id=f"{mode}_send_to_inpaint", size="sm", min_width=60)
        send_extras = gr.Button("📐 Send to extras", elem_id=f"{mode}_send_to_extras", size="sm", min_width=60)
    if save_buttons:
        download = gr.File(None, file_count="multiple", interactive=False, show_label=False, visible=False,
                           elem_id=f"download_files_{mode}")
    note = gr.HTML("", elem_id=f"{mode}_gallery_note")
    return GalleryButtons(open_folder, save, save_zip, send_img2img, send_inpaint, send_extras, download, note)


# ---------------------------------------------------------------- gallery values

def _unwrap(item: Any) -> Any:
    """A gallery value item's picture part: the file or image inside a (file, caption) pair or a dict."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image") or item.get("path") or item.get("name")
        if isinstance(item, dict):
            item = item.get("path")
    return item


def gallery_image(item: Any) -> Image.Image | None:
    """One gallery value item (a (file, caption) pair, a dict, a path or an image) as a PIL image."""
    item = _unwrap(item)
    if isinstance(item, Image.Image):
        return item
    path = getattr(item, "path", item)
    if not path:
        return None
    try:
        with Image.open(str(path)) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError):
        return None


def gallery_images(value: Any) -> list[Image.Image]:
    return [im for im in (gallery_image(v) for v in value or []) if im is not None]


def selected_item(value: Any, index: int | None, info: dict | None = None) -> tuple[Image.Image | None, int]:
    """The picture to send: the selected one, or the first image when a grid is selected (a grid is
    no useful img2img input and has no seed of its own)."""
    items = list(value or [])
    if not items:
        return None, 0
    i = min(max(int(index or 0), 0), len(items) - 1)
    first = int((info or {}).get("index_of_first_image", 0))
    if i < first < len(items):
        i = first
    return gallery_image(items[i]), i


# ---------------------------------------------------------------- 📂

def is_local_client(host: str | None) -> bool:
    """Whether the browser runs on the server's machine (a loopback address)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _item_path(item: Any) -> Path | None:
    """The file behind a gallery value item, when it has one."""
    item = _unwrap(item)
    path = getattr(item, "path", item)
    return Path(str(path)) if isinstance(path, (str, os.PathLike)) and str(path) else None


def output_folder(svc: "Services", mode: str, info: dict | None, value: Any = None,
                  index: int | None = None) -> Path:
    """What 📂 opens (A1111's `open_dir_button_choice`): "Output Root" the tab's output folder
    (`outdir_samples`, else the tab's own); "Subdirectory" the folder the shown pictures were saved
    in; "Subdirectory (even temp dir)" also, for pictures that were not saved, the temporary folder
    the page's copy lies in."""
    opts = svc.options()
    choice = str(opts.get("open_dir_button_choice") or "Subdirectory")
    saved = (info or {}).get("saved_files") or []
    if "Sub" in choice and saved:
        return Path(saved[0]).parent
    if "temp" in choice and value:
        items = list(value)
        shown = _item_path(items[min(max(int(index or 0), 0), len(items) - 1)])
        if shown is not None:
            return shown.parent
    custom = str(opts.get("outdir_samples") or opts.get(f"outdir_{mode}_samples") or "").strip()
    if custom:
        return Path(custom)
    return svc.paths.outputs_dir / f"{mode}-images"


def can_open_here() -> bool:
    """A file manager needs a desktop: Windows and macOS have one, elsewhere a display must be set."""
    system = platform.system()
    return system in ("Windows", "Darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_in_file_manager(path: Path) -> None:
    """The OS's own opener, as A1111 does (startfile / open / wsl-open / xdg-open)."""
    if platform.system() == "Windows":
        os.startfile(str(path))  # type: ignore[attr-defined]
    elif platform.system() == "Darwin":
        subprocess.Popen(["open", str(path)])
    elif "microsoft-standard-WSL2" in platform.uname().release:
        subprocess.Popen(["wsl-open", str(path)])
    else:
        subprocess.Popen(["xdg-open", str(path)])


def open_folder_action(folder: Path, client_host: str | None, hide_dirs: bool) -> tuple[str, str]:
    """("opened" | "shown" | "refused" | "missing", message) for a 📂 click."""
    if hide_dirs:
        return "refused", "Folders are hidden on this server (--hide-ui-dir-config)."
    if not folder.is_dir():
        return "missing", f"Folder {folder} does not exist yet: it is made when the first image is saved."
    if is_local_client(client_host) and can_open_here():
        try:
            open_in_file_manager(folder)
            return "opened", f"Opened {folder}"
        except OSError as e:  # no opener installed: the path is still useful
            log.warning("could not open %s: %s", folder, e)
    return "shown", f"Images are saved in {folder} on the server."


# ---------------------------------------------------------------- 💾 / 🗜️

def save_dir(svc: "Services") -> Path:
    """A1111's `outdir_save` (relative paths are under the data dir)."""
    d = Path(str(svc.options().get("outdir_save") or DEFAULT_SAVE_DIR))
    return d if d.is_absolute() else svc.paths.data_dir / d


def _log_row(info: dict, text: str, filename: str) -> list[Any]:
    from webui.infotext import parse_generation_parameters
    params = parse_generation_parameters(text) if text else {}
    return [params.get("Prompt", info.get("prompt", "")), params.get("Seed", info.get("seed", "")),
            info.get("width", ""), info.get("height", ""), info.get("sampler_name", ""), info.get("cfg_scale", ""),
            info.get("steps", ""), filename, params.get("Negative prompt", info.get("negative_prompt", "")),
            info.get("sd_model_name", ""), info.get("sd_model_hash", "")]


def _saved_name(opts: dict, folder: Path, img: Image.Image, ctx: Any, text: str, grid: bool, fmt: str) -> Path:
    """One picture saved by 💾 / 🗜️, named by the file-name pattern (a grid keeps `grid-NNNN`) and,
    with `use_save_to_dirs_for_ui`, put in the folder the directory pattern names."""
    from webui import filename_patterns as patterns
    from webui.outputs import save_image
    if opts.get("use_save_to_dirs_for_ui", False):
        folder = folder.joinpath(*patterns.directory_name(str(opts.get("directories_filename_pattern", "[date]")), ctx))
    decoration = None if grid else patterns.file_decoration(
        str(opts.get("samples_filename_pattern") or ""), bool(opts.get("save_to_dirs", True)), ctx)
    return save_image(img, folder, seed=None if grid else ctx.seed, infotext=text or None, grid=grid, fmt=fmt,
                      decoration=decoration, quality=int(opts.get("jpeg_quality", 80)),
                      add_number=bool(opts.get("save_images_add_number", True)),
                      replace=opts.get("save_images_replace_action", "Replace") != "Add number suffix",
                      lossless=bool(opts.get("webp_lossless", False)))


def save_images(svc: "Services", value: Any, info: dict | None, index: int | None, make_zip: bool) -> list[Path]:
    """Save the selected image (or all when a grid or nothing is selected, or `save_selected_only` is
    off; every image for a zip) into the save folder with their infotexts, add a log.csv row, and
    return the files written (the zip first)."""
    from webui import filename_patterns as patterns
    from webui.infotext import parse_generation_parameters
    info = info or {}
    items = list(value or [])
    if not items:
        raise ValueError("Nothing to save: generate an image first.")
    opts = svc.options()
    first_image = int(info.get("index_of_first_image", 0))
    indices = list(range(len(items)))
    select_one = bool(opts.get("save_selected_only", True))
    if not make_zip and select_one and index is not None and first_image <= index < len(items):
        indices = [index]
    base = save_dir(svc)
    base.mkdir(parents=True, exist_ok=True)
    fmt = str(opts.get("samples_format") or "png")
    words = int(opts.get("directories_max_prompt_words", 8) or 8)
    written: list[Path] = []
    contexts: list[Any] = []
    texts: list[str] = []
    for i in indices:
        img = gallery_image(items[i])
        if img is None:
            continue
        text = infotext_for_index(info, i)
        ctx = patterns.context_from_info(info, parse_generation_parameters(text) if text else {}, img, i, words)
        written.append(_saved_name(opts, base, img, ctx, text, i < first_image, fmt))
        contexts.append(ctx)
        texts.append(text)
    if not written:
        raise ValueError("The images could not be read back from the gallery.")
    if opts.get("save_write_log_csv", True):
        log_path = base / "log.csv"  # one log.csv for the save folder, subfolders included
        new = not log_path.exists() or log_path.stat().st_size == 0
        with open(log_path, "a", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(LOG_FIELDS)
            w.writerow(_log_row(info, texts[0], os.path.relpath(written[0], base)))
    if make_zip:
        ctx = contexts[0]
        ctx.all_seeds = [c.seed for c in contexts if c.seed is not None]  # A1111: the saved pictures' seeds
        zip_path = base / (patterns.zip_name(str(opts.get("grid_zip_filename_pattern") or ""), ctx) + ".zip")
        with zipfile.ZipFile(zip_path, "w") as z:
            for p in written:
                z.write(p, os.path.relpath(p, base))
        written.insert(0, zip_path)
    return written


def download_copies(paths: list[Path]) -> list[str]:
    """Copies in the temp folder: Gradio serves files only from the working dir or temp, and the
    data dir may be elsewhere."""
    d = Path(tempfile.mkdtemp(prefix="webui-save-"))
    out = []
    for p in paths:
        q = d / p.name
        shutil.copy2(p, q)
        out.append(str(q))
    return out


# ---------------------------------------------------------------- wiring

def connect_file_buttons(svc: "Services", mode: str, buttons: GalleryButtons, gallery: Any, gen_info: Any,
                         selected: Any) -> None:
    """📂, 💾 and 🗜️ need only the tab's own gallery and state."""
    hide_dirs = bool(getattr(svc.args, "hide_ui_dir_config", False))

    def open_folder(info: dict | None, value: Any, index: int | None, request: gr.Request) -> str:
        client = getattr(getattr(request, "client", None), "host", None)
        kind, msg = open_folder_action(output_folder(svc, mode, info, value, index), client, hide_dirs)
        if kind == "opened":
            gr.Info(msg)
        elif kind in ("missing", "refused"):
            gr.Warning(msg)
        return f"<p class='gallery-note'>{html.escape(msg)}</p>" if kind in ("shown", "missing") else ""

    buttons.open_folder.click(open_folder, [gen_info, gallery, selected], buttons.note, show_progress="hidden",
                              api_visibility="private")

    def saver(make_zip: bool) -> Any:
        def save(value: Any, info: dict | None, index: int | None) -> tuple[Any, str]:
            try:
                paths = save_images(svc, value, info, index, make_zip)
            except (ValueError, OSError) as e:
                gr.Warning(str(e), title="Not saved")
                return gr.update(), f"<p class='gallery-note'>{html.escape(str(e))}</p>"
            folder = save_dir(svc)
            names = ", ".join(os.path.relpath(p, folder) if p.is_relative_to(folder) else p.name for p in paths)
            where = "" if hide_dirs else f" in {folder}"
            return (gr.update(value=download_copies(paths), visible=True),
                    f"<p class='gallery-note'>Saved{html.escape(where)}: {html.escape(names)}</p>")
        return save

    for button, make_zip in ((buttons.save, False), (buttons.save_zip, True)):
        if button is None:
            continue
        button.click(saver(make_zip), [gallery, gen_info, selected], [buttons.download, buttons.note],
                     show_progress="hidden", api_visibility="private")


def connect_send_buttons(svc: "Services", source: GallerySource, img2img: "Txt2ImgTab | None", extras_image: Any,
                         tabs: Any) -> None:
    """Send to img2img / inpaint (the picture and its parameters, as A1111's paste) and to Extras
    (the picture); call once every tab exists."""
    buttons = source.buttons
    if buttons is None:
        return
    if img2img is not None and img2img.img2img is not None:
        _connect_to_img2img(svc, source, img2img, tabs, buttons.send_img2img, "img2img")
        _connect_to_img2img(svc, source, img2img, tabs, buttons.send_inpaint, "Inpaint")
    else:
        buttons.send_img2img.visible = buttons.send_inpaint.visible = False
    if extras_image is None:
        buttons.send_extras.visible = False
        return

    def to_extras(value: Any, info: dict | None, index: int | None) -> tuple[Any, Any]:
        img, _ = selected_item(value, index, info)
        if img is None:
            gr.Warning("Nothing to send: generate an image first.")
            return gr.update(), gr.update()
        return img, gr.Tabs(selected="extras")

    buttons.send_extras.click(to_extras, [source.gallery, source.gen_info, source.selected], [extras_image, tabs],
                              show_progress="hidden", api_visibility="private")


def _connect_to_img2img(svc: "Services", source: GallerySource, target: "Txt2ImgTab", tabs: Any, button: Any,
                        sub_mode: str) -> None:
    from webui.ui.img2img import MODES, SUB_TAB_IDS
    from webui.ui.paste import parse_for_paste, paste_values, script_field_updates
    i2i = target.img2img
    fields = list(dict.fromkeys([*target.paste_fields().values(), target.extra, target.enable_hr, target.override,
                                 *[c for c, _ in target.script_infotext_fields]]))
    outs = fields + [i2i.tabs, i2i.mode, i2i.mask_group, tabs]

    def send(value: Any, info: dict | None, index: int | None) -> dict:
        from webui.infotext import infotext_to_request
        out: dict[Any, Any] = {c: gr.update() for c in outs}
        img, i = selected_item(value, index, info)
        if img is None:
            gr.Warning("Nothing to send: generate an image first.")
            return out
        text = infotext_for_index(info, i)
        if text:
            opts = svc.options()
            params = parse_for_paste(svc, text)
            req = infotext_to_request(params, opts)
            if not opts.get("send_seed", True):  # A1111's options: keep the target's seed / size
                for k in ("seed", "subseed", "subseed_strength"):
                    req.pop(k, None)
            if opts.get("send_size", True):
                req["width"], req["height"] = img.width, img.height
            else:
                req.pop("width", None)
                req.pop("height", None)
            out.update(paste_values(target, req))
            out.update(script_field_updates(target.script_infotext_fields, params))
        out[i2i.tabs] = gr.Tabs(selected=SUB_TAB_IDS[sub_mode])
        out[i2i.mode] = MODES.index(sub_mode)
        out[i2i.mask_group] = gr.update(visible=sub_mode != "img2img")
        out[tabs] = gr.Tabs(selected="img2img")
        return out

    def set_image(value: Any, info: dict | None, index: int | None) -> Any:
        img, _ = selected_item(value, index, info)
        if img is None:
            return gr.update()
        rgb = img.convert("RGB")
        return rgb if sub_mode == "img2img" else {"background": rgb, "layers": [], "composite": rgb}

    # the editor draws a value only once its tab is on screen: switch first, then set the picture
    button.click(send, [source.gallery, source.gen_info, source.selected], outs, show_progress="hidden",
                 api_visibility="private").then(set_image, [source.gallery, source.gen_info, source.selected],
                                                i2i.editor_for(sub_mode), show_progress="hidden",
                                                api_visibility="private")
