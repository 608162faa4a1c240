"""Settings → Defaults (A1111's page for ui-config.json): "View changes" lists every control whose value
on the page differs from the saved default; "Apply" writes those values into the file, and new pages
start from them."""
from __future__ import annotations

import html
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.admin_gate import admin_refusal
from webui.ui.ui_config import UiDefaults, config_path, register_page

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

PAGE_ID = "settings_page_defaults"
# Width/Height start at the model's native size (webui.ui.txt2img.initial_size); the file gets A1111's 512
MODEL_SIZED = {f"{tab}/{dim}/value": 512 for tab in ("txt2img", "img2img") for dim in ("Width", "Height")}
DEFAULTS = "Defaults"  # its entry in the Settings tab's section list
# shown while "Defaults" is picked and the search box is empty (the other pages hide themselves then)
SHOW_JS = """
(query, section) => {
  const box = document.querySelector('#settings_search input, #settings_search textarea');
  const picked = document.querySelector('#settings_sections input:checked');
  const q = ((box ? box.value : query) || '').trim();
  const s = picked ? picked.value : section;
  const page = document.getElementById('%s');
  if (page) page.style.display = !q && s === '%s' ? 'flex' : 'none';
  return [];
}
""" % (PAGE_ID, DEFAULTS)


@dataclass
class DefaultsPage:
    view: gr.Button
    apply: gr.Button
    review: gr.HTML


def create_defaults_page(svc: "Services") -> DefaultsPage:
    """The page's parts (its actions are connected once the whole page is built)."""
    where = "ui-config.json" if getattr(svc.args, "hide_ui_dir_config", False) else str(config_path(svc))
    with gr.Column(elem_id=PAGE_ID):
        gr.HTML("<p>Change controls on the other tabs to the values you want them to start with, press "
                "<b>View changes</b> to see which saved defaults differ, then <b>Apply</b> to write them to "
                f"<code>{html.escape(where)}</code>. Pages opened afterwards start with them.</p>")
        with gr.Row():
            view = gr.Button("View changes", elem_id="ui_defaults_view", variant="secondary")
            apply = gr.Button("Apply", elem_id="ui_defaults_apply", variant="primary")
        review = gr.HTML("", elem_id="ui_defaults_review")
    return DefaultsPage(view, apply, review)


def follow_section_list(search: gr.Textbox, section_list: gr.Radio) -> None:
    """Show the page when its entry is picked in the section list (in the browser, no request)."""
    for event in (search.input, search.change, section_list.change):
        event(None, [search, section_list], None, js=SHOW_JS)


def changes_table(rows: list[tuple[str, Any, Any]]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(path)}</td><td>{_cell(old)}</td><td>{_cell(new)}</td></tr>" for path, old, new in rows)
    if not rows:
        body = "<tr><td colspan='3'>No changes</td></tr>"
    return ("<table class='ui-defaults'><thead><tr><th>Path</th><th>Saved</th><th>Current</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _cell(v: Any) -> str:
    if v is None:
        return "<span class='ui-defaults-none'>None</span>"
    return html.escape(str(v))


def _unreadable(defaults: UiDefaults, e: Exception) -> str:
    msg = f"{defaults.path.name} cannot be read ({e}); fix or delete it, then reload the page."
    gr.Warning(msg, title="Defaults not read")
    return f"<p><b>Error:</b> {html.escape(msg)}</p>"


def setup_ui_defaults(svc: "Services", demo: gr.Blocks, tabs: gr.Tabs, page: DefaultsPage | None) -> UiDefaults:
    """Load the file, register the built page (its controls take the saved values), add the new keys
    to the file and connect the Defaults page. Called inside the page's Blocks, before it closes."""
    defaults = UiDefaults(config_path(svc), MODEL_SIZED)
    register_page(defaults, tabs)
    if defaults.dump_defaults():
        log.info("UI defaults written to %s", defaults.path)
    if page is None:
        return defaults
    inputs = list(defaults.mapping.values())
    ref = weakref.ref(demo)  # a rebuilt UI replaces this one

    def view(*values: Any) -> str:
        try:
            saved = defaults.read() if defaults.path.exists() else {}
        except (OSError, ValueError) as e:
            return _unreadable(defaults, e)
        return changes_table(list(defaults.changes(saved, values)))

    def apply(request: gr.Request, *values: Any) -> str:
        refused = admin_refusal(svc, request, "change the UI defaults")
        if refused:
            gr.Warning(refused, title="Defaults not saved")
            return f"<p><b>Error:</b> {html.escape(refused)}</p>"
        if defaults.path.exists():
            try:
                defaults.read()
            except (OSError, ValueError) as e:
                return _unreadable(defaults, e)
        blocks = ref()
        try:
            n = defaults.apply(values, getattr(blocks, "config", None))
        except OSError as e:
            gr.Warning(f"{defaults.path.name} not written: {e}", title="Defaults not saved")
            return f"<p><b>Error:</b> {html.escape(str(e))}</p>"
        return "<p>No changes.</p>" if n == 0 else f"<p>Wrote {n} change{'s' if n != 1 else ''}.</p>"

    page.view.click(view, inputs, page.review, show_progress="hidden", api_visibility="private")
    page.apply.click(apply, inputs, page.review, show_progress="hidden", api_visibility="private")
    return defaults
