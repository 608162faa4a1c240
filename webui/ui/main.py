"""The Gradio front end: quicksettings row + tabs in A1111's order (txt2img, img2img, Extras, PNG Info,
Checkpoint Merger, Train, Settings).

`build_ui(svc)` returns the Blocks; the app mounts it with `gr.mount_gradio_app(app, demo, path="/",
**launch_kwargs())`. Every handler is a thin call into the service layer.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.common import checkpoint_status_md, checkpoint_titles, current_checkpoint_title
from webui.ui.extensions_tab import create_extensions_tab
from webui.ui.extras import create_extras_tab
from webui.ui.gallery_buttons import connect_send_buttons
from webui.ui.job_follow import connect_restore
from webui.ui.merger import create_merger_tab
from webui.ui.pnginfo import create_pnginfo_tab
from webui.ui.quicksettings import arrange_tabs, build_row, connect_row
from webui.ui.settings_tab import create_settings_tab
from webui.ui.train_tab import create_train_tab
from webui.ui.txt2img import create_img2img_tab, create_txt2img_tab, initial_size

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

FALLBACK_SIZE = (512, 512)
SYNC_TICKS_WITHOUT_LOAD = 5  # stop polling for the startup model after this many idle ticks

CSS = """
#quicksettings { align-items: flex-end; gap: 8px; flex-wrap: wrap; }
#setting_sd_model_checkpoint { min-width: 360px; max-width: 480px; }
#refresh_sd_model_checkpoint, #quicksettings #refresh_sd_vae { max-width: 44px; min-width: 44px; height: 42px; margin-bottom: 4px; }
#sd_checkpoint_status { font-size: 0.85em; opacity: 0.85; align-self: center; min-width: 240px; }
.prompt-box { position: relative; gap: 0 !important; }
.prompt-box .token-counter { position: absolute !important; right: 12px; bottom: 10px; width: auto !important;
  min-width: 0 !important; z-index: 5; pointer-events: none; font-size: 0.8em; opacity: 0.7; }
.token-counter .token-count { font-variant-numeric: tabular-nums; }
#txt2img_generate, #img2img_generate { min-height: 76px; font-size: 1.15em; }
#txt2img_actions_column, #img2img_actions_column { gap: 6px; }
#txt2img_seed_row, #img2img_seed_row { align-items: flex-end; }
#txt2img_random_seed, #txt2img_reuse_seed, #img2img_random_seed, #img2img_reuse_seed {
  max-width: 44px; height: 42px; margin-bottom: 2px; }
#txt2img_info .infotext, #img2img_info .infotext { font-size: 0.9em; word-break: break-word; padding: 6px 2px; }
.img2img-copy-row { align-items: center; gap: 4px; }
.img2img-copy-label { flex: 0 0 auto !important; min-width: 0 !important; }
#pnginfo_html .pnginfo-item p { margin: 0.2em 0; word-break: break-word; }
.gallery-buttons { gap: 4px; flex-wrap: wrap; }
#settings_page_sysinfo, #settings_page_licenses { display: none; }
#settings_page_defaults { display: none; }
.ui-defaults td, .ui-defaults th { padding: 2px 8px; text-align: left; word-break: break-word; }
#settings_sections .wrap { flex-direction: column; }
#settings_sections label { width: 100%; }
.licenses td, .licenses th { padding: 2px 8px; text-align: left; }
.gallery-buttons button { min-height: 36px; }
.gallery-note p { margin: 0.2em 0; font-size: 0.9em; word-break: break-all; }
/* Input pictures fill their box (Gradio's scale-down left a small picture at native size). */
#img2img_image img, #img_inpaint_base img, #img_inpaint_mask img, #extras_image img, #pnginfo_image img {
  object-fit: contain !important; width: 100%; height: 100%; }
/* Image Browser: the selected picture fills its box too */
#image_browser_image img { object-fit: contain !important; width: 100%; height: 100%; }
/* thumbnails keep a thumbnail's size on a page with few pictures (the gallery shrinks its columns to the count) */
#image_browser_gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)) !important; }
#image_browser_gallery .grid-container > * { max-width: 160px; }
/* Extra-network cards keep a card's size however few files there are (Gradio's gallery shrinks its
   column count to the item count, so a lone card would span the whole row). */
.extra-network-cards .grid-container { grid-template-columns: repeat(auto-fill, minmax(110px, 150px)) !important; }
"""

# A1111 keyboard shortcuts in the prompt boxes: Ctrl+Enter generate, Alt+Enter skip, Esc interrupt.
JS = """
() => {
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const box = t && t.closest && t.closest('#txt2img_prompt, #txt2img_neg_prompt, #img2img_prompt, #img2img_neg_prompt');
    if (!box) return;
    const tab = box.id.startsWith('img2img') ? 'img2img' : 'txt2img';
    let id = null;
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) id = tab + '_generate';
    else if (e.key === 'Enter' && e.altKey) id = tab + '_skip';
    else if (e.key === 'Escape') id = tab + '_interrupt';
    if (!id) return;
    const b = document.getElementById(id);
    if (b) { e.preventDefault(); b.click(); }
  });
}
"""


def launch_kwargs(svc: "Services | None" = None) -> dict[str, Any]:
    """Keyword arguments for `gr.mount_gradio_app` (theme/css/js moved out of Blocks in Gradio 6);
    extensions' JavaScript and CSS go into the page's head and stylesheet."""
    from webui.ui.extension_assets import extension_css
    manager = getattr(svc, "extensions", None) if svc is not None else None
    login: dict[str, Any] = {}
    if svc is not None and svc.accounts.enabled:
        # Gradio's log-in form, checking our accounts (constant time); see webui.serving.page_login
        check = svc.page_login.check if svc.page_login is not None else svc.accounts.check_ui
        login = {"auth": check, "auth_message": "Log in to Stable Diffusion web UI"}
    return {
        **login,
        "theme": gradio_theme(svc),
        "css": CSS + "\n" + extension_css(manager),
        "js": JS,
        "head": page_head(svc),
        "footer_links": ["api"],
        "run_history": False,
        "show_error": True,
        **_serving_kwargs(svc),
    }


def _serving_kwargs(svc: "Services | None") -> dict[str, Any]:
    """What Gradio may serve (outputs only; never config.json) and its upload limit (--max-upload-mb)."""
    if svc is None:
        return {}
    from webui.serving.network import gradio_file_paths, max_upload_bytes
    return {**gradio_file_paths(svc.paths, svc.args), "max_file_size": max_upload_bytes(svc.args)}


def page_head(svc: "Services | None", **overrides: Any) -> str:
    """The page's head: the localization and light/dark mode first (A1111 defines
    `window.localization` before any other script), the page's keyboard and button habits with the
    option values they read, then extensions' scripts."""
    from webui.ui.extension_assets import head_html
    from webui.ui.localization import head_html as localization_head
    from webui.ui.page_habits import PAGE_OPTIONS
    from webui.ui.page_habits import head_html as habits_head
    manager = getattr(svc, "extensions", None) if svc is not None else None
    if svc is None:
        return head_html(manager)
    ours = {k: v for k, v in overrides.items() if k in PAGE_OPTIONS}
    rest = {k: str(v) for k, v in overrides.items() if k not in PAGE_OPTIONS}
    return localization_head(svc, **rest) + "\n" + habits_head(svc, ours) + "\n" + head_html(manager)


def gradio_theme(svc: "Services | None") -> Any:
    """A1111's option `gradio_theme`, limited to the themes Gradio ships (they need no download);
    "Default" is A1111's look (the default theme with an orange primary colour)."""
    name = str(svc.settings.get("gradio_theme") or "Default") if svc is not None else "Default"
    if name != "Default" and hasattr(gr.themes, name):
        return getattr(gr.themes, name)()
    return gr.themes.Default(primary_hue="orange")


def _follow_head_options(svc: "Services", demo: gr.Blocks) -> None:
    """The head is part of the page config: rebuild it when the localization or the mode changes,
    so a page reload shows the new choice without a restart (A1111's "reload UI" step)."""
    ref = weakref.ref(demo)  # a UI rebuilt later replaces this one; the listener then does nothing

    def listener(key: str) -> Any:
        def changed(value: Any) -> None:
            blocks = ref()
            if blocks is None or not isinstance(getattr(blocks, "config", None), dict):
                return
            try:
                blocks.head = blocks.config["head"] = page_head(svc, **{key: value})
            except Exception:  # never let a page detail stop the option from being saved
                log.exception("page head not rebuilt after %s changed", key)
        return changed

    svc.settings.on_change("localization", listener("localization"))
    svc.settings.on_change("theme_mode", listener("theme"))
    from webui.ui.page_habits import PAGE_OPTIONS
    for key in PAGE_OPTIONS:  # the habits' scripts read these from the head
        svc.settings.on_change(key, listener(key))


def _default_size(svc: "Services") -> tuple[int, int] | None:
    cur = svc.models.current
    if cur is None:
        return None
    ds = getattr(cur.sd, "default_size", None)
    if isinstance(ds, int):
        return ds, ds
    if isinstance(ds, (tuple, list)) and len(ds) == 2:
        return int(ds[0]), int(ds[1])
    return None


def _size_update(before: tuple[int, int] | None, after: tuple[int, int] | None, w: Any, h: Any) -> tuple[Any, Any]:
    """Move Width/Height to the new model's native size only if the user left them at the old default."""
    if after is None:
        return gr.update(), gr.update()
    try:
        cur = (int(w), int(h))
    except (TypeError, ValueError):
        return gr.update(), gr.update()
    if cur == after or cur not in ((before or FALLBACK_SIZE), FALLBACK_SIZE):
        return gr.update(), gr.update()
    return after[0], after[1]


def _warm_tokenizer() -> None:
    try:
        from webui.ui.common import _fallback_clip_tokenizer
        _fallback_clip_tokenizer()
    except Exception:  # the counter reports its own error later
        pass


def _ckpt_dropdown(svc: "Services", value: str | None = None) -> Any:
    titles = checkpoint_titles(svc)
    value = value if value is not None else current_checkpoint_title(svc)
    return gr.update(choices=titles, value=value if value in titles else None)


def build_ui(svc: "Services") -> gr.Blocks:
    from webui.ui.component_hooks import component_hooks
    from webui.ui.localization import register_option
    register_option(svc)  # the Settings dropdown lists the localization files found
    with component_hooks(svc):
        demo = _build_ui(svc)
    _follow_head_options(svc, demo)
    _without_idle_heartbeat(demo)
    return demo


def _without_idle_heartbeat(demo: gr.Blocks) -> None:
    """Gradio keeps a heartbeat stream open for the page's whole life as soon as it has a gr.State;
    it only serves unload events and the deletion of a closed tab's state (kept within Gradio's
    session capacity anyway). Leave it out so an idle page makes no requests — unless an extension
    added an unload or stream event, which needs it."""
    original = demo.get_config_file

    def get_config_file() -> Any:
        config = original()
        needs = any(isinstance(t, (list, tuple)) and len(t) == 2 and t[1] in ("unload", "stream")
                    for dep in config.get("dependencies", []) for t in dep.get("targets", []))
        if not needs:
            config["connect_heartbeat"] = False
        return config

    demo.get_config_file = get_config_file  # type: ignore[method-assign]


def _extension_tabs() -> list[tuple[Any, str, str]]:
    """Tabs extensions add (A1111's on_ui_tabs: each callback returns [(blocks, title, elem_id), ...])."""
    from webui.extensions.startup import fire
    fire("before_ui")
    tabs: list[tuple[Any, str, str]] = []
    for result in fire("ui_tabs"):
        for item in result or []:
            try:
                blocks, title, elem_id = item[0], str(item[1]), str(item[2])
            except (TypeError, IndexError):
                continue
            tabs.append((blocks, title, elem_id))
    return tabs


def _exposure_banner(svc: "Services") -> None:
    """A warning across the top of the page while the server is reachable from the network
    without accounts (the start-up log says the same)."""
    import html

    from webui.serving.network import banner_text
    text = banner_text(svc.args, svc.accounts.enabled)
    if text:
        gr.HTML(f'<div style="padding:8px 12px;border:2px solid #d97706;border-radius:6px;background:#7c2d12;'
                f'color:#fff;font-weight:600">{html.escape(text)}</div>', elem_id="exposure_warning")


def _build_ui(svc: "Services") -> gr.Blocks:
    if svc.models.current is None:  # the first keystroke should not wait for the tokenizer to load
        threading.Thread(target=_warm_tokenizer, name="warm-tokenizer", daemon=True).start()
    ext_tabs = _extension_tabs()  # built outside the page's Blocks, rendered into a tab below
    with gr.Blocks(title="Stable Diffusion", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        _exposure_banner(svc)
        quick = build_row(svc)  # the options of `quicksettings_list`, the checkpoint's trio among them
        ckpt, refresh, ckpt_status = quick.checkpoint, quick.refresh, quick.status

        with gr.Tabs(elem_id="tabs", selected="txt2img") as tabs:
            start = initial_size(svc)  # the page's first Width/Height (the sync below moves them on from it)
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                t2i = create_txt2img_tab(svc, start)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                i2i = create_img2img_tab(svc, start)
            with gr.Tab("Extras", id="extras", elem_id="tab_extras"):
                extras = create_extras_tab(svc)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                pnginfo_image = create_pnginfo_tab(svc, t2i, tabs, i2i, extras.image)
            with gr.Tab("Checkpoint Merger", id="modelmerger", elem_id="tab_modelmerger"):
                merger = create_merger_tab(svc)
            with gr.Tab("Train", id="train", elem_id="tab_train"):
                create_train_tab(svc, t2i)
            with gr.Tab("Image Browser", id="image_browser", elem_id="tab_image_browser") as browser_tab:
                from webui.ui.output_browser import create_output_browser_tab  # the outputs/ folders
                create_output_browser_tab(svc, browser_tab, tabs, t2i, i2i, extras.image, pnginfo_image)
            for blocks, title, elem_id in ext_tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                settings = create_settings_tab(svc, quick.keys)
            with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                create_extensions_tab(svc)

        arrange_tabs(svc, tabs, settings)  # ui_tab_order, hidden_tabs
        connect_row(svc, demo, quick, settings)
        from webui.ui.page_habits import connect_generation_hooks
        connect_generation_hooks({"txt2img": t2i, "img2img": i2i})  # title progress, sound, generate forever
        for source in (t2i, i2i, extras):  # 🖼️ 🎨️ 📐 under each gallery reach the other tabs
            connect_send_buttons(svc, source, i2i, extras.image, tabs)
        for tab in (t2i, i2i):  # a reloaded page reattaches to its running job or shows its last result
            connect_restore(svc, demo, tab)

        sync_timer = gr.Timer(1.0, active=True)
        idle_ticks = gr.State(0)

        # ------------------------------------------------------------ checkpoint events
        def select_checkpoint(name: str | None, w: Any, h: Any, w2: Any, h2: Any) -> tuple[Any, ...]:
            if not name:
                return (gr.update(),) * 6
            before = _default_size(svc)
            try:
                title = svc.select_checkpoint(name)
            except Exception as e:  # ModelLoadError and anything a broken file throws
                msg = str(e) or type(e).__name__
                gr.Warning(f"Could not load {name}: {msg}", title="Checkpoint not loaded")
                cur = current_checkpoint_title(svc)
                keep = f" Still using `{cur}`." if cur else ""
                status = checkpoint_status_md(svc, f"❌ **Could not load `{name}`** ({msg}).{keep}")
                return (_ckpt_dropdown(svc), status) + (gr.update(),) * 4
            after = _default_size(svc)
            new_sizes = _size_update(before, after, w, h) + _size_update(before, after, w2, h2)
            return (_ckpt_dropdown(svc, title), checkpoint_status_md(svc, f"✅ Loaded `{title}`")) + new_sizes

        sizes = [t2i.width, t2i.height, i2i.width, i2i.height]
        ckpt.select(select_checkpoint, [ckpt] + sizes, [ckpt, ckpt_status] + sizes,
                   show_progress="minimal", show_progress_on=[ckpt_status], api_visibility="private")

        def refresh_list() -> tuple[Any, str]:
            svc.models.refresh_files()
            return _ckpt_dropdown(svc), checkpoint_status_md(svc)

        refresh.click(refresh_list, None, [ckpt, ckpt_status], show_progress="hidden", api_visibility="private")

        # ------------------------------------------------------------ startup model / page load
        def sync(w: Any, h: Any, w2: Any, h2: Any, ticks: int) -> tuple[Any, ...]:
            """Follow the startup model load, then stop the timer."""
            loaded = svc.models.current is not None
            busy = bool(getattr(svc.models, "loading", None)) or svc.queue.current is not None \
                or svc.queue.queued() > 0
            ticks = 0 if busy else (ticks or 0) + 1
            done = loaded or ticks >= SYNC_TICKS_WITHOUT_LOAD
            keep = (gr.update(), gr.update())
            sw = _size_update((start, start), _default_size(svc), w, h) if loaded else keep
            sw2 = _size_update((start, start), _default_size(svc), w2, h2) if loaded else keep
            return (_ckpt_dropdown(svc), checkpoint_status_md(svc), *sw, *sw2, ticks, gr.Timer(active=not done))

        sync_timer.tick(sync, sizes + [idle_ticks], [ckpt, ckpt_status] + sizes + [idle_ticks, sync_timer],
                        show_progress="hidden", api_visibility="private")

        settings_outputs = list(settings.components.values())

        def on_load() -> dict:
            return {ckpt: _ckpt_dropdown(svc), ckpt_status: checkpoint_status_md(svc)} | settings.values_for(svc)

        demo.load(on_load, None, [ckpt, ckpt_status] + settings_outputs, show_progress="hidden",
                  api_visibility="private")

        # a generation may load the default model or compute its hash: keep the dropdown in step
        for tab in (t2i, i2i):
            if tab.generate_event is not None:
                tab.generate_event.then(lambda: (_ckpt_dropdown(svc), checkpoint_status_md(svc)), None,
                                        [ckpt, ckpt_status], show_progress="hidden", api_visibility="private")
        settings.apply_event.then(lambda: (_ckpt_dropdown(svc), checkpoint_status_md(svc)), None, [ckpt, ckpt_status],
                             show_progress="hidden", api_visibility="private")
        merger["merge_event"].then(lambda: _ckpt_dropdown(svc), None, [ckpt], show_progress="hidden",
                                   api_visibility="private")  # the new file is in the top list at once

        # saved UI defaults (ui-config.json): the built page takes the file's values; Settings → Defaults
        from webui.ui.defaults_page import setup_ui_defaults
        setup_ui_defaults(svc, demo, tabs, settings.defaults)
    return demo
